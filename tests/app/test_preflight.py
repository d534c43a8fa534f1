"""Inputs found bad before any model is built (issue #23 item 2, #19.8, #22.5): a layer the
model does not have, ``neurons.ids`` outside the layer, an empty or one-image control
folder (any dataset, not only the toy one); one message per problem, printed once, no
traceback; a YAML syntax error names its file, line, column and the line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from helpers import REPO
from omegaconf import OmegaConf
from PIL import Image

from cosy_bench.app import shapes
from cosy_bench.app.inputs import MissingInputsError, check_inputs
from cosy_bench.app.yaml_errors import YamlSyntaxError, describe, explained
from cosy_bench.models import factory


@pytest.fixture
def built(monkeypatch):
    """The devices of every parameter of every model the checks build."""
    devices: list[set[str]] = []
    real = factory.create_model

    def spy(cfg, seed=0):
        bundle = real(cfg, seed=seed)
        devices.append({p.device.type for p in bundle.module.parameters()})
        return bundle

    monkeypatch.setattr(factory, "create_model", spy)
    return devices


def _problems(cfg) -> str:
    with pytest.raises(MissingInputsError) as err:
        check_inputs(cfg)
    return str(err.value)


def test_an_unknown_layer_is_named_before_any_model_is_built(compose, built):
    msg = _problems(compose(["layer=nonexistent"]))
    assert msg.startswith("1 input(s) of this run are missing or wrong (nothing was computed)")
    assert "layer 'nonexistent': model 'toy_cnn' has no layer 'nonexistent'" in msg
    assert "'concepts'" in msg and "fix: layer=" in msg
    assert built == [{"meta"}]  # the architecture on the meta device only: no weights


def test_out_of_range_neuron_ids_are_named_with_the_layer_size(compose, built):
    msg = _problems(compose(["neurons.ids=[3,999]"]))
    assert "neurons.ids [999]: layer 'concepts' of 'toy_cnn' has 25 neurons (0..24)" in msg
    assert "[3," not in msg and built == [{"meta"}]
    # a real architecture (random weights): K read from the meta forward pass
    msg = _problems(compose(["model=resnet18", "debug=smoke", "layer=layer3",
                             "neurons.ids=[0,255,256]"]))
    assert "neurons.ids [256]: layer 'layer3' of 'resnet18' has 256 neurons (0..255)" in msg
    assert all(d == {"meta"} for d in built)


def test_valid_inputs_pass_and_the_global_rng_is_untouched(compose, built):
    import torch

    state = torch.random.get_rng_state()
    assert shapes.shape_problems(compose(["neurons.ids=[0,24]", "layer=concepts"])) == []
    assert shapes.shape_problems(compose(["model=vit_b16", "debug=smoke", "layer=encoder",
                                          "neurons.ids=[767]"])) == []
    assert torch.equal(state, torch.random.get_rng_state())


def _folder(path, n: int):
    path.mkdir()
    for i in range(n):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(path / f"{i}.png")
    return path


@pytest.mark.parametrize("n", [0, 1])
def test_an_empty_or_one_image_control_folder_is_named(compose, tmp_path, built, n):
    root = _folder(tmp_path / "control", n)
    msg = _problems(compose(["dataset=image_folder", f"dataset.root={root}"]))
    assert f"(dataset.root={root}): the control set holds {n} image(s), this run needs at " \
           "least 2 (MAD divides by the control's standard deviation)" in msg
    assert "fix: dataset.root=<a folder with at least 2 images>" in msg
    assert msg.count("control set holds") == 1 and built == [{"meta"}]


def test_every_dataset_is_counted_and_auc_alone_needs_one_image(compose, tmp_path,
                                                                monkeypatch):
    root = _folder(tmp_path / "val", 1)
    monkeypatch.setenv("IMAGENET_VAL_DIR", str(root))
    cfg = compose(["model=resnet18", "model.weights=null", "generator=tiny",
                   "dataset=imagenet_val", "explainer=random"])
    (problem,) = shapes.control_problems(cfg)
    assert f"dataset imagenet_val (dataset.root={root}): the control set holds 1" in str(problem)
    assert shapes.control_problems(compose(["model=resnet18", "model.weights=null",
                                            "dataset=imagenet_val", "scorer=[auc]"])) == []
    two = compose(["dataset=image_folder", f"dataset.root={_folder(tmp_path / 'two', 2)}"])
    assert shapes.control_problems(two) == []
    assert shapes.control_problems(compose(["dataset=synthetic", "dataset.n=2"])) == []


def test_a_yaml_syntax_error_shows_file_line_column_and_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: mine\nlayers: {a: [1, 2}\n")
    with pytest.raises(YamlSyntaxError) as err:
        explained(lambda: OmegaConf.load(bad))()
    msg = str(err.value)
    lines = msg.splitlines()
    assert lines[0].startswith(f"YAML syntax error in {bad}, line 2, column 18: expected ',' "
                               "or ']', but got '}'")
    assert lines[1] == "  2 | layers: {a: [1, 2}"
    assert lines[2].index("^") == lines[1].index("}")
    assert isinstance(err.value.__cause__, yaml.MarkedYAMLError)
    with pytest.raises(ValueError, match="other"):  # other errors pass through unchanged
        explained(lambda: (_ for _ in ()).throw(ValueError("other")))()
    assert describe(yaml.MarkedYAMLError(problem="x")) == "YAML syntax error: x"  # no mark


def _app(args, cwd, **env):
    full = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    full.update(PYTHONPATH=str(REPO), WANDB_MODE="disabled", **env)
    return subprocess.run([sys.executable, "-m", "cosy_bench", *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=300)


def test_the_app_prints_one_message_once_without_traceback(tmp_path):
    """``layer=nonexistent`` and a bad user yaml through the app: the message once, no
    traceback on the console (it is in error.txt and run.log), no model built (the
    pipeline's first line, "model toy_cnn, layer ...", is not in run.log)."""
    run = tmp_path / "run"
    proc = _app(["layer=nonexistent", f"hydra.run.dir={run}",
                 f"paths.cache_dir={tmp_path / 'cache'}"], tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1
    assert out.count("has no layer 'nonexistent'") == 1, out
    assert "Traceback" not in out and "run failed" not in out
    log = (run / "run.log").read_text()
    assert "Traceback" in log and "model toy_cnn, layer" not in log
    assert "has no layer 'nonexistent'" in (run / "error.txt").read_text()

    conf = tmp_path / "user" / "model"
    conf.mkdir(parents=True)
    (conf / "mine.yaml").write_text("defaults:\n  - toy_cnn\nname: mine\nlayers: {a: [1}\n")
    proc = _app(["--config-dir", str(tmp_path / "user"), "model=mine"], tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in out
    assert f"YAML syntax error in {conf / 'mine.yaml'}, line 4, column 15" in out
    assert "  4 | layers: {a: [1}" in out


def test_hydra_full_error_shows_the_traceback_of_a_bad_input(tmp_path):
    """``HYDRA_FULL_ERROR=1``: the same one-line message, now with the traceback on the
    console (the way to debug what the short message hides)."""
    proc = _app(["layer=nonexistent", f"hydra.run.dir={tmp_path / 'run'}",
                 f"paths.cache_dir={tmp_path / 'cache'}"], tmp_path, HYDRA_FULL_ERROR="1")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" in out, out[-2000:]
    assert "has no layer 'nonexistent'" in out
