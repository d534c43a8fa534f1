"""The headline sweep on stand-ins in the real formats (issue #19, the structural fix):
``python -m cosy_bench -m explainer=invert,clip_dissect,milan model=resnet18,vit_b16`` with
the documented local-input overrides (torchvision weights in ``TORCH_HOME``, ImageNet
folders, a saved diffusers pipeline, an open_clip file, a concept list, MILAN's published
pickle), then ``python -m cosy_bench.report`` on it. Tiny sizes; the stand-ins are built by
:mod:`cosy_bench.bench.standins` (also what ``launch/gpu_check.sh`` runs at real sizes)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

from cosy_bench.bench import standins
from cosy_bench.cache.store import stable_hash
from cosy_bench.prompts import make_prompt

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    out = tmp_path_factory.mktemp("standins")
    paths = standins.build(out, image_size=48, sample_size=16)
    sys.path.insert(0, str(REPO / "tests" / "explainers"))
    from test_milan import small_captioner, write_published

    paths["milan"] = out / "milan-published.pth"
    write_published(paths["milan"], small_captioner(words=("fish", "dog", "water", "red")))
    return paths


def _env(inputs, tmp_path) -> dict:
    """A user's environment offline: the stand-in weights in ``TORCH_HOME``, this test's
    cache and home, W&B off, this checkout on the path."""
    return {**os.environ, "TORCH_HOME": str(inputs["torch_home"]), "HF_HUB_OFFLINE": "1",
            "COSY_CACHE_DIR": str(tmp_path / "cache"), "WANDB_MODE": "disabled",
            "HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)}


def _run(args, env, cwd, timeout=900):
    proc = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def test_the_headline_sweep_runs_on_real_format_stand_ins(inputs, tmp_path):
    env = _env(inputs, tmp_path)
    sweep = tmp_path / "sweep"
    args = ["cosy_bench", "-m", "explainer=invert,clip_dissect,milan", "model=resnet18,vit_b16",
            *standins.overrides(inputs), f"model.milan_checkpoint={inputs['milan']}",
            "layer=output", "neurons.ids=[0,1]", "n_images=2", "generator.num_inference_steps=1",
            "generator_batch_size=2", "batch_size=4",
            f"hydra.sweep.dir={sweep}", "logger=none"]
    _run(args, env, tmp_path)
    jobs = sorted(p for p in sweep.iterdir() if (p / "summary.json").exists())
    assert len(jobs) == 6, sorted(p.name for p in sweep.iterdir())
    assert all(len(p.name.encode()) < 255 and str(tmp_path) not in p.name for p in jobs)
    from cosy_bench.models.classes import torchvision_categories

    classes = set(torchvision_categories("ResNet18_Weights.IMAGENET1K_V1"))
    for job in jobs:
        summary = json.loads((job / "summary.json").read_text())
        run = summary["run"]
        assert run["generator"].startswith("sdxl-tiny@"), run["generator"]
        rows = list(csv.DictReader((job / "results.csv").open()))
        assert [int(r["neuron"]) for r in rows] == [0, 1]
        for r in rows:
            assert 0.0 <= float(r["auc"]) <= 1.0
            assert 0.0 <= float(r["auc_ci_low"]) <= float(r["auc_ci_high"]) <= 1.0
            if run["explainer"] == "invert":  # the probe's wnid folders, by class name
                assert r["explanation"] in {"tench", "goldfish", "Chihuahua"}
            elif run["explainer"] == "clip_dissect":
                assert r["explanation"] in standins.CONCEPTS
            assert r["explanation"] not in classes - {"tench", "goldfish", "Chihuahua"}
        auc = summary["auc"]
        assert auc["ci_low"] is None or 0.0 <= auc["ci_low"] <= auc["ci_high"] <= 1.0
    _run(["cosy_bench.report", str(sweep)], env, tmp_path)
    board = list(csv.DictReader((sweep / "report" / "leaderboard.csv").open()))
    assert len(board) == 6 and {r["method"] for r in board} == {"invert", "clip_dissect", "milan"}
    assert all(r["generator"].startswith("sdxl-tiny@") and r["status"] == "complete"
               and int(r["n"]) == 2 for r in board), board
    assert "<h2>Neurons" in (sweep / "report" / "index.html").read_text()


def test_netdissect_and_compexp_label_units_with_broden_names(inputs, tmp_path):
    """The documented Broden override (``probe=broden probe.root=DIR``) in a sweep over both
    models: NetDissect and CompExp label the units with the Broden folder's names (CompExp:
    formulas of them), scored on the real-format control folder and pipeline, and the
    prompts read Broden's names as words."""
    env = _env(inputs, tmp_path)
    sweep = tmp_path / "sweep"
    local = [o for o in standins.overrides(inputs) if not o.startswith("probe.root=")]
    _run(["cosy_bench", "-m", "explainer=netdissect,compexp", "model=resnet18,vit_b16", *local,
          "probe=broden", f"probe.root={inputs['broden']}", "layer=output",
          "neurons.ids=[0,1]", "n_images=2", "generator.num_inference_steps=1",
          "generator_batch_size=2", "batch_size=4", f"hydra.sweep.dir={sweep}", "logger=none"],
         env, tmp_path)
    jobs = sorted(p for p in sweep.iterdir() if (p / "summary.json").exists())
    assert len(jobs) == 4, sorted(p.name for p in sweep.iterdir())
    names = {name for name, _ in standins.BRODEN_LABELS}
    for job in jobs:
        run = json.loads((job / "summary.json").read_text())["run"]
        rows = list(csv.DictReader((job / "results.csv").open()))
        assert [int(r["neuron"]) for r in rows] == [0, 1]
        for r in rows:
            assert 0.0 <= float(r["auc"]) <= 1.0
            words = set(r["explanation"].replace("(", " ").replace(")", " ").split())
            terms = words - {"AND", "OR", "NOT"}
            assert terms and terms <= names, (run["explainer"], r["explanation"])
            if run["explainer"] == "netdissect":
                assert r["explanation"] in names
        # the images of "red-c" are those of the prompt "... close up of red"
        for image in csv.DictReader((job / "synthetic_images.csv").open()):
            folder = Path(image["path"]).parent.name
            assert folder == stable_hash(make_prompt("p5", image["concept"]))
            if "-" in image["concept"]:
                assert folder != stable_hash(f"realistic photo of a close up of {image['concept']}")


