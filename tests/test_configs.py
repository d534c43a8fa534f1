"""Config groups: every option composes and resolves; every (model, layer) pair resolves to a
module of the network; unknown options get Hydra's own error."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import CONF, GENERIC_MODEL_OVERRIDES, HAS_TOY_MODEL, config_groups, config_options
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from cosy_bench.models.layers import REDUCTIONS

# A concrete model for composing the other groups (the default, toy_cnn, may not exist yet).
BASE = [] if HAS_TOY_MODEL else ["model=resnet18"]

GROUP_OPTIONS = [(g, o) for g in config_groups() for o in config_options(g)]
MODELS = config_options("model")
CONCRETE_MODELS = [m for m in MODELS if m not in GENERIC_MODEL_OVERRIDES]


def _overrides(group: str, option: str) -> list[str]:
    base = [o for o in BASE if not o.startswith(f"{group}=")]
    extra = list(GENERIC_MODEL_OVERRIDES.get(option, ())) if group == "model" else []
    return [*base, f"{group}={option}", *extra]


def test_expected_groups_exist():
    groups = set(config_groups())
    assert {"model", "layer", "explainer", "generator", "prompt", "scorer", "dataset",
            "neurons", "trainer", "logger", "paths", "debug", "experiment"} <= groups
    assert {"resnet18", "resnet50", "vit_b16", "densenet161", "dino_vits8",
            "resnet50_places365", "densenet161_places365", "torchvision", "timm"} <= set(MODELS)
    assert {"sdxl", "stable_cascade", "diffusers", "tiny"} <= set(config_options("generator"))
    assert {"random", "ground_truth", "precomputed"} <= set(config_options("explainer"))
    assert {"auc", "mad", "utest"} <= set(config_options("scorer"))
    assert {"imagenet_val", "places365_val", "image_folder", "synthetic"} <= set(
        config_options("dataset"))
    assert {f"p{i}" for i in range(1, 6)} <= set(config_options("prompt"))


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS,
                         ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_every_group_option_composes_and_resolves(compose, group, option):
    cfg = compose(_overrides(group, option))
    choice = OmegaConf.select(cfg, "explainer_name")
    assert isinstance(choice, str) and choice
    # every interpolation resolves (mandatory values such as dataset.root may stay "???")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["paths"]["cache_dir"]
    if group == "explainer":
        assert resolved["explainer_name"] == option
    if group == "generator":
        assert resolved["generator_name"] == option
    if group == "model":
        assert resolved["model"]["name"]
        assert resolved["model"]["default_layer"]


def test_default_config_composes_with_the_toy_world():
    from helpers import compose_config

    cfg = compose_config([])
    assert cfg.model.name == "toy_cnn" and cfg.explainer_name == "invert"
    assert cfg.generator_name == "toyworld"


def test_prompt_templates_are_the_cosy_authors(compose):
    expected = {"p1": "a", "p2": "a painting of", "p3": "photo of", "p4": "realistic photo of",
                "p5": "realistic photo of a close up of"}
    for name, template in expected.items():
        cfg = OmegaConf.load(CONF / "prompt" / f"{name}.yaml")
        assert cfg.template == template, name
    default = compose(BASE).prompt  # p5 is the paper's default
    assert default.name == "p5" and default.template == expected["p5"]


def test_several_scorers_in_one_run(compose):
    cfg = compose([*BASE, "scorer=[auc,mad,utest]"])
    assert list(cfg.scorer) == ["auc", "mad", "utest"]
    assert list(compose(BASE).scorer) == ["auc", "mad"]


def test_debug_smoke_makes_any_model_offline_and_small(compose):
    cfg = compose(["model=vit_b16", "debug=smoke"])
    assert cfg.model.weights is None and cfg.model.build.weights is None
    assert cfg.generator_name == "tiny"
    assert cfg.dataset._target_.endswith("SyntheticControlSet")
    assert cfg.logger._target_.endswith("NoLogger")
    assert cfg.neurons.sample == 3 and cfg.n_images <= 5


@pytest.mark.parametrize("model", CONCRETE_MODELS)
def test_every_model_layer_pair_composes_and_resolves(compose, model_bundle, model):
    """For each layer a model config lists, ``model=M layer=L`` composes and resolves to a
    module of the built network (random weights, offline)."""
    layers = compose([f"model={model}", "model.weights=null"]).model.layers
    assert layers, f"model {model} lists no layers"
    bundle = model_bundle(model)
    modules = dict(bundle.module.named_modules())
    for lname in layers:  # selectable by name, with or without a conf/layer file
        cfg = compose([f"model={model}", f"layer={lname}", "model.weights=null"])
        assert cfg.layer.name == lname
        spec = bundle.layer(cfg.layer.name)
        assert spec.name == lname
        assert spec.reduction in REDUCTIONS
        assert spec.module is None or spec.module in modules, (model, lname, spec.module)
    default = compose([f"model={model}", "layer=default", "model.weights=null"])
    assert default.layer.name is None
    assert bundle.layer(default.layer.name).name == default.model.default_layer
    assert default.model.default_layer in layers


@pytest.mark.parametrize("generic", sorted(GENERIC_MODEL_OVERRIDES))
def test_generic_model_entries_with_explicit_arch(compose, model_bundle, generic):
    extra = GENERIC_MODEL_OVERRIDES[generic]
    cfg = compose([f"model={generic}", "model.weights=null", *extra, "layer=output"])
    assert cfg.model.name == "resnet18"
    bundle = model_bundle(generic, *extra)
    assert bundle.name == "resnet18"
    assert bundle.layer(cfg.layer.name).module is None  # the network's own output
    # any module path of the network is a layer
    path = "avgpool" if generic == "torchvision" else "global_pool"
    assert bundle.layer(path).module == path


def test_generic_torchvision_entry_needs_an_arch(compose):
    cfg = compose(["model=torchvision"])
    with pytest.raises(Exception, match="arch"):
        OmegaConf.to_container(cfg.model, resolve=True, throw_on_missing=True)


@pytest.mark.parametrize("override", ["model=no_such_model", "explainer=no_such_explainer",
                                      "generator=no_such_generator", "scorer=[auc,no_such]"])
def test_unknown_group_option_gives_hydras_error(compose, override):
    group, _, option = override.partition("=")
    option = option.strip("[]").split(",")[-1]
    with pytest.raises(MissingConfigException) as err:
        compose([*[o for o in BASE if not o.startswith(group)], override])
    msg = str(err.value)
    if override.endswith("]"):  # a list of options: Hydra names the missing one only
        assert f"Could not load '{group}/{option}'" in msg
    else:
        assert f"Could not find '{group}/{option}'" in msg
        assert "Available options" in msg
        assert config_options(group)[0] in msg  # the real options are listed


def test_unknown_option_on_the_command_line_exits_with_hydras_message(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cosy_bench", "model=no_such_model"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Could not find 'model/no_such_model'" in proc.stderr
    assert "resnet18" in proc.stderr  # the available options are listed


# A real model brings its own world (issue #13, item 3): the CoSy paper's inputs, not the
# toy world's; mixing takes an explicit choice.
IMAGENET_WORLD = {"generator": "DiffusersGenerator", "dataset": "ImageFolder",
                  "probe": "LabelledImageFolder", "clip": "open_clip_model",
                  "concepts": "common_words"}


def _world(cfg) -> dict[str, str]:
    return {g: cfg[g]._target_.rsplit(".", 1)[-1] for g in IMAGENET_WORLD}


@pytest.mark.parametrize("model", [m for m in CONCRETE_MODELS if m != "toy_cnn"]
                         + sorted(GENERIC_MODEL_OVERRIDES))
def test_a_real_model_brings_its_own_world(compose, model):
    cfg = compose([f"model={model}", *GENERIC_MODEL_OVERRIDES.get(model, ())])
    assert _world(cfg) == IMAGENET_WORLD
    assert cfg.generator.model_id == "stabilityai/stable-diffusion-xl-base-1.0"
    assert cfg.concepts.n == "20k" and cfg.clip.pretrained == "openai"
    assert cfg.neurons.sample == 50 and cfg.neurons.seed == 42
    control = "places365_val" if model.endswith("places365") else "imagenet_val"
    assert cfg.dataset.name == control


def test_toy_world_with_a_real_model_only_by_choice(compose):
    toy = _world(compose([]))
    assert toy == {"generator": "ToyWorldGenerator", "dataset": "ToyControlSet",
                   "probe": "ToyProbeSet", "clip": "load_toy_clip", "concepts": "toyworld"}
    assert _world(compose(["model=resnet18", "world=toyworld"])) == toy
    mixed = compose(["model=resnet18", "dataset=toyworld"])  # one group by choice
    assert mixed.dataset._target_.endswith("ToyControlSet")
    assert mixed.generator._target_.endswith("DiffusersGenerator")
    # experiments, debug=smoke and the command line override the model's world
    smoke = compose(["model=vit_b16", "debug=smoke"])
    assert smoke.generator_name == "tiny" and smoke.dataset._target_.endswith("SyntheticControlSet")
    assert compose(["experiment=cosy_imagenet", "generator=tiny"]).generator_name == "tiny"
