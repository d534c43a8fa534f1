"""The fault-injection command (cosy_bench/bench/faults.py) on a small toy run: a kill at a
random time and a kill inside a write (with the default logger), reruns identical to the
undisturbed run (results, explanations, summary.json apart from time and work fields), a
clean cache after, and a computed verdict."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from stamped import assert_stamped

from cosy_bench.bench.__main__ import main as bench_main
from cosy_bench.bench.faults import audit, comparable_summary, verdict
from cosy_bench.cache.images import save_png
from cosy_bench.cache.store import stable_hash


@pytest.mark.slow
def test_a_time_kill_and_a_kill_inside_a_write_on_a_small_toy_run(tmp_path, capsys):
    argv = ["faults", "--trials", "2", "--seed", "1", "--out", str(tmp_path),
            "--markdown", str(tmp_path / "faults.md"), "explainer=ground_truth",
            "neurons.ids=[0,1,2]", "n_images=4", "dataset.n=100"]
    rc = bench_main(argv)
    report = json.loads((tmp_path / "faults.json").read_text())
    assert rc == 0 and report["ok"] == report["trials"] == 2, report["details"]
    time_kill, write_kill = report["details"]
    assert time_kill["kind"] == "time" and time_kill["logger"] == "none"
    assert write_kill["kind"] == "write" and write_kill["logger"] == "default"
    assert write_kill["killed"] and write_kill["left_by_kill"]["temporary"] >= 1
    assert (tmp_path / "t01" / "wandb").is_dir()  # the default logger ran (W&B offline)
    for trial in report["details"]:
        assert trial["identical"] == {"results.csv": True, "explanations.csv": True,
                                      "summary.json": True}
        assert not any(trial["after_rerun"][k] for k in ("temporary", "claims",
                                                         "moved_aside", "unverified"))
    out = capsys.readouterr().out
    assert_stamped(tmp_path / "faults.md", argv, out, "reference run:")
    assert report["verdict"] in out and "1 inside a write" in report["verdict"]
    assert "all cleared by the reruns" in report["verdict"]


def _trial(ok=True, kept=0):
    return {"trial": 0, "ok": ok, "killed": True, "kind": "write", "point": "opened",
            "left_by_kill": {"temporary": 1, "claims": 2},
            "after_rerun": {"temporary": kept, "claims": 0, "moved_aside": 0, "unverified": 0},
            "identical": {"results.csv": True, "summary.json": ok}}


def test_the_verdict_is_computed_from_the_trials():
    assert "all cleared by the reruns" in verdict([_trial()])
    assert "1 inside a write: 1 opened, 0 written" in verdict([_trial()])
    bad = verdict([_trial(), {**_trial(ok=False, kept=1), "trial": 1}])
    assert "1/2 trials ok" in bad and "debris left after the reruns of trials [1]" in bad
    assert "summary.json differed" in bad and "all cleared" not in bad


def test_audit_finds_debris_and_damage(tmp_path):
    (tmp_path / "activations").mkdir()
    (tmp_path / "activations" / ".a.safetensors.1@abcdef01.x.tmp").write_bytes(b"")
    (tmp_path / "activations" / "a.safetensors.lock").write_text("{}")
    (tmp_path / "activations" / "b.safetensors").write_bytes(b"not safetensors")
    (tmp_path / "activations" / "c.safetensors.corrupt-1-2").write_bytes(b"")
    found = audit(tmp_path)
    assert found == {"temporary": 1, "claims": 1, "moved_aside": 1, "unverified": 1,
                     "artefacts": 1}


def test_the_png_audit_verifies_the_digest_and_the_place(tmp_path):
    prompt = "a photo of red"
    folder = tmp_path / "images" / "gen" / stable_hash(prompt)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        image = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        save_png(image, folder / f"{i:05d}.png", f"{prompt}\x1f{i}\x1f{100 + i}")
    assert audit(tmp_path)["unverified"] == 0
    data = bytearray((folder / "00001.png").read_bytes())
    data[-20] ^= 1  # the keyword is still there, the digest no longer matches
    (folder / "00001.png").write_bytes(bytes(data))
    shutil.copy(folder / "00000.png", folder / "00002.png")  # valid, but image 0's
    assert audit(tmp_path) == {"temporary": 0, "claims": 0, "moved_aside": 0,
                               "unverified": 2, "artefacts": 3}


def test_summary_comparison_drops_time_and_work_fields_only(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    base = {"auc": {"mean": 0.9}, "run": {"date": "x", "images_generated": 12, "seed": 0}}
    a.write_text(json.dumps(base))
    b.write_text(json.dumps({**base, "run": {"date": "y", "images_generated": 3, "seed": 0}}))
    assert comparable_summary(a) == comparable_summary(b)
    b.write_text(json.dumps({**base, "run": {"date": "y", "seed": 1}}))
    assert comparable_summary(a) != comparable_summary(b)
