"""The toy world as a check of explainers and scorers: units with known concepts.

Acceptance of the pipeline, toy-world and explainer issues on the shipped toy CNN:
true explanations score high, random ones near chance, INVERT names >= 90% and
CLIP-Dissect (with the shipped toy CLIP) >= 70% of the concept units correctly.
"""

from __future__ import annotations

import pytest

from cosy_bench.pipeline import run
from cosy_bench.toyworld.vocab import CONCEPTS


@pytest.fixture(scope="module")
def cache_dir(toy_cache):
    return toy_cache


def toy(cache_dir, *extra):
    # fewer images than the default 50 keep the suite fast; the figures hold at 50 too
    return [f"paths.cache_dir={cache_dir}", "logger=none", "n_images=20", *extra]


@pytest.mark.parametrize("layer", ["output", "concepts"])
def test_true_explanations_score_high_and_random_ones_near_chance(compose, cache_dir, tmp_path,
                                                                 layer):
    true = run(compose(toy(cache_dir, f"layer={layer}", "explainer=ground_truth")),
               tmp_path / "true").summary
    # random: a seeded draw from the run's concept set (the toy vocabulary), as by default
    rand = run(compose(toy(cache_dir, f"layer={layer}", "explainer=random")),
               tmp_path / "random").summary
    assert true["auc"]["mean"] >= 0.95
    assert true["ground_truth_match"] == 1.0
    assert abs(rand["auc"]["mean"] - 0.5) <= 0.1
    assert true["mad"]["mean"] > rand["mad"]["mean"] + 1.0


def test_invert_names_the_concept_units(compose, cache_dir, tmp_path):
    summary = run(compose(toy(cache_dir, "layer=concepts", "explainer=invert")),
                  tmp_path).summary
    assert summary["run"]["n_neurons"] == len(CONCEPTS)
    assert summary["ground_truth_match"] >= 0.9


def test_clip_dissect_with_the_toy_clip_names_the_concept_units(compose, cache_dir, tmp_path):
    summary = run(compose(toy(cache_dir, "layer=concepts", "explainer=clip_dissect")),
                  tmp_path).summary
    assert summary["ground_truth_match"] >= 0.7


def test_milan_with_the_shipped_toy_decoder_names_the_concept_units(compose, cache_dir, tmp_path):
    cfg = compose(toy(cache_dir, "layer=concepts", "explainer=milan"))
    assert cfg.explainer.checkpoint == "toyworld"  # the toy model names its own decoder
    report = run(cfg, tmp_path)
    assert report.summary["run"]["n_neurons"] == len(CONCEPTS)
    assert report.summary["ground_truth_match"] >= 0.5
    texts = [row["explanation"] for row in report.rows]
    assert len(texts) == len(CONCEPTS) and all(t and t == t.lower() for t in texts)
    assert all("milan_score" in row for row in report.rows)
