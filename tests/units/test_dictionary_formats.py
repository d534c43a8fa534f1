"""Sparse dictionaries: encoding rules, the suite's file format, SAELens folders and
overcomplete state dicts (checked against overcomplete itself where it imports)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from cosy_bench.units.dictionary import SparseDictionary
from cosy_bench.units.formats import load_dictionary, save_dictionary


def _random(c=6, d=10, activation="topk", k=3, seed=0, pre_bias=True):
    g = torch.Generator().manual_seed(seed)
    t = {"W_enc": torch.randn(c, d, generator=g), "b_enc": torch.randn(d, generator=g),
         "W_dec": torch.randn(d, c, generator=g), "b_dec": torch.randn(c, generator=g)}
    thr = torch.rand(d, generator=g) if activation == "jumprelu" else None
    return SparseDictionary(**t, activation=activation, k=k, threshold=thr, pre_bias=pre_bias)


def test_topk_keeps_the_k_largest_positive_pre_activations():
    sae = _random(k=3)
    x = torch.randn(50, 6)
    h = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    z = sae.encode(x)
    assert ((z != 0).sum(dim=1) <= 3).all()
    top = h.topk(3, dim=1)
    expected = torch.zeros_like(h).scatter(1, top.indices, top.values.clamp_min(0))
    torch.testing.assert_close(z, expected)


def test_relu_and_jumprelu_rules():
    relu = _random(activation="relu", k=None)
    x = torch.randn(20, 6)
    torch.testing.assert_close(relu.encode(x), torch.relu(relu.pre_activations(x)))
    jump = _random(activation="jumprelu", k=None)
    h = jump.pre_activations(x)
    torch.testing.assert_close(jump.encode(x), torch.where(h > jump.threshold, h, 0.0))


def test_maps_are_encoded_at_every_position():
    sae = _random()
    maps = torch.randn(2, 6, 3, 4)
    out = sae.encode_maps(maps)
    assert out.shape == (2, 10, 3, 4)
    torch.testing.assert_close(out[1, :, 2, 3], sae.encode(maps[1, :, 2, 3][None])[0])


def test_bad_shapes_and_settings_are_named():
    t = {"W_enc": torch.zeros(6, 10), "b_enc": torch.zeros(9), "W_dec": torch.zeros(10, 6),
         "b_dec": torch.zeros(6)}
    with pytest.raises(ValueError, match=r"b_enc \(9,\) \(expected \(10,\)\)"):
        SparseDictionary(**t, k=2)
    t["b_enc"] = torch.zeros(10)
    with pytest.raises(ValueError, match="k <= d_sae=10"):
        SparseDictionary(**t, k=11)
    with pytest.raises(ValueError, match="jumprelu dictionary needs a threshold"):
        SparseDictionary(**t, activation="jumprelu")
    with pytest.raises(ValueError, match="reads d_in=6 units but the layer gives 5"):
        SparseDictionary(**t, k=2).encode(torch.zeros(1, 5))


def test_suite_file_round_trip_and_checksum(tmp_path):
    sae = _random(activation="jumprelu", k=None, pre_bias=False)
    path = tmp_path / "d.safetensors"
    save_dictionary(path, sae, {"r2": 0.5})
    back, metrics = load_dictionary(path)
    assert metrics == {"r2": 0.5}
    assert back.settings() == sae.settings()
    x = torch.randn(7, 6)
    torch.testing.assert_close(back.encode(x), sae.encode(x))
    with pytest.raises(ValueError, match="metadata says k=3 but units.k=4"):
        save_dictionary(path, _random(k=3))
        load_dictionary(path, k=4)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # a changed tensor byte
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="do not match the checksum"):
        load_dictionary(path)


def test_a_bare_file_needs_its_activation(tmp_path):
    sae = _random(k=2)
    path = tmp_path / "bare.safetensors"
    save_file(sae.tensors(), str(path))
    with pytest.raises(ValueError, match="give units.activation"):
        load_dictionary(path)
    back, _ = load_dictionary(path, activation="topk", k=2)
    torch.testing.assert_close(back.encode(torch.ones(1, 6)), sae.encode(torch.ones(1, 6)))


@pytest.mark.parametrize("arch", ["topk", "jumprelu", "standard"])
def test_saelens_folder(tmp_path, arch):
    sae = _random(activation={"standard": "relu"}.get(arch, arch),
                  k=4 if arch == "topk" else None)
    tensors = dict(sae.tensors())
    if arch == "jumprelu":  # older SAELens files hold log_threshold
        tensors["log_threshold"] = tensors.pop("threshold").log()
    save_file(tensors, str(tmp_path / "sae_weights.safetensors"))
    cfg = {"d_in": 6, "d_sae": 10, "architecture": arch, "apply_b_dec_to_input": True,
           "normalize_activations": "none", **({"k": 4} if arch == "topk" else {})}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    back, _ = load_dictionary(tmp_path)
    x = torch.randn(9, 6)
    torch.testing.assert_close(back.encode(x), sae.encode(x))
    cfg["normalize_activations"] = "expected_average_only_in"
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="normalize_activations"):
        load_dictionary(tmp_path)


def _overcomplete_sae():
    """overcomplete.sae (0.3.0) imports its colour maps, which call matplotlib.cm.get_cmap,
    removed in matplotlib 3.9: provided here from matplotlib.colormaps for the test only."""
    import matplotlib.cm

    if not hasattr(matplotlib.cm, "get_cmap"):
        matplotlib.cm.get_cmap = matplotlib.colormaps.get_cmap
    return pytest.importorskip("overcomplete.sae")


def test_overcomplete_state_dicts_encode_and_decode_as_overcomplete(tmp_path):
    oc = _overcomplete_sae()
    torch.manual_seed(0)
    x = torch.randn(16, 6)
    for model, kwargs in ((oc.TopKSAE(6, 10, top_k=3), {"k": 3}),
                          (oc.JumpSAE(6, 10), {})):
        with torch.no_grad():
            model.thresholds.fill_(-1.0) if hasattr(model, "thresholds") else None
            model.dictionary.multiplier.fill_(0.3)
        path = tmp_path / f"{type(model).__name__}.pt"
        torch.save(model.state_dict(), path)
        model.eval()
        with torch.no_grad():
            _, codes, x_hat = model(x)
        back, _ = load_dictionary(path, **kwargs)
        torch.testing.assert_close(back.encode(x), codes, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(back.decode(back.encode(x)), x_hat, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="does not save its top_k: give units.k"):
        torch.save(oc.TopKSAE(6, 10, top_k=3).state_dict(), tmp_path / "t.pt")
        load_dictionary(tmp_path / "t.pt")


def test_missing_and_unknown_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dictionary(tmp_path / "nope.safetensors")
    (tmp_path / "d.npz").write_bytes(b"x")
    with pytest.raises(ValueError, match="expected a .safetensors file"):
        load_dictionary(tmp_path / "d.npz")
