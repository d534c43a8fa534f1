"""cosy_bench.scorers against scikit-learn, scipy and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import near_constant_control
from scipy.stats import mannwhitneyu
from sklearn.metrics import roc_auc_score

from cosy_bench.scorers import (
    REGISTRY,
    SCORERS,
    auc,
    mad,
    near_constant,
    score_all,
    utest,
    utest_p,
    utest_u,
)


def _tied_data(seed: int, n: int, m: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer-valued activations: heavy ties within and across control and concept."""
    gen = torch.Generator().manual_seed(seed)
    control = torch.randint(0, 6, (n, k), generator=gen).float()
    concept = torch.randint(0, 6, (m, k), generator=gen).float() + torch.randint(
        0, 3, (1, k), generator=gen
    )
    return control, concept


def _reference(control: torch.Tensor, concept: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-neuron sklearn / scipy / numpy values in float64."""
    c, x = control.double().numpy(), concept.double().numpy()
    labels = np.r_[np.zeros(len(c)), np.ones(len(x))]
    out: dict[str, list[float]] = {"auc": [], "u": [], "p": [], "mad": []}
    for k in range(c.shape[1]):
        out["auc"].append(roc_auc_score(labels, np.r_[c[:, k], x[:, k]]))
        res = mannwhitneyu(x[:, k], c[:, k], method="asymptotic")
        out["u"].append(res.statistic)
        out["p"].append(res.pvalue)
        std = c[:, k].std(ddof=1)
        out["mad"].append(0.0 if std == 0 else (x[:, k].mean() - c[:, k].mean()) / std)
    return {key: np.array(val) for key, val in out.items()}


@pytest.mark.parametrize(("seed", "n", "m", "k"), [(0, 300, 20, 9), (1, 57, 50, 4), (2, 40, 3, 1)])
def test_matches_sklearn_and_scipy_with_heavy_ties(seed, n, m, k):
    control, concept = _tied_data(seed, n, m, k)
    ref = _reference(control, concept)
    got_auc = auc(control, concept)
    assert got_auc.shape == (k,) and got_auc.dtype == torch.float64
    np.testing.assert_allclose(got_auc.numpy(), ref["auc"], rtol=0, atol=1e-12)
    res = utest(control, concept)
    np.testing.assert_array_equal(res.u.numpy(), ref["u"])
    np.testing.assert_allclose(res.p.numpy(), ref["p"], rtol=1e-9, atol=1e-300)
    np.testing.assert_allclose(mad(control, concept).numpy(), ref["mad"], rtol=1e-12, atol=1e-12)
    # U = AUC * n * m
    np.testing.assert_allclose(res.u.numpy(), ref["auc"] * n * m, rtol=1e-12)


def test_matches_references_on_continuous_float32_data():
    gen = torch.Generator().manual_seed(5)
    control = torch.randn(500, 6, generator=gen)
    concept = torch.randn(30, 6, generator=gen) + torch.linspace(-1, 3, 6)
    ref = _reference(control, concept)
    np.testing.assert_allclose(auc(control, concept).numpy(), ref["auc"], atol=1e-12)
    np.testing.assert_allclose(utest_p(control, concept).numpy(), ref["p"], rtol=1e-9)
    np.testing.assert_allclose(mad(control, concept).numpy(), ref["mad"], rtol=1e-9)
    # a strongly shifted neuron has a tiny p-value, computed without underflow to 0
    assert 0 < utest_p(control, concept)[-1] < 1e-12


def test_hand_computed_values():
    control = torch.tensor([[1.0], [2.0], [3.0]])
    concept = torch.tensor([[2.0], [4.0]])
    # b=2: beats 1, ties 2 -> 1.5 ; b=4: beats all three -> 3 ; U = 4.5 of n*m = 6
    assert auc(control, concept).item() == pytest.approx(0.75, abs=1e-15)
    assert utest_u(control, concept).item() == 4.5
    assert mad(control, concept).item() == pytest.approx((3.0 - 2.0) / 1.0)
    two = torch.tensor([[0.0], [2.0]])
    assert mad(two, torch.tensor([[3.0]])).item() == pytest.approx(2.0 / math.sqrt(2.0))


def test_separation_extremes():
    control = torch.arange(10.0).reshape(5, 2)
    assert auc(control, control + 100).tolist() == [1.0, 1.0]
    assert auc(control, control - 100).tolist() == [0.0, 0.0]


def test_all_equal_values():
    control = torch.full((40, 3), 7.0)
    concept = torch.full((5, 3), 7.0)
    assert auc(control, concept).tolist() == [0.5, 0.5, 0.5]
    res = utest(control, concept)
    assert res.u.tolist() == [100.0, 100.0, 100.0]
    assert res.p.tolist() == [1.0, 1.0, 1.0]
    assert mad(control, concept).tolist() == [0.0, 0.0, 0.0]


def test_constant_control_column_gives_mad_zero():
    gen = torch.Generator().manual_seed(3)
    control = torch.randn(1000, 4, generator=gen, dtype=torch.float64)
    control[:, 1] = 0.7  # the float mean of 1000 x 0.7 is not 0.7: its float std is not 0
    assert control[:, 1].std().item() > 0  # (the trap this test guards against)
    control[:, 2] = 0.0
    concept = torch.randn(10, 4, generator=gen, dtype=torch.float64) + 5
    scores = mad(control, concept)
    assert scores[1].item() == 0.0 and scores[2].item() == 0.0
    assert scores[0].item() > 3 and scores[3].item() > 3
    # AUC is unaffected by the MAD convention: concept is above the constant control
    assert auc(control, concept)[1].item() == 1.0


def test_near_constant_control_columns_give_mad_zero_not_1e7():
    """Identical images in different batches: columns differing in their last bits."""
    control, concept = near_constant_control()
    exact_std = mad(control, concept, rtol=0.0)  # the old guard: exactly equal values only
    assert exact_std[1].abs().item() > 1e5 and exact_std[2].abs().item() > 1e3
    scores = mad(control, concept)
    assert scores[1].item() == 0.0 and scores[2].item() == 0.0
    assert scores[0].item() != 0.0 and scores[3].abs().item() > 100
    assert near_constant(control).tolist() == [False, True, True, False]
    # score_all takes the moments of the sorted columns: the same MAD to the last bits, and
    # the same exact zeros
    fast = score_all(["mad"], control, concept)["mad"]
    torch.testing.assert_close(fast, scores, rtol=1e-12, atol=0)
    assert (fast == 0).tolist() == (scores == 0).tolist()


def test_near_constant_tolerance_is_relative_to_the_column_scale():
    base = torch.linspace(-1, 1, 100, dtype=torch.float64)[:, None]
    for scale in (1e-6, 1.0, 1e6):
        control = torch.cat([scale + base * scale * 1e-6, scale + base * scale * 1e-3], dim=1)
        assert near_constant(control).tolist() == [True, False], scale
    assert near_constant(torch.zeros(5, 1)).tolist() == [True]


def test_k_equal_one():
    control, concept = _tied_data(7, 80, 10, 1)
    ref = _reference(control, concept)
    for name, fn in SCORERS.items():
        out = fn(control, concept)
        assert out.shape == (1,), name
    assert auc(control, concept).item() == pytest.approx(ref["auc"][0], abs=1e-12)


def test_dtypes_give_identical_scores():
    control, concept = _tied_data(11, 120, 15, 5)
    expected = score_all(["auc", "mad", "utest"], control.double(), concept.double())
    for c, x in [
        (control.half(), concept.half()),
        (control.long(), concept.long()),
        (control.float(), concept.double()),
        (control.to(torch.uint8), concept.to(torch.uint8)),
    ]:
        got = score_all(["auc", "mad", "utest"], c, x)
        for col, val in expected.items():
            torch.testing.assert_close(got[col], val, rtol=1e-12, atol=0, msg=col)


def test_score_all_columns_and_values():
    control, concept = _tied_data(4, 90, 12, 6)
    cols = score_all(["utest", "auc", "mad", "auc"], control, concept)
    assert list(cols) == ["utest_u", "utest_p", "auc", "mad"]
    res = utest(control, concept)
    assert torch.equal(cols["utest_u"], res.u)
    assert torch.equal(cols["utest_p"], res.p)
    assert torch.equal(cols["auc"], auc(control, concept))
    torch.testing.assert_close(cols["mad"], mad(control, concept), rtol=1e-12, atol=0)
    assert list(score_all(["utest_p"], control, concept)) == ["utest_p"]
    assert set(SCORERS) == {n for n, s in REGISTRY.items() if not s.text}
    for name, fn in SCORERS.items():
        (col,) = (c for c in REGISTRY[name].columns if c in (name, f"{name}_u"))
        assert torch.equal(fn(control, concept), score_all([name], control, concept)[col])


def test_score_all_rejects_unknown_and_empty_names():
    control, concept = _tied_data(0, 10, 3, 2)
    with pytest.raises(ValueError, match=r"unknown scorer.*'auroc'.*known"):
        score_all(["auc", "auroc"], control, concept)
    with pytest.raises(ValueError, match="no scorer requested"):
        score_all([], control, concept)


def test_nan_error_names_neurons_and_side():
    control, concept = _tied_data(0, 20, 4, 6)
    bad = control.clone()
    bad[5, 3] = float("nan")
    with pytest.raises(ValueError, match=r"control contains NaN in neuron 3$"):
        auc(bad, concept)
    bad = concept.clone()
    bad[0, 1] = bad[2, 4] = float("nan")
    for fn in (auc, mad, utest_p):
        with pytest.raises(ValueError, match=r"concept contains NaN in neurons 1, 4$"):
            fn(control, bad)
    many = torch.full((3, 30), float("nan"))
    with pytest.raises(ValueError, match=r"neurons 0, 1, .*9, \.\.\. \(30 neurons in all\)"):
        mad(torch.zeros(3, 30), many)


def test_shape_errors_name_both_shapes():
    with pytest.raises(ValueError, match=r"control shape \(10, 3\) and concept shape \(4, 2\)"):
        auc(torch.zeros(10, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"2-D \[N, K\].*\(10,\).*unsqueeze"):
        mad(torch.zeros(10), torch.zeros(4, 1))
    with pytest.raises(ValueError, match=r"concept must be 2-D \[M, K\].*\(4, 1, 1\)"):
        auc(torch.zeros(10, 1), torch.zeros(4, 1, 1))


def test_empty_inputs_and_too_few_control_rows():
    with pytest.raises(ValueError, match=r"control is empty: it has no rows"):
        auc(torch.zeros(0, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"concept is empty: it has no rows"):
        utest(torch.zeros(5, 3), torch.zeros(0, 3))
    with pytest.raises(ValueError, match=r"no neurons"):
        auc(torch.zeros(5, 0), torch.zeros(4, 0))
    one = torch.tensor([[1.0, 2.0]])
    concept = torch.tensor([[3.0, 0.0]])
    with pytest.raises(ValueError, match=r"at least 2 control rows.*\(1, 2\)"):
        mad(one, concept)
    with pytest.raises(ValueError, match=r"at least 2 control rows"):
        score_all(["auc", "mad"], one, concept)
    assert auc(one, concept).tolist() == [1.0, 0.0]  # AUC needs only one control row


def test_type_errors():
    with pytest.raises(TypeError, match="torch.Tensor"):
        auc(np.zeros((3, 2)), torch.zeros(2, 2))
    with pytest.raises(TypeError, match="real numbers"):
        auc(torch.zeros(3, 2, dtype=torch.bool), torch.zeros(2, 2))


def test_benchmark_runs_and_agrees(capsys):
    from cosy_bench.bench.__main__ import main as bench_main

    argv = ["scorers", "--neurons", "5", "--control", "300", "--concept", "7", "--repeats", "1"]
    assert bench_main([*argv, "--utest"]) == 0
    out = capsys.readouterr().out
    for row in ("auc ", "mad ", "utest_u", "utest_p", "speed-up"):
        assert row in out
    assert bench_main(["no_such_bench"]) == 2
