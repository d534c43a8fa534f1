"""``units=sae`` end to end on the toy world: a trained dictionary's latents are explained and
scored as neurons, the SAE is cached by content and a saved file gives the same run."""

from __future__ import annotations

import csv
import json
import logging

import pytest
import torch

from cosy_bench.pipeline import run
from cosy_bench.units.formats import load_dictionary

SMALL = ["layer=conv4", "units=sae", "units.d_sae=16", "units.k=4", "units.epochs=3",
         "dataset.n=300", "probe.n=400", "n_images=3", "neurons.sample=5", "logger=none",
         "trainer.enable_progress_bar=false"]


@pytest.mark.slow
def test_sae_latents_run_like_neurons_and_hit_the_cache(compose, tmp_path, caplog):
    cache = tmp_path / "cache"
    cfg = compose([*SMALL, f"paths.cache_dir={cache}"])
    rec = run(cfg, tmp_path / "a")
    units = rec.summary["units"]
    assert units["kind"] == "sae" and units["sae"]["d_sae"] == 16
    assert units["sae"]["l0"] <= 4 and 0 <= units["sae"]["dead_fraction"] <= 1
    assert units["n_units"] == 5 and "monosemantic_fraction" in units
    assert rec.meta["layer"] == "conv4+sae" and rec.meta["base_layer"] == "conv4"
    assert rec.summary["run"]["sae_trained"] is True
    assert all(0 <= r["neuron"] < 16 for r in rec.rows) and len(rec.rows) == 5
    assert all("ground_truth" in r for r in rec.rows)
    with open(tmp_path / "a" / "results.csv", newline="") as f:
        first = list(csv.DictReader(f))

    again = run(compose([*SMALL, f"paths.cache_dir={cache}"]), tmp_path / "b")
    assert again.summary["run"]["sae_trained"] is False
    assert again.summary["run"]["control_activations_computed"] is False

    saved = next((cache / "sae").glob("*.safetensors"))
    dictionary, metrics = load_dictionary(saved)
    assert metrics["r2"] == units["sae"]["r2"]
    path_cfg = compose([*SMALL, f"paths.cache_dir={cache}", f"units.path={saved}"])
    from_file = run(path_cfg, tmp_path / "c")
    assert from_file.summary["units"]["sae"]["source"] == str(saved)
    with open(tmp_path / "c" / "results.csv", newline="") as f:
        assert list(csv.DictReader(f)) == first  # same latents, same cache entries
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["auc"]["mean"] == pytest.approx(rec.summary["auc"]["mean"])

    # a checksum-valid cached SAE the reader cannot use: named, moved aside, trained again
    from cosy_bench.cache.store import save_tensors_atomic

    save_tensors_atomic(saved, {"W_enc": torch.zeros(3, 3)}, {"activation": "topk"})
    with caplog.at_level(logging.WARNING, logger="cosy_bench"):
        retrained = run(compose([*SMALL, f"paths.cache_dir={cache}"]), tmp_path / "d")
    assert retrained.summary["run"]["sae_trained"] is True
    assert any(saved.name in r.getMessage() and "moved aside" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]
    with open(tmp_path / "d" / "results.csv", newline="") as f:
        assert list(csv.DictReader(f)) == first


def test_latent_maps_and_a_wrong_layer(compose, tmp_path):
    from cosy_bench.models import create_model
    from cosy_bench.units.dictionary import SparseDictionary

    cfg = compose([f"paths.cache_dir={tmp_path}"])
    model = create_model(cfg.model)
    g = torch.Generator().manual_seed(0)
    sae = SparseDictionary(torch.randn(25, 40, generator=g), torch.zeros(40),
                           torch.randn(40, 25, generator=g), torch.zeros(25), k=5)
    x = torch.randn(2, 3, 64, 64)
    maps = model.spatial_extractor("concepts")(x)
    latent_maps = sae.wrap_spatial(model.spatial_extractor("concepts"))(x)
    assert latent_maps.shape == (2, 40, *maps.shape[2:])
    torch.testing.assert_close(latent_maps, sae.encode_maps(maps))
    conv = model.extractor("conv4")
    with pytest.raises(ValueError, match="reads d_in=25 units but the layer gives 128"):
        sae.wrap(conv)(x)
