"""The fault-injection command (cosy_bench/bench/faults.py) on a small toy run: killed runs'
reruns give the undisturbed bytes and leave a clean cache. The full figures (20 trials on
the toy default run) are in docs/reliability.md."""

from __future__ import annotations

import json

import pytest
from stamped import assert_stamped

from cosy_bench.bench.__main__ import main as bench_main
from cosy_bench.bench.faults import audit

pytestmark = pytest.mark.slow


def test_two_kill_trials_on_a_small_toy_run(tmp_path, capsys):
    argv = ["faults", "--trials", "2", "--seed", "1", "--out", str(tmp_path),
            "--markdown", str(tmp_path / "faults.md"), "explainer=ground_truth",
            "neurons.ids=[0,1,2]", "n_images=4", "dataset.n=100"]
    rc = bench_main(argv)
    assert_stamped(tmp_path / "faults.md", argv, capsys.readouterr().out, "reference run:")
    report = json.loads((tmp_path / "faults.json").read_text())
    assert rc == 0 and report["ok"] == report["trials"] == 2
    for trial in report["details"]:
        assert trial["identical"] and trial["after_rerun"]["temporary"] == 0
        assert trial["after_rerun"]["claims"] == trial["after_rerun"]["unverified"] == 0


def test_audit_finds_debris_and_damage(tmp_path):
    (tmp_path / "activations").mkdir()
    (tmp_path / "activations" / ".a.safetensors.1@abcdef01.x.tmp").write_bytes(b"")
    (tmp_path / "activations" / "a.safetensors.lock").write_text("{}")
    (tmp_path / "activations" / "b.safetensors").write_bytes(b"not safetensors")
    (tmp_path / "activations" / "c.safetensors.corrupt-1-2").write_bytes(b"")
    found = audit(tmp_path)
    assert found == {"temporary": 1, "claims": 1, "moved_aside": 1, "unverified": 1,
                     "artefacts": 1}
