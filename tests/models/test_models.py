"""Models: every config loads offline with random weights; layers give [B, K] with the
documented K; extraction stops the forward pass; reductions; layer-name errors."""

from __future__ import annotations

import pytest
import torch
from helpers import CONF, GENERIC_MODEL_OVERRIDES, compose_config, config_options, no_network
from PIL import Image

from cosy_bench.models import create_model
from cosy_bench.models.layers import LayerExtractor, LayerSpec, reduce_activations
from cosy_bench.models.loaders import WeightsUnavailableError

# model -> (default layer, its K, K of `output` or None where the model has no classes)
EXPECTED = {
    "resnet18": ("avgpool", 512, 1000),
    "resnet50": ("avgpool", 2048, 1000),
    "vit_b16": ("encoder", 768, 1000),
    "densenet161": ("features", 2208, 1000),
    "resnet50_places365": ("avgpool", 2048, 365),
    "densenet161_places365": ("features", 2208, 365),
    "dino_vits8": ("encoder", 384, None),
}
# the smallest input the network takes (K does not depend on it): keeps CPU time down
MIN_SIDE = {"vit_b16": 224, "dino_vits8": 224}
# the slowest networks on a CPU run a batch of one
BATCH = {"densenet161": 1, "densenet161_places365": 1, "dino_vits8": 1}

CONCRETE = [m for m in config_options("model") if m not in GENERIC_MODEL_OVERRIDES]


def _image(seed: int = 0, size: int = 256) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size, size, 3), generator=g, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


def _batch(bundle, n: int = 2) -> torch.Tensor:
    """``n`` images through the model's own preprocessing."""
    return torch.stack([bundle.transform(_image(i)) for i in range(n)])


def test_every_documented_model_is_checked():
    assert set(EXPECTED) <= set(CONCRETE)
    # a config added later (e.g. the toy world's) is still loaded by the test below
    assert (CONF / "model" / "resnet18.yaml").exists()


@pytest.mark.parametrize("model", CONCRETE)
def test_model_loads_offline_and_default_layer_has_documented_k(model_bundle, model):
    bundle = model_bundle(model)  # built with the network blocked
    assert bundle.weights_id == "random-init-seed0"
    b = BATCH.get(model, 2)
    x = _batch(bundle, b)
    assert x.ndim == 4 and x.shape[:2] == (b, 3)
    with torch.no_grad():
        out = bundle.extractor(None)(x)
    assert out.ndim == 2 and out.shape[0] == b
    assert torch.isfinite(out).all()
    if model in EXPECTED:
        default, k, _ = EXPECTED[model]
        assert bundle.default_layer == default
        assert tuple(out.shape) == (b, k)
    else:
        assert out.shape[1] > 0


@pytest.mark.parametrize("model", [m for m, e in EXPECTED.items() if e[2] is not None])
def test_output_layer_has_one_neuron_per_class(model_bundle, model):
    bundle = model_bundle(model)
    side = MIN_SIDE.get(model, 64)
    x = torch.randn(1, 3, side, side)
    with torch.no_grad():
        out = bundle.extractor("output")(x)
    assert tuple(out.shape) == (1, EXPECTED[model][2])
    assert bundle.layer("output").ground_truth == "class_names"


@pytest.mark.parametrize("model", ["resnet18", "vit_b16", "densenet161"])
def test_imagenet_output_ground_truth_is_the_class_names_offline(model_bundle, model):
    bundle = model_bundle(model)
    with no_network():
        truth = bundle.ground_truth(bundle.layer("output"))
    assert len(truth) == 1000
    assert truth[0] == "tench" and truth[1] == "goldfish"
    assert bundle.ground_truth(bundle.layer(bundle.default_layer)) is None


def test_dino_has_no_output_layer(model_bundle):
    bundle = model_bundle("dino_vits8")
    assert "output" not in bundle.layers
    assert bundle.class_names is None
    with pytest.raises(ValueError, match="output"):
        bundle.layer("output")


def test_random_init_is_seeded():
    cfg = compose_config(["model=resnet18", "model.weights=null"])
    a = create_model(cfg.model, seed=3).module.fc.weight
    b = create_model(cfg.model, seed=3).module.fc.weight
    c = create_model(cfg.model, seed=4).module.fc.weight
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert create_model(cfg.model, seed=4).weights_id == "random-init-seed4"


@pytest.mark.parametrize(("model", "needle"), [
    ("resnet18", "IMAGENET1K_V1"),
    ("resnet50_places365", "resnet50_places365.pth.tar"),
])
def test_unavailable_weights_say_which_and_how_to_run_offline(tmp_path, monkeypatch, model,
                                                                needle):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # nothing cached
    cfg = compose_config([f"model={model}"])
    assert cfg.model.weights is not None
    with no_network(), pytest.raises(Exception) as err:
        create_model(cfg.model, seed=0)
    chain, exc = [], err.value
    while exc is not None:  # hydra.utils.instantiate wraps it in an InstantiationException
        chain.append(exc)
        exc = exc.__cause__
    assert any(isinstance(e, WeightsUnavailableError) for e in chain)
    msg = str(err.value)
    assert needle in msg
    assert "model.weights=null" in msg and "debug=smoke" in msg


# --------------------------------------------------------------------------- extraction


def test_extraction_stops_the_forward_pass(model_bundle):
    bundle = model_bundle("resnet18")
    net = bundle.module
    calls = []
    handles = [net.fc.register_forward_hook(lambda *a: calls.append("fc")),
               net.layer2.register_forward_hook(lambda *a: calls.append("layer2")),
               net.layer1.register_forward_hook(lambda *a: calls.append("layer1"))]
    try:
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            out = bundle.extractor("layer1")(x)
        assert calls == ["layer1"]  # nothing after layer1 ran
        assert tuple(out.shape) == (1, 64)
        calls.clear()
        with torch.no_grad():
            bundle.extractor("output")(x)
        assert calls == ["layer1", "layer2", "fc"]  # the hooks themselves work
    finally:
        for h in handles:
            h.remove()
    # the extractor leaves no hook behind
    assert not net.layer1._forward_hooks and not net.fc._forward_hooks


