"""cosy_bench.scorers.intervals: DeLong's AUC variance against an independent O(nm) reference,
and the coverage of its confidence interval in a seeded simulation with a known true AUC."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
import torch

from cosy_bench.scorers import auc
from cosy_bench.scorers.intervals import auc_ci, auc_delong, interval, mean_ci, normal_quantile


def _reference(control: np.ndarray, concept: np.ndarray) -> tuple[float, float]:
    """DeLong (1988) for one neuron, from the full n x m kernel matrix."""
    a = control[:, None]
    b = concept[None, :]
    psi = (a < b).astype(np.float64) + 0.5 * (a == b)  # [n, m]
    n, m = psi.shape
    v10 = psi.mean(axis=0)  # per concept image
    v01 = psi.mean(axis=1)  # per control image
    s10 = v10.var(ddof=1) if m > 1 else 0.0
    s01 = v01.var(ddof=1) if n > 1 else 0.0
    return float(psi.mean()), s10 / m + s01 / n


def _data(seed: int, n: int, m: int, k: int, ties: bool) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    if ties:
        control = torch.randint(0, 5, (n, k), generator=gen).float()
        concept = torch.randint(0, 5, (m, k), generator=gen).float() + torch.randint(
            0, 3, (1, k), generator=gen)
    else:
        control = torch.randn(n, k, generator=gen)
        concept = torch.randn(m, k, generator=gen) + torch.linspace(-1, 2, k)
    return control, concept


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize(("n", "m"), [(60, 17), (5, 40), (1, 9), (12, 1)])
def test_delong_equals_the_per_neuron_reference(ties, n, m):
    control, concept = _data(3, n, m, 11, ties)
    got_auc, got_var = auc_delong(control, concept)
    assert got_auc.dtype == got_var.dtype == torch.float64 and got_auc.shape == (11,)
    for k in range(11):
        ref_auc, ref_var = _reference(control[:, k].numpy(), concept[:, k].numpy())
        assert abs(float(got_auc[k]) - ref_auc) < 1e-12
        assert abs(float(got_var[k]) - ref_var) < 1e-9
    torch.testing.assert_close(got_auc, auc(control, concept), rtol=0, atol=1e-12)


def test_chunks_over_neurons_give_the_same_result(monkeypatch):
    control, concept = _data(5, 40, 13, 9, ties=True)
    whole = auc_delong(control, concept)
    monkeypatch.setattr("cosy_bench.scorers.intervals._CHUNK_ELEMENTS", 40 * 2)  # 2 neurons
    chunked = auc_delong(control, concept)
    torch.testing.assert_close(chunked.auc, whole.auc, rtol=0, atol=0)
    torch.testing.assert_close(chunked.variance, whole.variance, rtol=0, atol=1e-15)


def test_ci_is_the_normal_interval_clipped_to_the_unit_range():
    control, concept = _data(1, 30, 10, 6, ties=False)
    low, high = auc_ci(control, concept, level=0.9)
    est, var = auc_delong(control, concept)
    z = NormalDist().inv_cdf(0.95)
    assert torch.allclose(low, (est - z * var.sqrt()).clamp(0, 1), atol=1e-12)
    assert torch.allclose(high, (est + z * var.sqrt()).clamp(0, 1), atol=1e-12)
    assert bool((low <= est).all() and (est <= high).all())
    # perfect separation: AUC 1, no variance, a point interval at 1
    sep_low, sep_high = auc_ci(torch.zeros(5, 1) + torch.arange(5.0)[:, None],
                               torch.full((4, 1), 10.0))
    assert float(sep_low) == float(sep_high) == 1.0
    lo, hi = interval(torch.tensor([0.99]), torch.tensor([0.01]), 1.96)
    assert float(hi) == 1.0 and float(lo) < 0.99


def test_ci_covers_the_true_auc_in_a_seeded_simulation():
    """Gaussian control N(0, 1) and concept N(d, 1): the true AUC is Phi(d / sqrt(2)).

    Each of the 4,000 neurons is an independent experiment (N = 120 control, M = 40 concept
    images, d from 0 to 1.5: true AUC 0.5 to 0.86); the 95% interval must cover the truth in
    at least 93% of them.
    """
    gen = torch.Generator().manual_seed(2024)
    k, n, m = 4000, 120, 40
    d = torch.linspace(0.0, 1.5, k, dtype=torch.float64)
    control = torch.randn(n, k, generator=gen, dtype=torch.float64)
    concept = torch.randn(m, k, generator=gen, dtype=torch.float64) + d
    true_auc = torch.special.ndtr(d / math.sqrt(2.0))
    low, high = auc_ci(control, concept)
    coverage = float(((low <= true_auc) & (true_auc <= high)).double().mean())
    assert 0.93 <= coverage <= 0.97, coverage


def test_mean_ci_uses_student_t_and_drops_nan():
    values = torch.tensor([0.5, 0.7, 0.9, float("nan")], dtype=torch.float64)
    low, high = mean_ci(values)
    # t_{0.975, 2} = 4.302653; std of (0.5, 0.7, 0.9) = 0.2
    half = 4.302652729749462 * 0.2 / math.sqrt(3)
    assert low == pytest.approx(0.7 - half, abs=1e-9) and high == pytest.approx(0.7 + half,
                                                                                 abs=1e-9)
    assert all(math.isnan(x) for x in mean_ci(torch.tensor([0.5])))


def test_bad_level_and_inputs_are_named():
    with pytest.raises(ValueError, match="level must be in"):
        normal_quantile(95)
    with pytest.raises(ValueError, match="same neurons"):
        auc_delong(torch.zeros(3, 2), torch.zeros(3, 4))
