"""cosy_bench.report.statistics: the paired bootstrap interval, the Wilcoxon p-value and
which runs are compared."""

from __future__ import annotations

import math

import numpy as np
import pytest
from omegaconf import OmegaConf
from scipy.stats import wilcoxon

from cosy_bench.record import RunRecord
from cosy_bench.report.statistics import bootstrap_mean_ci, compare, wilcoxon_p


def test_bootstrap_interval_is_seeded_and_covers_the_mean():
    rng = np.random.default_rng(1)
    diff = rng.normal(0.1, 0.2, size=80)
    low, high = bootstrap_mean_ci(diff, resamples=2000, seed=0)
    assert (low, high) == bootstrap_mean_ci(diff, resamples=2000, seed=0)
    assert low < diff.mean() < high
    # about the normal interval of the mean: 1.96 * sd / sqrt(n) on each side
    half = 1.96 * diff.std(ddof=1) / math.sqrt(diff.size)
    assert (high - low) / 2 == pytest.approx(half, rel=0.15)
    assert all(math.isnan(x) for x in bootstrap_mean_ci(np.array([])))


def test_bootstrap_coverage_in_a_seeded_simulation():
    rng = np.random.default_rng(7)
    hits = 0
    for seed in range(200):
        diff = rng.normal(0.3, 1.0, size=50)
        low, high = bootstrap_mean_ci(diff, resamples=2000, seed=seed)
        hits += low <= 0.3 <= high
    assert hits / 200 >= 0.9


def test_wilcoxon_p_is_scipys():
    rng = np.random.default_rng(2)
    diff = rng.normal(0.2, 1.0, size=30)
    assert wilcoxon_p(diff) == pytest.approx(wilcoxon(diff).pvalue)
    assert wilcoxon_p(np.zeros(5)) == 1.0
    assert math.isnan(wilcoxon_p(np.array([0.3])))


def _record(method: str, scores: dict[int, float], prompt: str = "p5") -> RunRecord:
    meta = {"model": "m", "layer": "l", "explainer": method, "generator": "g", "prompt": prompt,
            "weights": "w", "dataset_id": "d", "n_images": 50}
    rows = [{"neuron": k, "explanation": "x", "auc": v, "mad": 2 * v} for k, v in scores.items()]
    return RunRecord(rows, {"run": meta}, "", OmegaConf.create({}))


def test_compare_pairs_methods_of_one_setting_over_common_neurons():
    a = _record("invert", {k: 0.9 for k in range(20)})
    b = _record("random", {k: 0.5 + 0.01 * (k % 3) for k in range(5, 25)})
    other_prompt = _record("milan", {k: 0.7 for k in range(20)}, prompt="p1")
    comps = compare([b, other_prompt, a], resamples=2000)
    assert {(c.a, c.b, c.score) for c in comps} == {("invert", "random", "auc"),
                                                     ("invert", "random", "mad")}
    auc = next(c for c in comps if c.score == "auc")
    assert auc.n == 15  # neurons 5..19
    expected = np.mean([0.9 - (0.5 + 0.01 * (k % 3)) for k in range(5, 20)])
    assert auc.mean == pytest.approx(expected)
    assert auc.ci_low <= auc.mean <= auc.ci_high and auc.significant
    assert auc.p < 0.001
    # no difference: not significant
    same = compare([_record("invert", {k: 0.6 + 0.01 * k for k in range(10)}),
                    _record("random", {k: 0.6 + 0.01 * k for k in range(10)})])
    assert not any(c.significant for c in same) and same[0].p == 1.0