def test_extractor_leaves_no_hook_when_the_model_fails(model_bundle):
    bundle = model_bundle("resnet18")
    extractor = bundle.extractor("layer4")
    with pytest.raises(RuntimeError):
        extractor(torch.randn(1, 5, 64, 64))  # wrong channel count fails in conv1
    assert not bundle.module.layer4._forward_hooks


def _capture(module: torch.nn.Module, net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    got = {}
    handle = module.register_forward_hook(lambda _m, _i, out: got.setdefault("out", out))
    try:
        with torch.no_grad():
            net(x)
    finally:
        handle.remove()
    return got["out"]


def test_conv_layer_is_reduced_by_spatial_mean(model_bundle):
    bundle = model_bundle("resnet18")
    x = torch.randn(2, 3, 96, 96)
    fmap = _capture(bundle.module.layer3, bundle.module, x)
    assert fmap.ndim == 4 and fmap.shape[2] > 1
    with torch.no_grad():
        got = bundle.extractor("layer3")(x)
    torch.testing.assert_close(got, fmap.mean(dim=(2, 3)))


def test_vit_layer_is_read_at_the_cls_token(model_bundle):
    bundle = model_bundle("vit_b16")
    x = torch.randn(1, 3, 224, 224)
    tokens = _capture(bundle.module.encoder, bundle.module, x)
    assert tuple(tokens.shape) == (1, 197, 768)
    with torch.no_grad():
        got = bundle.extractor("encoder")(x)
    torch.testing.assert_close(got, tokens[:, 0])
    assert bundle.layer("encoder").reduction == "cls"


def test_any_module_path_is_a_layer(model_bundle):
    bundle = model_bundle("resnet18")
    spec = bundle.layer("layer4.1.conv2")
    assert spec == LayerSpec(name="layer4.1.conv2", module="layer4.1.conv2")
    with torch.no_grad():
        out = bundle.extractor("layer4.1.conv2")(torch.randn(2, 3, 64, 64))
    assert tuple(out.shape) == (2, 512)
    vit = model_bundle("vit_b16")
    with torch.no_grad():
        out = vit.extractor("encoder.layers.encoder_layer_3")(torch.randn(1, 3, 224, 224))
    assert tuple(out.shape) == (1, 768)


def test_a_layer_the_model_lacks_names_the_models_layers(model_bundle):
    bundle = model_bundle("resnet18")
    with pytest.raises(ValueError) as err:
        bundle.layer("transformer_block_7")
    msg = str(err.value)
    assert "resnet18" in msg and "transformer_block_7" in msg
    for name in ("avgpool", "layer1", "layer4", "fc", "output"):
        assert repr(name) in msg


def test_reduce_activations():
    x4 = torch.randn(2, 3, 5, 7)
    torch.testing.assert_close(reduce_activations(x4), x4.mean(dim=(2, 3)))
    x3 = torch.randn(2, 9, 4)
    torch.testing.assert_close(reduce_activations(x3), x3[:, 0])
    x2 = torch.randn(2, 6)
    assert reduce_activations(x2) is x2
    x5 = torch.randn(2, 2, 2, 2, 2)
    assert reduce_activations(x5).shape == (2, 16)
    torch.testing.assert_close(reduce_activations((x2, x3)), x2)  # tuple outputs: the first
    torch.testing.assert_close(reduce_activations(x3, "flatten"), x3.flatten(1))
    with pytest.raises(ValueError, match="unknown reduction"):
        reduce_activations(x2, "median")
    with pytest.raises(ValueError, match="cls"):
        reduce_activations(x4, "cls")
    with pytest.raises(ValueError, match="spatial_mean"):
        reduce_activations(x3, "spatial_mean")


def test_unreached_layer_is_an_error():
    net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    net.add_module("unused", torch.nn.Linear(3, 2))  # registered, never called
    net.forward = lambda x: net[0](x)  # type: ignore[method-assign]
    extractor = LayerExtractor(net, LayerSpec(name="unused", module="unused"))
    with pytest.raises(RuntimeError, match="not reached"):
        extractor(torch.randn(1, 4))


def test_a_damaged_weights_file_names_the_file_not_the_network(tmp_path):
    from cosy_bench.models.loaders import read_state_dict

    path = tmp_path / "resnet18.pth"
    torch.save({"w": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:300])  # a copy cut short
    with pytest.raises(WeightsUnavailableError) as err:
        read_state_dict(str(path))
    assert str(path) in str(err.value) and "damaged" in str(err.value)
    assert "offline" not in str(err.value)


def test_vit_output_maps_are_the_head_on_each_patch_token(model_bundle):
    """vit_b16's ``output`` (heads on the CLS token) has unit maps for MILAN and NetDissect:
    the head applied to every patch token of the encoder's output, [B, 1000, 14, 14]."""
    bundle = model_bundle("vit_b16")
    x = torch.randn(2, 3, 224, 224)
    maps = bundle.spatial_extractor("output")(x)
    assert maps.shape == (2, 1000, 14, 14)
    captured = {}
    hook = bundle.module.encoder.register_forward_hook(
        lambda m, i, o: captured.setdefault("tokens", o))
    bundle.module(x)
    hook.remove()
    patch = captured["tokens"][:, 1 + 3 * 14 + 5]  # the patch at row 3, column 5
    torch.testing.assert_close(maps[:, :, 3, 5], bundle.module.heads(patch))
