"""The scorer registry: one entry per scorer, the yamls agree with it, the public scorers take
the sorted-control path with the reference values, lower-is-better scores rank the other
way in the leaderboard and the paired comparisons, and the scorers' doctests pass."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import numpy as np
import pytest
import torch
from helpers import CONF
from omegaconf import OmegaConf
from sklearn.metrics import roc_auc_score

import cosy_bench.scorers
from cosy_bench.record import RunRecord
from cosy_bench.scorers import REGISTRY, SCORERS, Scorer, higher_is_better, register, score_all
from cosy_bench.scorers import registry as reg


def test_each_yaml_agrees_with_the_registry():
    yamls = sorted(CONF.glob("scorer/*.yaml"))
    assert len(yamls) >= 11
    for path in yamls:
        node = OmegaConf.load(path)
        (name,) = node.keys()
        assert name in REGISTRY, path
        assert bool(node[name].higher_is_better) == REGISTRY[name].higher_is_better, path
        reg.from_config(name, node[name])  # the pipeline's check passes


def test_registry_declares_columns_directions_and_paths():
    assert [n for n, s in REGISTRY.items() if s.sorted] == ["auc", "mad", "utest", "utest_p"]
    assert [n for n, s in REGISTRY.items() if s.text] == ["label_similarity"]
    assert REGISTRY["utest"].columns == ("utest_u", "utest_p")
    assert higher_is_better("utest_u") is True and higher_is_better("utest_p") is False
    assert higher_is_better("accuracy") is True and higher_is_better("n_images") is None
    assert "label_similarity" not in SCORERS and set(SCORERS) == set(REGISTRY) - {
        "label_similarity"}
    with pytest.raises(ValueError, match="aggregation 'max'"):
        Scorer("x", abs, ("x",), aggregation="max")
    with pytest.raises(ValueError, match="registered already"):
        register(Scorer("auc", abs, ("auc",)))
    with pytest.raises(ValueError, match=r"higher_is_better=False in its yaml.*make them agree"):
        reg.from_config("auc", {"higher_is_better": False})
    with pytest.raises(ValueError, match="unknown scorer 'nope'"):
        reg.from_config("nope", {"higher_is_better": True})


def test_public_auc_and_score_all_search_a_sorted_control_and_match_sklearn():
    gen = torch.Generator().manual_seed(3)
    control, concept = torch.rand(400, 7, generator=gen), torch.rand(30, 7, generator=gen) + 0.2
    labels = np.r_[np.zeros(400), np.ones(30)]
    ref = [roc_auc_score(labels, np.r_[control[:, k], concept[:, k]]) for k in range(7)]
    np.testing.assert_allclose(SCORERS["auc"](control, concept).numpy(), ref, rtol=0, atol=1e-12)
    out = score_all(["auc", "mad"], control, concept)
    assert torch.equal(out["auc"], SCORERS["auc"](control, concept))
    c, x = control.double().numpy(), concept.double().numpy()
    np.testing.assert_allclose(out["mad"].numpy(), (x.mean(0) - c.mean(0)) / c.std(0, ddof=1),
                               rtol=1e-12)
    # the sorted path: the same values as searching a SortedControl built by hand
    from cosy_bench.scorers.sorted import score_sorted, sort_control
    assert torch.equal(out["auc"], score_sorted(["auc"], sort_control(control), concept)["auc"])


def test_a_registered_scorer_runs_through_score_all():
    def spread(control, concept):  # lower is better: a narrower concept spread
        return concept.double().std(dim=0) / control.double().std(dim=0)

    register(Scorer("test_spread", spread, ("test_spread",), higher_is_better=False),
             replace=True)
    try:
        control, concept = torch.randn(50, 3), torch.randn(8, 3)
        out = score_all(["auc", "test_spread"], control, concept)
        assert list(out) == ["auc", "test_spread"]
        assert torch.equal(out["test_spread"], spread(control, concept))
        assert higher_is_better("test_spread") is False
    finally:
        reg._REGISTRY.pop("test_spread")


def _record(method: str, values: dict[int, float], cfg: dict | None = None) -> RunRecord:
    meta = {"model": "m", "layer": "l", "explainer": method, "generator": "g", "prompt": "p",
            "weights": "w", "dataset_id": "d", "n_images": 50, "n_neurons": len(values)}
    rows = [{"neuron": k, "explanation": "x", "auc": 0.5, "utest_p": v}
            for k, v in values.items()]
    mean = float(np.mean(list(values.values())))
    summary = {"run": meta, "auc": {"mean": 0.5, "std": 0.0, "n": len(values)},
               "utest_p": {"mean": mean, "std": 0.0, "n": len(values)}}
    return RunRecord(rows, summary, "", OmegaConf.create(cfg or {}))


def test_lower_is_better_ranks_the_other_way_in_leaderboard_and_comparisons():
    from cosy_bench.leaderboard import sort_rows, table_row
    from cosy_bench.report.statistics import compare

    good = _record("invert", {k: 0.001 * (1 + k % 3) for k in range(20)})
    bad = _record("random", {k: 0.4 + 0.01 * (k % 5) for k in range(20)})
    rows = [table_row(bad), table_row(good)]
    assert [r["method"] for r in sort_rows(rows, "utest_p")] == ["invert", "random"]
    # a higher-is-better score of the same values ranks the other way
    for r in rows:
        r["higher_is_better"]["utest_p"] = True
    assert [r["method"] for r in sort_rows(rows, "utest_p")] == ["random", "invert"]

    (comp,) = [c for c in compare([good, bad]) if c.score == "utest_p"]
    assert (comp.a, comp.b) == ("invert", "random") and comp.mean < 0 and comp.significant
    assert comp.higher_is_better is False and comp.better == "invert"
    assert comp.as_row()["better"] == "invert"
    (auc,) = [c for c in compare([good, bad]) if c.score == "auc"]
    assert auc.better is None  # equal scores


def test_a_scorer_unknown_here_takes_its_direction_from_the_runs_config():
    rec = _record("invert", {0: 1.0}, {"scorer": {"my_loss": {"higher_is_better": False}}})
    assert rec.higher_is_better("my_loss") is False
    assert rec.higher_is_better("utest_p") is False and rec.higher_is_better("other") is True


def test_scorers_doctests_pass():
    modules = [importlib.import_module(f"cosy_bench.scorers.{m.name}")
               for m in pkgutil.iter_modules(cosy_bench.scorers.__path__)]
    attempted = {}
    for module in modules:
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module.__name__
        attempted[module.__name__.rsplit(".", 1)[1]] = result.attempted
    for name in ("cosy", "sorted", "registry", "neuron_eval", "intervals", "label_similarity"):
        assert attempted[name] > 0, name
