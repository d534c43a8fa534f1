"""INVERT core against straightforward per-neuron references (sklearn ``roc_auc_score``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import mannwhitneyu, rankdata
from sklearn.metrics import roc_auc_score

from cosy_bench.explainers import auroc
from cosy_bench.explainers.auroc import auroc_matrix, midranks
from cosy_bench.explainers.formulas import format_formula, formula_indicator
from cosy_bench.explainers.invert import invert

# ----------------------------------------------------------------------------------------------
# references
# ----------------------------------------------------------------------------------------------


def _pair_auc(z: np.ndarray, act: np.ndarray) -> float:
    """AUROC by its definition: P(positive > negative) + P(tie) / 2 over all pairs."""
    pos, neg = act[z][:, None], act[~z][None, :]
    return float(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size))


def _ref_score(z: np.ndarray, act: np.ndarray, sign: float, auc=roc_auc_score) -> float:
    # rounded so that AUCs equal in exact arithmetic compare equal (sklearn's rounding differs)
    return sign * round(float(auc(z, act)), 12)


def _ref_beam(act, y, length, beam, lo, hi, sign, auc=roc_auc_score):
    """Per-neuron beam search as the authors' ``explain_representation`` (plus de-duplication
    of identical indicators, keeping the first in candidate order). Returns the final beam,
    best first, as ``[(terms, auc, fraction), ...]``."""
    n, c = y.shape

    def ok(z):
        n1 = int(z.sum())
        return 0 < n1 < n and lo <= n1 / n <= hi

    def top(cands):
        seen, uniq = set(), []
        for cand in cands:
            key = cand[1].tobytes()
            if key not in seen:
                seen.add(key)
                uniq.append(cand)
        uniq.sort(key=lambda e: -e[0])  # stable: ties keep candidate order
        return uniq[:beam]

    atoms = [(y[:, j], [(None, j, False)]) for j in range(c)]
    atoms += [(~y[:, j], [(None, j, True)]) for j in range(c)]
    cur = top([(_ref_score(z, act, sign, auc), z, t) for z, t in atoms if ok(z)])
    for _ in range(1, length):
        cands = list(cur)
        for _, z, t in cur:
            for op in ("AND", "OR"):
                for neg in (False, True):
                    for j in range(c):
                        lit = ~y[:, j] if neg else y[:, j]
                        new = (z & lit) if op == "AND" else (z | lit)
                        if ok(new) and new.sum() != z.sum():
                            score = _ref_score(new, act, sign, auc)
                            cands.append((score, new, t + [(op, j, neg)]))
        cur = top(cands)
    return [(t, float(auc(z, act)), z.mean()) for _, z, t in cur]


def _data(n=300, c=6, k=8, density=0.25, seed=0, grid=None):
    rng = np.random.default_rng(seed)
    y = rng.random((n, c)) < density
    a = rng.normal(size=(n, k))
    if grid:
        a = np.round(a * grid) / grid  # many ties
    return a, y


def _names(c):
    return [f"concept {j}" for j in range(c)]


# ----------------------------------------------------------------------------------------------
# ranks and AUROC matrix
# ----------------------------------------------------------------------------------------------


def test_midranks_match_scipy_with_ties():
    rng = np.random.default_rng(1)
    x = np.round(rng.normal(size=(5, 200)) * 3) / 3
    ranks, tie = midranks(torch.from_numpy(x))
    np.testing.assert_array_equal(ranks.numpy(), rankdata(x, axis=1))
    for row, t in zip(x, tie.numpy(), strict=True):
        _, counts = np.unique(row, return_counts=True)
        assert t == pytest.approx(float((counts**3 - counts).sum()))


@pytest.mark.parametrize("sparse", [False, True])
def test_auroc_matrix_matches_sklearn(sparse, monkeypatch):
    monkeypatch.setattr(auroc, "_SPARSE_MAX_DENSITY", 1.0 if sparse else 0.0)
    a, y = _data(n=250, c=7, k=9, grid=4)
    y[:, 2] = False  # present in no sample
    y[:, 5] = True  # present in all samples
    got = auroc_matrix(torch.from_numpy(a).float(), torch.from_numpy(y), chunk_size=4).numpy()
    assert got.shape == (9, 7)
    assert np.isnan(got[:, [2, 5]]).all()
    for k in range(9):
        for c in (0, 1, 3, 4, 6):
            ref = roc_auc_score(y[:, c], a[:, k].astype(np.float32))
            assert got[k, c] == pytest.approx(ref, rel=1e-9)


def test_auroc_matrix_rejects_nan():
    with pytest.raises(ValueError, match="finite"):
        auroc_matrix(torch.tensor([[math.nan], [1.0]]), torch.tensor([[True], [False]]))


# ----------------------------------------------------------------------------------------------
# formulas
# ----------------------------------------------------------------------------------------------


def test_formula_syntax_and_indicator():
    names = ["dog", "cat", "grass", "sky"]
    terms = [(None, 0, False), ("OR", 1, False), ("AND", 2, True), ("OR", 3, False)]
    assert format_formula(terms[:1], names) == "dog"
    assert format_formula([(None, 1, True)], names) == "NOT cat"
    assert format_formula(terms[:2], names) == "dog OR cat"
    assert format_formula(terms[:3], names) == "(dog OR cat) AND NOT grass"
    assert format_formula(terms, names) == "((dog OR cat) AND NOT grass) OR sky"
    y = torch.tensor([[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1], [0, 1, 0, 0]], dtype=torch.bool)
    got = formula_indicator(terms, y)
    want = ((y[:, 0] | y[:, 1]) & ~y[:, 2]) | y[:, 3]
    assert torch.equal(got, want)
    assert got.tolist() == [True, False, True, True]


# ----------------------------------------------------------------------------------------------
# length 1
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["positive", "negative"])
@pytest.mark.parametrize("max_fraction", [0.5, 1.0])
def test_length1_matches_reference(mode, max_fraction):
    a, y = _data(n=400, c=9, k=10, grid=8, seed=2)
    a[:, 0] += 2.0 * y[:, 3]  # planted: concept 3
    a[:, 1] -= 2.0 * y[:, 4]  # planted negative: concept 4 (or NOT 4)
    y[:, 7] = False  # present nowhere
    y[:, 8] = True  # present everywhere
    sign = 1.0 if mode == "positive" else -1.0
    recs = invert(torch.from_numpy(a), torch.from_numpy(y), _names(9), length=1,
                  max_fraction=max_fraction, mode=mode)
    assert len(recs) == 10
    for k, rec in enumerate(recs):
        ref = _ref_beam(a[:, k], y, 1, 1, 0.0, max_fraction, sign)[0]
        assert rec["label"] == format_formula(ref[0], _names(9))
        assert rec["auc"] == pytest.approx(ref[1], rel=1e-9)
        assert rec["fraction"] == pytest.approx(ref[2])
        assert rec["length"] == 1
        assert "concept 7" not in rec["label"] and "concept 8" not in rec["label"]
    if mode == "positive":
        assert recs[0]["label"] == "concept 3"
        assert recs[1]["label"] == ("NOT concept 4" if max_fraction == 1.0 else recs[1]["label"])
    else:
        assert recs[1]["label"] == "concept 4"


def test_negation_recovered():
    rng = np.random.default_rng(3)
    y = rng.random((500, 5)) < 0.3
    a = rng.normal(size=(500, 2)) + 3.0 * ~y[:, [2, 0]]  # fires except on concept 2 / 0
    recs = invert(torch.from_numpy(a), torch.from_numpy(y), list("abcde"), max_fraction=1.0)
    assert [r["label"] for r in recs] == ["NOT c", "NOT a"]
    assert all(r["auc"] > 0.95 for r in recs)
    assert recs[0]["terms"] == [(None, 2, True)]


def test_no_formula_passes_the_coverage_rule():
    y = torch.ones(50, 3, dtype=torch.bool)
    y[:5, 0] = False  # coverage 0.9: above max_fraction; its negation is 0.1 < min_fraction
    a = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    for rec in invert(a, y, ["x", "y", "z"], length=2, min_fraction=0.2, pvalue=True):
        assert rec["label"] is None and math.isnan(rec["auc"]) and math.isnan(rec["pvalue"])


# ----------------------------------------------------------------------------------------------
# beam search
# ----------------------------------------------------------------------------------------------


def _planted(seed=4):
    rng = np.random.default_rng(seed)
    n, c = 1500, 6
    y = rng.random((n, c)) < 0.2
    a = rng.normal(size=(n, 5))
    a[:, 0] += 3.0 * (y[:, 1] & y[:, 2])
    a[:, 1] += 3.0 * (y[:, 3] | y[:, 4])
    a[:, 2] += 3.0 * (y[:, 0] & ~y[:, 5])
    a[:, 3] -= 3.0 * (y[:, 1] | y[:, 5])
    return a, y


def _canon(terms):
    ops = {op for op, _, _ in terms[1:]}
    return ops.pop() if len(ops) == 1 else None, {(j, neg) for _, j, neg in terms}


def test_length2_recovers_planted_and_or_units():
    a, y = _planted()
    recs = invert(torch.from_numpy(a), torch.from_numpy(y), list("abcdef"), length=2,
                  min_fraction=0.02)
    assert _canon(recs[0]["terms"]) == ("AND", {(1, False), (2, False)})
    assert recs[0]["label"] in ("b AND c", "c AND b")
    assert _canon(recs[1]["terms"]) == ("OR", {(3, False), (4, False)})
    assert recs[1]["label"] in ("d OR e", "e OR d")
    assert recs[2]["label"] == "a AND NOT f"
    for rec in recs[:3]:
        assert rec["auc"] > 0.95 and rec["length"] == 2
        z = formula_indicator(rec["terms"], torch.from_numpy(y)).numpy()
        assert rec["auc"] == pytest.approx(roc_auc_score(z, a[:, rec["neuron"]]), rel=1e-9)
        assert rec["fraction"] == pytest.approx(z.mean())
    neg = invert(torch.from_numpy(a), torch.from_numpy(y), list("abcdef"), length=2,
                 min_fraction=0.02, mode="negative")
    assert _canon(neg[3]["terms"]) == ("OR", {(1, False), (5, False)})
    assert neg[3]["auc"] < 0.05


@pytest.mark.parametrize(
    ("mode", "lo", "hi"), [("positive", 0.05, 0.6), ("negative", 0.05, 0.6), ("positive", 0, 1)]
)
def test_beam_search_matches_reference(mode, lo, hi):
    a, y = _data(n=200, c=5, k=5, density=0.3, seed=5, grid=5)
    a[:, 0] += 1.5 * (y[:, 0] & ~y[:, 1])
    a[:, 1] += 1.5 * (y[:, 2] | y[:, 3]) - 1.0 * y[:, 0]
    y[:, 4] = False  # a concept present nowhere takes part in the search without harm
    sign = 1.0 if mode == "positive" else -1.0
    recs = invert(torch.from_numpy(a), torch.from_numpy(y), _names(5), length=3, beam_size=4,
                  min_fraction=lo, max_fraction=hi, mode=mode, chunk_size=2,
                  return_beam=True)
    for k, rec in enumerate(recs):
        # the pairwise definition of AUROC (checked against sklearn below) keeps this fast
        ref = _ref_beam(a[:, k], y, 3, 4, lo, hi, sign, auc=_pair_auc)
        assert len(rec["beam"]) == len(ref) == 4
        assert rec["label"] == rec["beam"][0]["label"] == format_formula(ref[0][0], _names(5))
        for got, (terms, auc, frac) in zip(rec["beam"], ref, strict=True):
            assert got["terms"] == terms
            assert got["auc"] == pytest.approx(auc, rel=1e-9)
            assert got["fraction"] == pytest.approx(frac)
        z = formula_indicator(rec["terms"], torch.from_numpy(y)).numpy()
        assert rec["auc"] == pytest.approx(roc_auc_score(z, a[:, k]), rel=1e-9)


def test_chunking_and_sparse_path_do_not_change_results(monkeypatch):
    a, y = _planted(seed=6)
    args = (torch.from_numpy(a).float(), torch.from_numpy(y), list("abcdef"))
    kw = dict(length=3, beam_size=4, min_fraction=0.02, pvalue=True)
    base = invert(*args, **kw)
    assert invert(*args, chunk_size=1, **kw) == base
    monkeypatch.setattr(auroc, "_SPARSE_MAX_DENSITY", 1.0)
    assert invert(*args, chunk_size=2, **kw) == base


def test_pvalues_match_scipy_asymptotic():
    a, y = _planted(seed=7)
    a = np.round(a * 2) / 2  # ties
    recs = invert(torch.from_numpy(a), torch.from_numpy(y), list("abcdef"), length=2,
                  min_fraction=0.02, pvalue=True)
    for rec in recs:
        z = formula_indicator(rec["terms"], torch.from_numpy(y)).numpy()
        act = a[:, rec["neuron"]]
        ref = mannwhitneyu(act[~z], act[z], method="asymptotic").pvalue
        assert rec["pvalue"] == pytest.approx(ref, rel=1e-6, abs=1e-300)


def test_input_validation():
    a, y = torch.randn(10, 2), torch.rand(10, 3) < 0.5
    with pytest.raises(ValueError, match="concept names"):
        invert(a, y, ["a", "b"])
    with pytest.raises(ValueError, match="mode"):
        invert(a, y, ["a", "b", "c"], mode="both")
    with pytest.raises(ValueError, match="same N"):
        invert(a[:5], y, ["a", "b", "c"])
