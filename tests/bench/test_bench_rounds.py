"""``bench rounds`` at a small size in the toy world: auto vs fixed, the retest, the totals."""

from __future__ import annotations

import re

import numpy as np
import torch
from stamped import assert_stamped

from cosy_bench.bench.__main__ import main as bench_main
from cosy_bench.bench.rounds import _ranking
from cosy_bench.scorers.cosy import auc


def test_bench_runs_at_small_size(tmp_path, capsys):
    argv = ["rounds", "--layers", "concepts", "--explainers", "ground_truth,random",
            "--max", "6", "--round", "3", "--cache", str(tmp_path / "cache"),
            "--markdown", str(tmp_path / "rounds.md"),
            "--extra", "dataset.n=300", "neurons.ids=[0,3,7]"]
    assert bench_main(argv) == 0
    out = capsys.readouterr().out
    assert_stamped(tmp_path / "rounds.md", argv, out, "layer     explainer")
    row = re.search(r"^concepts\s+ground_truth\s+3\s+(\d+)\s+18\s+\S+x\s+\S+\s+(\S+)", out, re.M)
    assert row and int(row.group(1)) in (9, 12, 15, 18), out
    assert row.group(2) != "n/a", out  # the retest ran (fixed 6 vs images 6-11)
    assert re.search(r"^concepts\s+random\s+3\s+\d+\s+18\s", out, re.M), out
    layer = re.search(r"^concepts\s+all 6 scores: spearman auto vs fixed (-?[\d.]+)", out, re.M)
    assert layer and -1 <= float(layer.group(1)) <= 1, out
    assert "ranking auto ground_truth > random" in out
    assert re.search(r"^total: \d+ images with auto vs 36 fixed .* all 6 per-neuron AUCs", out,
                     re.M), out


def test_auc_of_the_second_half_is_twice_the_whole_minus_the_first():
    """The retest column's identity: AUC is a mean over concept images (ties included)."""
    g = torch.Generator().manual_seed(0)
    control = torch.randint(0, 20, (300, 4), generator=g).double()  # many ties
    concept = torch.randint(5, 25, (20, 4), generator=g).double()
    whole, first, second = auc(control, concept), auc(control, concept[:10]), \
        auc(control, concept[10:])
    torch.testing.assert_close(2 * whole - first, second, rtol=0, atol=1e-12)


def test_a_ranking_flip_counts_only_where_the_fixed_difference_is_significant():
    g = np.random.default_rng(0)
    base = g.uniform(0.6, 0.9, 40)
    fixed = {"a": base + 0.001 + g.normal(0, 0.02, 40), "b": base + g.normal(0, 0.02, 40),
             "c": base - 0.2}
    auto = {"a": fixed["a"] - 0.01, "b": fixed["b"], "c": fixed["c"]}  # a and b swap
    text, ok = _ranking(auto, fixed)
    assert ok and text.startswith("1 pair(s) ordered differently, none significant"), text
    assert "a vs b" in text
    auto["c"] = fixed["a"] + 0.05  # c jumps above a and b: fixed says 0.2 below, significant
    text, ok = _ranking(auto, fixed)
    assert not ok and "2 of them significant" in text, text
    assert _ranking(fixed, fixed) == ("same", True)