@pytest.mark.parametrize("variant", [
    pytest.param(["generator=stable_cascade_random", "generator.scale=16",
                  "generator.height=128", "generator.width=128",
                  "generator.num_inference_steps=1",
                  "generator.extra_kwargs.prior_num_inference_steps=1",
                  "dataset.decode=reduced"], id="stable_cascade_random-decode_reduced"),
    pytest.param(["dataset.decode=gpu", "trainer=ddp_cpu"], id="decode_gpu-ddp_cpu"),
])
def test_the_real_path_with_other_generators_decoders_and_ddp(inputs, tmp_path, variant):
    """``generator=stable_cascade_random``, ``dataset.decode=reduced|gpu`` and
    ``trainer=ddp_cpu`` on the real-format folders and weights (INVERT on resnet18)."""
    env = _env(inputs, tmp_path)
    run_dir = tmp_path / "run"
    local = [o for o in standins.overrides(inputs)  # a generator option of its own: no model_id
             if not (o.startswith("generator.model_id") and variant[0].startswith("generator="))]
    args = ["cosy_bench", "model=resnet18", "explainer=invert", *local,
            "layer=output", "neurons.ids=[0,1]", "n_images=2", "generator.num_inference_steps=1",
            "generator_batch_size=2", "batch_size=4", *variant, f"hydra.run.dir={run_dir}",
            "logger=none"]
    _run(args, env, tmp_path)
    rows = list(csv.DictReader((run_dir / "results.csv").open()))
    assert [int(r["neuron"]) for r in rows] == [0, 1]
    assert all(r["explanation"] in {"tench", "goldfish", "Chihuahua"} for r in rows)
    assert all(0.0 <= float(r["auc"]) <= 1.0 for r in rows)


def test_the_default_hub_ids_resolve_from_a_filled_hugging_face_cache(inputs, tmp_path):
    """A user who ran once with a network, now offline: ``generator=sdxl`` and
    ``clip=vit_b16_openai`` with no local-path override load from ``HF_HOME``'s hub cache
    (``HF_HUB_OFFLINE=1``), and give what the same files give through the local-path
    overrides (explanations and scores equal)."""
    hf_home = standins.hub_cache(inputs, tmp_path / "hf")
    base = _env(inputs, tmp_path)
    base.pop("HF_HUB_CACHE", None)
    common = ["cosy_bench", "model=resnet18", "explainer=clip_dissect", "layer=output",
              "neurons.ids=[0,1]", "n_images=2", "generator.num_inference_steps=1",
              "generator_batch_size=2", "batch_size=4", "logger=none"]
    local = standins.overrides(inputs)
    hub = [o for o in local if not o.startswith(("generator.model_id=", "clip.pretrained="))]
    assert len(hub) == len(local) - 2
    _run([*common, *hub, f"hydra.run.dir={tmp_path / 'hub'}"],
         {**base, "HF_HOME": str(hf_home), "COSY_CACHE_DIR": str(tmp_path / "c1")}, tmp_path)
    _run([*common, *local, f"hydra.run.dir={tmp_path / 'local'}"],
         {**base, "HF_HOME": str(tmp_path / "empty-hf"), "COSY_CACHE_DIR": str(tmp_path / "c2")},
         tmp_path)
    summary = json.loads((tmp_path / "hub" / "summary.json").read_text())
    commit = hashlib.sha1(standins.SDXL_REPO.encode()).hexdigest()  # hub_cache's stand-in commit
    assert summary["run"]["generator"] == f"{standins.SDXL_REPO}@{commit[:12]}"

    def rows(name):
        return [{k: r[k] for k in ("neuron", "explanation", "auc", "mad")}
                for r in csv.DictReader((tmp_path / name / "results.csv").open())]

    assert rows("hub") == rows("local") and len(rows("hub")) == 2
