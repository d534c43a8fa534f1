"""Meta-evaluation: NeuronEval's verdicts reproduced in its simulated setting, and the toy
world's tests on planted activations (no model needed)."""

from __future__ import annotations

import pytest
import torch

from cosy_bench.experiments.meta_eval import (
    NEURON_EVAL_VERDICTS,
    auc_with_clean_negatives,
    simulated,
    table,
    toy,
    verdicts,
)

METRICS = ["auc", "mad", "utest", "correlation", "cosine", "auprc", "inverse_auprc", "f1",
           "iou", "balanced_accuracy"]


def test_simulated_setting_reproduces_neuron_evals_verdicts():
    # NeuronEval's gammas down to 0.1% (0.01% needs its 500k inputs: `experiment=meta_eval`)
    rows = simulated(METRICS, [0.499, 0.01, 0.001], n_inputs=20_000, seeds=5, epsilon=0.001)
    v = verdicts(rows)
    for name, ref in NEURON_EVAL_VERDICTS.items():
        assert (v[name]["missing"], v[name]["extra"]) == ref, name
        assert v[name]["agrees"] is True
    # CoSy's AUC stops falling under missing labels at 0.1% and below, as NeuronEval warns
    auc_missing = {r["gamma"]: r["pass_rate"] for r in rows
                   if r["metric"] == "auc" and r["test"] == "missing"}
    assert auc_missing[0.01] == 1.0 and auc_missing[0.001] == 0.0
    assert "agrees" in table(rows, v)


def test_toy_tests_on_planted_units_and_the_auc_of_clean_negatives():
    g = torch.Generator().manual_seed(0)
    n, m, k = 500, 40, 3
    shows = torch.rand(n, k, generator=g) < 0.2
    control = torch.randn(n, k, generator=g) + 2.0 * shows  # scenes showing it fire too
    concept = torch.randn(m, k, generator=g) + 2.5
    rows = toy(["auc", "correlation", "f1"], control, concept, shows, seeds=5, epsilon=0.001)
    rates = {(r["metric"], r["test"]): r["pass_rate"] for r in rows}
    assert rates[("correlation", "missing")] == 1.0 and rates[("correlation", "extra")] == 1.0
    assert rates[("auc", "extra")] == 1.0
    moved = auc_with_clean_negatives(control, concept, shows)
    assert moved["auc_clean_negatives"] > moved["auc_all_negatives"]
    assert 0.15 < moved["share_of_control_showing_concept"] < 0.25


@pytest.mark.slow
def test_experiment_meta_eval_writes_the_csv_and_prints_the_table(compose, tmp_path, capsys):
    """``python -m cosy_bench experiment=meta_eval`` at a small size, through its task
    (``cfg.task`` as cosy_bench.run calls it): the csv's columns and values, the json, the
    printed table."""
    import csv
    import json

    from hydra.utils import instantiate

    gammas = [0.499, 0.01]
    metrics = ["auc", "correlation", "f1"]
    cfg = compose(["experiment=meta_eval", f"paths.cache_dir={tmp_path / 'cache'}",
                   "dataset.n=300", "n_images=4", f"meta_eval.metrics=[{','.join(metrics)}]",
                   f"meta_eval.simulated.gammas=[{','.join(map(str, gammas))}]",
                   "meta_eval.simulated.n_inputs=4000", "meta_eval.simulated.seeds=3",
                   "meta_eval.toy.seeds=3"])
    out = tmp_path / "run"
    report = instantiate(cfg.task)(cfg, out)
    printed = capsys.readouterr().out

    with open(out / "meta_eval.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["setting", "gamma", "test", "metric", "pass_rate", "mean_diff"]
    sim = [r for r in rows if r["setting"] == "simulated"]
    toy_rows = [r for r in rows if r["setting"] == "toy"]
    assert {(float(r["gamma"]), r["test"], r["metric"]) for r in sim} == {
        (g, t, m) for g in gammas for t in ("missing", "extra") for m in metrics}
    assert len(sim) == 2 * 2 * 3
    assert {(r["test"], r["metric"]) for r in toy_rows} == {
        (t, m) for t in ("missing", "extra") for m in metrics}
    # the toy world's 25 concept units, 4 images each, against 300 scenes: alpha = m / (n + m)
    (alpha,) = {float(r["gamma"]) for r in toy_rows}
    assert alpha == pytest.approx(4 / 304)
    assert all(0.0 <= float(r["pass_rate"]) <= 1.0 for r in rows)
    rate = {(r["setting"], r["gamma"], r["test"], r["metric"]): float(r["pass_rate"])
            for r in rows}
    # NeuronEval: correlation passes both tests; AUC passes extra labels
    for test in ("missing", "extra"):
        assert rate[("simulated", "0.499", test, "correlation")] == 1.0
    assert rate[("simulated", "0.499", "extra", "auc")] == 1.0
    # a planted unit's synthetic images are its strongest inputs: moving half of them to the
    # negatives lowers the correlation on every draw
    assert rate[("toy", toy_rows[0]["gamma"], "missing", "correlation")] == 1.0

    saved = json.loads((out / "meta_eval.json").read_text())
    assert saved["table"] == report["table"] and len(saved["rows"]) == len(rows)
    assert saved["verdicts"]["correlation"]["agrees"] is True
    neg = saved["toy_auc_negatives"]
    assert neg["auc_clean_negatives"] >= neg["auc_all_negatives"]
    assert 0.0 < neg["share_of_control_showing_concept"] < 0.5

    # the printed table: a header, one line per metric with its pass rates and verdicts
    assert "NeuronEval sanity tests: pass rate" in printed
    lines = printed.splitlines()
    (header,) = [ln for ln in lines if ln.lstrip().startswith("metric")]
    for col in ("missing g=0.499", "extra g=0.01", "toy missing", "toy extra", "NeuronEval",
                "agrees"):
        assert col in header
    for metric in metrics:
        (line,) = [ln for ln in lines if ln.split()[:1] == [metric]]
        agrees = {True: "yes", False: "NO"}[saved["verdicts"][metric]["agrees"]]
        assert line.split()[-2:] == [
            "/".join("pass" if p else "FAIL" for p in NEURON_EVAL_VERDICTS[metric]), agrees]
        assert f"{rate[('simulated', '0.499', 'missing', metric)]:.0%}" == line.split()[1]
    assert f"{neg['auc_all_negatives']:.4f} vs {neg['auc_clean_negatives']:.4f}" in printed
