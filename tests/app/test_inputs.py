"""A run checks its inputs before it starts and names every missing one with its fix
(issue #13, item 3): offline, the headline command fails at once, job by job."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, no_network

from cosy_bench.app import inputs
from cosy_bench.app.inputs import MissingInputsError, check_inputs, missing_inputs

DATA_ENV = ("IMAGENET_VAL_DIR", "IMAGENET_TRAIN_DIR", "PLACES365_VAL_DIR", "HF_HUB_CACHE")


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """Empty caches, no data folders, no network."""
    for name in DATA_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("COSY_CACHE_DIR", str(tmp_path / "cache"))
    inputs.reachable.cache_clear()
    with no_network():
        yield tmp_path
    inputs.reachable.cache_clear()


def _whats(missing) -> list[str]:
    return [m.what.split(":")[0] for m in missing]


@pytest.mark.parametrize("explainer", ["invert", "clip_dissect", "milan"])
def test_headline_jobs_offline_name_every_missing_input(compose, offline, explainer):
    cfg = compose(["model=resnet18", f"explainer={explainer}"])
    whats = _whats(missing_inputs(cfg))
    expected = ["model weights resnet18 IMAGENET1K_V1", "dataset imagenet_val",
                "generator stabilityai/stable-diffusion-xl-base-1.0", "probe imagenet_train"]
    expected += {"invert": [], "clip_dissect": ["CLIP ViT-B-16/openai", "concept set 20k.txt"],
                 "milan": ["MILAN checkpoint base"]}[explainer]
    assert sorted(whats) == sorted(expected)
    with pytest.raises(MissingInputsError) as err:
        check_inputs(cfg)
    msg = str(err.value)
    assert f"{len(expected)} input(s) of this run are missing" in msg
    assert "export IMAGENET_VAL_DIR=" in msg and "model.weights=null" in msg
    assert "generator=tiny" in msg and "debug=smoke" in msg


def test_inputs_at_hand_are_not_reported(compose, offline, monkeypatch):
    import torch

    val, train = offline / "val", offline / "train"
    val.mkdir()
    train.mkdir()
    from PIL import Image

    for i in range(2):  # an empty control folder is a problem of its own (#23.2)
        Image.new("RGB", (8, 8)).save(val / f"{i}.JPEG")
    monkeypatch.setenv("IMAGENET_VAL_DIR", str(val))
    monkeypatch.setenv("IMAGENET_TRAIN_DIR", str(train))
    cfg = compose(["model=resnet18", "explainer=invert"])
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "resnet18-f37072fd.pth").write_bytes(b"")
    (offline / "hf" / "hub" / "models--stabilityai--stable-diffusion-xl-base-1.0").mkdir(
        parents=True)
    assert missing_inputs(cfg) == []
    check_inputs(cfg)


@pytest.mark.parametrize("overrides", [[], ["model=resnet18", "debug=smoke"],
                                       ["model=vit_b16", "world=toyworld", "model.weights=null"],
                                       ["model=resnet18", "check_inputs=false"]])
def test_offline_configurations_pass(compose, offline, overrides):
    check_inputs(compose(overrides))


def test_mandatory_values_are_named(compose, offline):
    cfg = compose(["model=resnet18", "debug=smoke", "explainer=precomputed"])
    (missing,) = missing_inputs(cfg)
    assert missing.what.startswith("explainer.path is not set")
    assert "explainer.path=" in missing.fix
    cfg = compose(["model=resnet18", "debug=smoke", "explainer=precomputed",
                   f"explainer.path={offline / 'no.csv'}"])
    assert _whats(missing_inputs(cfg)) == [f"explanations {offline / 'no.csv'}"]


@pytest.mark.slow
def test_headline_command_offline_fails_each_job_with_its_missing_inputs(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in DATA_ENV}
    env.update(PYTHONPATH=str(REPO), WANDB_MODE="disabled", HOME=str(tmp_path),
               TORCH_HOME=str(tmp_path / "torch"), HF_HOME=str(tmp_path / "hf"),
               HF_HUB_OFFLINE="1", COSY_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-m", "cosy_bench", "-m",
                           "explainer=invert,clip_dissect,milan", "model=resnet18,vit_b16"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    report = proc.stderr[proc.stderr.index("6 of 6 jobs failed"):]
    for job in range(6):
        assert f"  job {job} (" in report
    assert report.count("IMAGENET_VAL_DIR is not set") == 6
    assert report.count("model weights resnet18") == 3
    assert report.count("model weights vit_b_16") == 3
    assert report.count("MILAN checkpoint base") == 2
    assert len(list(tmp_path.glob("multirun/*/*/*/error.txt"))) == 6
