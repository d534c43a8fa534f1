"""What the pipeline does with a damaged cache and with jobs sharing one (issue 15): every
artefact verified on read, a damaged one moved aside and recomputed to the same bytes; the
debris of killed jobs cleared at start; two runs started together on one empty cache split
synthesis and concept activations instead of doing them twice."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cosy_bench.cache.claims import lock_path
from cosy_bench.pipeline import run

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent


def toy(cache: Path, *extra: str) -> list[str]:
    return ["explainer=ground_truth", "neurons.ids=[0,3,9,17]", "n_images=6", "logger=none",
            "dataset.n=150", f"paths.cache_dir={cache}", *extra]


def _one(cache: Path, pattern: str) -> Path:
    found = sorted(cache.glob(pattern))
    assert found, pattern
    return found[0]


def test_damaged_cache_files_are_moved_aside_and_recomputed(compose, tmp_path, caplog):
    cache = tmp_path / "cache"
    cfg = compose(toy(cache))
    run(cfg, tmp_path / "r1")
    reference = (tmp_path / "r1" / "results.csv").read_bytes()

    control = _one(cache, "activations/*.safetensors")
    data = bytearray(control.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    data[header:] = bytes(len(data) - header)  # zeroed activations
    control.write_bytes(bytes(data))
    expl = _one(cache, "explanations/*.csv")
    expl.write_bytes(expl.read_bytes()[:-7])  # truncated mid-row
    concept = _one(cache, "concept_activations/*.safetensors")
    concept.write_bytes(concept.read_bytes()[:40])  # truncated: SafetensorError before
    image = _one(cache, "images/*/*/00002.png")
    image.write_bytes(image.read_bytes()[:-100])
    # debris of a killed job: a temporary file and an empty claim
    host = __import__("cosy_bench.cache.claims", fromlist=["writer_tag"]).writer_tag()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    tmp = cache / "activations" / f".x.safetensors.{dead.pid}@{host.split('@')[1]}.ab12.tmp"
    tmp.write_bytes(b"half")
    empty_claim = lock_path(cache / "activations" / "other.safetensors")
    empty_claim.write_text("")
    os.utime(empty_claim, (0, 0))

    with caplog.at_level(logging.WARNING, logger="cosy_bench"):
        second = run(cfg, tmp_path / "r2")
    assert (tmp_path / "r2" / "results.csv").read_bytes() == reference
    for path in (control, expl, concept, image):
        assert str(path) in caplog.text  # each named in a warning
        assert list(path.parent.glob(path.name + ".corrupt-*"))  # kept aside, not used
    stats = second.summary["run"]
    assert stats["control_activations_computed"] is True and stats["images_generated"] == 1
    assert stats["concept_activation_sets_computed"] >= 1
    assert stats["near_constant_neurons"] == []
    assert not tmp.exists() and not empty_claim.exists()


def _app(cache: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled",
           "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "cosy_bench", "explainer=ground_truth",
                             "n_images=24", "dataset.n=100", "logger=none",
                             f"paths.cache_dir={cache}", f"hydra.run.dir={out}", *extra],
                            cwd=out.parent, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_two_runs_started_together_split_synthesis_and_concept_activations(tmp_path):
    cache = tmp_path / "cache"
    procs = [_app(cache, tmp_path / f"run{i}") for i in range(2)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(x[-2000:] for x in logs)
    runs = [json.loads((tmp_path / f"run{i}" / "summary.json").read_text())["run"]
            for i in range(2)]
    assert sum(r["images_generated"] for r in runs) == 25 * 24  # every image made once
    assert sum(r["concept_activation_sets_computed"] for r in runs) == 25
    assert sum(r["control_activations_computed"] for r in runs) == 1
    assert ((tmp_path / "run0" / "results.csv").read_bytes()
            == (tmp_path / "run1" / "results.csv").read_bytes())


def test_explanations_are_keyed_on_the_contents_of_their_probe_folder(tmp_path):
    import numpy as np
    from PIL import Image

    from cosy_bench.cache.store import Cache
    from cosy_bench.context import RunContext
    from cosy_bench.pipeline import folder_contents

    def write(seed):
        rng = np.random.default_rng(seed)
        for cls in ("cat", "dog"):
            (tmp_path / "probe" / cls).mkdir(parents=True, exist_ok=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
                    tmp_path / "probe" / cls / f"{i}.png")

    write(0)
    ctx = RunContext(None, Cache(tmp_path / "cache"), None, None, None, 0)
    settings = {"name": "invert", "probe": {"_target_": "cosy_bench.data.probe.LabelledImageFolder",
                                            "root": str(tmp_path / "probe"), "name": "p"}}
    first = folder_contents(ctx, settings)
    assert len(first) == 1 and folder_contents(ctx, settings) == first
    write(1)  # same names, other images
    assert folder_contents(ctx, settings) != first
    missing = {"probe": {**settings["probe"], "root": str(tmp_path / "none")}}
    assert folder_contents(ctx, missing) == []  # the explainer reports it if it must run


def test_explanations_are_keyed_on_the_contents_of_the_local_files_they_name(tmp_path):
    import os
    import time

    from cosy_bench.cache.store import Cache
    from cosy_bench.context import RunContext
    from cosy_bench.pipeline import folder_contents

    words = tmp_path / "words.txt"
    words.write_text("red\ncircle\n", encoding="utf-8")
    ctx = RunContext(None, Cache(tmp_path / "cache"), None, None, None, 0)
    settings = {"name": "clip_dissect", "similarity": "soft_wpmi", "clip": {"pretrained": None},
                "concepts": {"_target_": "cosy_bench.explainers.concept_sets.text_file",
                             "path": str(words)}}
    first = folder_contents(ctx, settings)
    assert len(first) == 1 and folder_contents(ctx, settings) == first
    st = words.stat()
    time.sleep(0.02)  # past the file system's coarse clock tick: the ctime moves
    words.write_text("sky\ncircle\n", encoding="utf-8")  # same size, mtime put back
    os.utime(words, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert folder_contents(ctx, settings) != first
    assert folder_contents(ctx, {**settings, "concepts": {"path": str(tmp_path / "no.txt")}}) == []


def test_a_control_set_of_one_image_copied_reports_near_constant_neurons(compose, tmp_path,
                                                                        caplog):
    import shutil

    from PIL import Image

    from cosy_bench.toyworld.data import ToyControlSet

    folder = tmp_path / "same"
    folder.mkdir()
    Image.fromarray(ToyControlSet(n=1, seed=3).images[0]).save(folder / "img000.png")
    for i in range(1, 24):
        shutil.copy(folder / "img000.png", folder / f"img{i:03d}.png")
    cfg = compose(["explainer=ground_truth", "neurons.ids=[0,3,9,17]", "n_images=6",
                   "logger=none", f"paths.cache_dir={tmp_path / 'cache'}", "dataset=image_folder",
                   f"dataset.root={folder}", "batch_size=5"])  # batches of 5, 5, ..., 3: rounding may differ by batch
    with caplog.at_level(logging.WARNING, logger="cosy_bench"):
        report = run(cfg, tmp_path / "r1")
    summary = json.loads((tmp_path / "r1" / "summary.json").read_text())
    assert summary["run"]["near_constant_neurons"] == [0, 3, 9, 17]
    assert "(near-)constant control activations" in caplog.text
    assert [float(row["mad"]) for row in report.rows] == [0.0] * 4  # not 1e7: the sorted path
