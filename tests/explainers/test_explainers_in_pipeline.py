"""INVERT and CLIP-Dissect inside the pipeline: probe sets, caches, reports (offline, random
weights). Their numerical cores are checked against the papers in test_invert.py and
test_clip_dissect.py; the toy-world accuracy checks are in test_explainers_on_toyworld.py."""

from __future__ import annotations

import csv
import logging

import numpy as np
import pytest
from PIL import Image

from cosy_bench.pipeline import run


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def invert_run(compose, smoke, cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("invert")
    report = run(compose(smoke(cache_dir, "explainer=invert")), out)
    return report, out


def test_invert_labels_neurons_with_probe_concepts(invert_run, model_bundle):
    report, out = invert_run
    classes = model_bundle("resnet18").class_names
    expl = _rows(out / "explanations.csv")
    assert len(expl) == 512  # every avgpool neuron gets a formula
    assert {"invert_auc", "invert_fraction"} <= set(expl[0])
    # the synthetic probe has 10 concepts named by the model's first 10 classes
    assert {r["explanation"] for r in expl} <= set(classes[:10])
    for r in expl:
        assert 0.5 <= float(r["invert_auc"]) <= 1.0  # positive mode picks AUROC >= 0.5
        assert 0.0 < float(r["invert_fraction"]) <= 0.5  # max_fraction
    rows = _rows(out / "results.csv")
    assert len(rows) == 3 and "invert_auc" in rows[0]


def test_invert_explanations_are_cached(invert_run, compose, smoke, cache_dir, tmp_path, caplog):
    report, out = invert_run
    with caplog.at_level(logging.INFO, logger="cosy_bench"):
        again = run(compose(smoke(cache_dir, "explainer=invert")), tmp_path)
    assert "explanations (invert): cache hit" in caplog.text
    assert _rows(tmp_path / "explanations.csv") == _rows(out / "explanations.csv")
    assert again.summary["auc"] == report.summary["auc"]


def test_invert_length_two_changes_the_cache_key(invert_run, compose, smoke, cache_dir,
                                                 tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="cosy_bench"):
        run(compose(smoke(cache_dir, "explainer=invert", "explainer.length=2")), tmp_path)
    assert "explanations (invert): cache hit" not in caplog.text
    # the probe activations of (model, layer, probe set) are reused
    assert "probe activations: cache hit" in caplog.text
    labels = [r["explanation"] for r in _rows(tmp_path / "explanations.csv")]
    assert any((" AND " in t or " OR " in t) for t in labels)


def test_clip_dissect_reuses_probe_activations_and_caches_embeddings(
        invert_run, compose, smoke, cache_dir, tmp_path, caplog, model_bundle):
    overrides = smoke(cache_dir, "explainer=clip_dissect", "clip=toyworld")
    with caplog.at_level(logging.INFO, logger="cosy_bench"):
        run(compose(overrides), tmp_path / "a")
    assert "probe activations: cache hit" in caplog.text  # computed by the INVERT run
    classes = set(model_bundle("resnet18").class_names)  # concepts=imagenet_classes
    expl = _rows(tmp_path / "a" / "explanations.csv")
    assert len(expl) == 512 and {r["explanation"] for r in expl} <= classes
    assert "clip_similarity" in expl[0]
    kinds = {p.parent.name for p in cache_dir.rglob("*.safetensors")}
    assert {"clip_images", "clip_texts"} <= kinds


def test_invert_on_a_labelled_folder(compose, smoke, cache_dir, tmp_path):
    """A labelled image folder: concepts are the sub-folder names; a corrupt file is skipped
    and its label row dropped with it."""
    rng = np.random.default_rng(0)
    for name, colour in [("reds", (220, 30, 30)), ("blues", (30, 30, 220)),
                         ("greens", (30, 200, 30))]:
        (tmp_path / "probe" / name).mkdir(parents=True)
        for i in range(6):
            img = np.clip(np.array(colour) + rng.normal(0, 20, (32, 32, 3)), 0, 255)
            Image.fromarray(img.astype(np.uint8)).save(tmp_path / "probe" / name / f"{i}.png")
    (tmp_path / "probe" / "reds" / "broken.png").write_bytes(b"not an image")
    overrides = smoke(cache_dir, "explainer=invert", "probe=image_folder",
                      f"probe.root={tmp_path / 'probe'}")
    run(compose(overrides), tmp_path / "out")
    labels = {r["explanation"] for r in _rows(tmp_path / "out" / "explanations.csv")}
    assert labels and labels <= {"reds", "blues", "greens"}


def test_invert_needs_a_labelled_probe(compose, smoke, cache_dir, tmp_path):
    cfg = compose(smoke(cache_dir, "explainer=invert", "probe=synthetic"))
    cfg.explainer.probe = {"_target_": "cosy_bench.data.SyntheticControlSet", "n": 8}
    with pytest.raises(ValueError, match="labelled probe set"):
        run(cfg, tmp_path)


def test_milan_smoke_on_resnet18_runs_offline_with_a_random_published_size_decoder(
        compose, smoke, cache_dir, tmp_path, caplog):
    """`python -m cosy_bench explainer=milan model=resnet18 debug=smoke`."""
    from helpers import no_network

    from cosy_bench.explainers.milan.checkpoints import RANDOM_WORDS

    cfg = compose(smoke(cache_dir, "explainer=milan"))
    assert cfg.explainer.checkpoint == "random"
    with no_network(), caplog.at_level(logging.INFO, logger="cosy_bench"):
        report = run(cfg, tmp_path)
    assert "describing 3 units" in caplog.text  # only the neurons the run scores
    rows = _rows(tmp_path / "results.csv")
    assert len(rows) == 3
    for row in rows:
        words = row["explanation"].split()
        assert words and set(words) <= set(RANDOM_WORDS)
        assert row["explanation"] == row["explanation"].lower()
        assert float(row["milan_log_p_caption"]) < 0
    assert report.summary["auc"]["n"] == 3
    # a second run reads the explanations from the cache and describes nothing
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cosy_bench"):
        run(cfg, tmp_path / "again")
    assert "explanations (milan): cache hit" in caplog.text
    assert "describing" not in caplog.text


def test_milan_explains_only_the_wanted_neurons_and_keys_its_cache_by_them(
        compose, smoke, cache_dir, tmp_path, caplog):
    cfg = compose(smoke(cache_dir, "explainer=milan", "neurons.ids=[5,7]",
                        "explainer.random_encoder=resnet18"))
    report = run(cfg, tmp_path)
    assert [int(r["neuron"]) for r in report.rows] == [5, 7]
    # other neurons are another explanation set: described anew, not read from the cache
    other = compose(smoke(cache_dir, "explainer=milan", "neurons.ids=[5]",
                          "explainer.random_encoder=resnet18"))
    with caplog.at_level(logging.INFO, logger="cosy_bench"):
        run(other, tmp_path / "other")
    assert "describing 1 units" in caplog.text
