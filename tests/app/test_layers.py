"""``layer=NAME`` for any layer a model yaml declares, with no conf/layer file (issue #13,
item 2), tested with the "Add a model with one yaml file" recipe of docs/real_models.md copied
verbatim into a config folder of the test's own (a torchvision architecture not shipped: convnext_tiny)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from helpers import REPO, config_options
from hydra._internal.utils import create_config_search_path

from cosy_bench.app.layers import SCHEME

SECTION = re.search(r"^## Add a model with one yaml file\n(.*?)(?=^## |\Z)",
                    (REPO / "docs" / "real_models.md").read_text(encoding="utf-8"),
                    re.S | re.M).group(1)


def readme_recipe() -> tuple[str, str, list[str]]:
    """(file name, yaml, command-line overrides) as docs/real_models.md writes them."""
    name = re.search(r"`conf/model/(\w+)\.yaml`", SECTION).group(1)
    yaml = re.search(r"```yaml\n(.*?)```", SECTION, re.S).group(1)
    command = re.search(r"then `python -m cosy_bench ([^`]+)`", SECTION).group(1)
    return name, yaml, command.split()


@pytest.fixture
def recipe_dir(tmp_path):
    name, yaml, _ = readme_recipe()
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / f"{name}.yaml").write_text(yaml, encoding="utf-8")
    return tmp_path / "conf"


def test_readme_recipe_names_a_layer_without_a_layer_file(compose, recipe_dir):
    name, _, overrides = readme_recipe()
    assert name == "my_convnext" and f"model={name}" in overrides
    layer = next(o.split("=")[1] for o in overrides if o.startswith("layer="))
    assert layer not in config_options("layer")  # no conf/layer/stage4.yaml
    cfg = compose([f"hydra.searchpath=[file://{recipe_dir}]", *overrides])
    assert cfg.layer.name == layer == "stage4"
    assert cfg.model.layers[layer].module == "features.7"
    # the recipe's model brings its own world (ImageNet), not the toy world
    assert cfg.dataset.name == "imagenet_val" and cfg.generator_name == "sdxl"


def test_every_declared_layer_resolves_on_the_network(compose, recipe_dir):
    from helpers import no_network

    from cosy_bench.models import create_model

    cfg = compose([f"hydra.searchpath=[file://{recipe_dir}]", "model=my_convnext",
                   "model.weights=null"])
    with no_network():
        bundle = create_model(cfg.model, seed=0)
    modules = dict(bundle.module.named_modules())
    for lname in cfg.model.layers:
        chosen = compose([f"hydra.searchpath=[file://{recipe_dir}]", "model=my_convnext",
                          f"layer={lname}"]).layer.name
        assert bundle.layer(chosen).module in modules
    with pytest.raises(ValueError, match=r"no layer 'stage9'.*'stage2', 'stage4'"):
        bundle.layer(compose(["model=resnet18", "layer=stage9"]).layer.name)


def test_real_files_win_and_other_apps_are_untouched(compose):
    assert compose(["model=resnet18", "layer=default"]).layer.name is None  # layer/default.yaml
    ours = [e.path for e in create_config_search_path(str(REPO / "conf")).get_path()]
    assert f"{SCHEME}://" in ours
    other = [e.path for e in create_config_search_path(str(REPO / "tests")).get_path()]
    assert f"{SCHEME}://" not in other


@pytest.mark.slow
def test_readme_recipe_runs_and_sweeps_its_layers(recipe_dir, tmp_path):
    """The page's command (plus debug=smoke: offline) runs; ``-m layer=stage2,stage4`` sweeps;
    the verbatim command offline stops at once naming the missing inputs."""
    _, _, overrides = readme_recipe()
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled",
           "COSY_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
           "TORCH_HOME": str(tmp_path / "torch"), "IMAGENET_VAL_DIR": "",
           "IMAGENET_TRAIN_DIR": ""}
    base = [sys.executable, "-m", "cosy_bench", "--config-dir", str(recipe_dir)]
    proc = subprocess.run([*base, "-m", "model=my_convnext", "layer=stage2,stage4",
                           "debug=smoke"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    layers = sorted(json.loads(p.read_text())["run"]["layer"]
                    for p in tmp_path.glob("multirun/*/*/*/summary.json"))
    assert layers == ["stage2", "stage4"]
    proc = subprocess.run([*base, *overrides], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0
    assert "model weights convnext_tiny IMAGENET1K_V1" in proc.stderr
    assert "export IMAGENET_VAL_DIR=" in proc.stderr
