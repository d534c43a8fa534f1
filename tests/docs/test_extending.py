"""The worked examples of docs/extending.md run through the real pipeline: an explainer, a
scorer and a control set on the toy world; a timm model and a diffusers pipeline offline."""

from __future__ import annotations

import doctest
import importlib

import pandas as pd
import pytest
from helpers import HAS_TOY_MODEL, REPO

import cosy_bench
from cosy_bench.scorers import registry

EXAMPLES = REPO / "docs" / "examples"
SEARCHPATH = f"hydra.searchpath=[file://{EXAMPLES / 'conf'}]"


@pytest.fixture
def examples_importable(monkeypatch):
    """docs/examples on sys.path, as PYTHONPATH=docs/examples would put it."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    yield
    registry._REGISTRY.pop("top_rate", None)  # registered by the run from its yaml


def test_every_example_is_documented_and_composes(examples_importable):
    from cosy_bench.api import compose_config

    page = (REPO / "docs" / "extending.md").read_text(encoding="utf-8")
    for path in sorted(EXAMPLES.rglob("*.py")) + sorted(EXAMPLES.rglob("*.yaml")):
        assert str(path.relative_to(REPO / "docs")) in page, path
    cfg, _ = compose_config(SEARCHPATH, "explainer=mean_difference", "scorer=[auc,top_rate]",
                            "dataset=fake_control", "generator=tiny_pipeline",
                            "model=resnet10t", "debug=smoke")
    assert cfg.explainer._target_ == "my_explainer.MeanDifferenceExplainer"
    assert cfg.scorer.top_rate.function == "my_scorer.top_rate"
    assert cfg.model.build.name == "resnet10t"
    assert doctest.testmod(importlib.import_module("my_scorer")).failed == 0


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TOY_MODEL, reason="needs the toy world")
def test_explainer_scorer_and_dataset_examples_run_on_the_toy_world(examples_importable,
                                                                     tmp_path):
    record = cosy_bench.evaluate(
        SEARCHPATH, "explainer=mean_difference", "scorer=[auc,mad,top_rate]",
        "dataset=fake_control", "layer=concepts", "neurons.ids=[0,1,2,3,4]", "n_images=4",
        "probe.n=1000",
        "logger=none", f"paths.cache_dir={tmp_path / 'cache'}", output_dir=tmp_path / "run")
    results = pd.read_csv(tmp_path / "run" / "results.csv")
    # the toy world's concept units: the mean-difference explainer finds their concepts
    assert (results["explanation"] == results["ground_truth"]).all()
    assert results["top_rate"].between(0, 1).all() and results["auc"].min() > 0.9
    assert record.summary["run"]["dataset"] == "fakedata"
    assert record.summary["run"]["n_control"] == 32
    assert registry.REGISTRY["top_rate"].higher_is_better


@pytest.mark.slow
def test_timm_model_and_diffusers_pipeline_examples_run(examples_importable, tmp_path):
    record = cosy_bench.evaluate(
        SEARCHPATH, "model=resnet10t", "debug=smoke", "generator=tiny_pipeline",
        "explainer=random", "layer=global_pool", f"paths.cache_dir={tmp_path / 'cache'}",
        output_dir=tmp_path / "run")
    assert record.summary["run"]["model"] == "resnet10t"
    assert record.summary["run"]["generator"] == "tiny_pipeline"
    assert len(record.results) == 3 and record.results["auc"].between(0, 1).all()
    images = list((tmp_path / "cache").rglob("*.png"))
    assert len(images) >= 2  # the pipeline made the images
