"""Uncertainty of the CoSy AUC: DeLong's variance and a normal confidence interval, per neuron.

Same inputs as the scorers of :mod:`.cosy`: ``control [N, K]`` (the ``K`` neurons on the
``N`` control images, ``A0``) and ``concept [M, K]`` (column ``k`` = neuron ``k`` on the ``M``
images of its own explanation, ``A1``); vectorised over neurons, float64 out.

DeLong, DeLong & Clarke-Pearson (1988), "Comparing the areas under two or more correlated
receiver operating characteristic curves: a nonparametric approach", Biometrics 44(3):
837-845. With ``psi(a, b) = 1[a < b] + 1[a == b] / 2`` (ties count 1/2, as in the AUC):

* structural components of the concept images ``V10_j = mean_i psi(a_i, b_j)`` (``j <= M``)
  and of the control images ``V01_i = mean_j psi(a_i, b_j)`` (``i <= N``);
* ``AUC = mean_j V10_j = mean_i V01_i``;
* ``var(AUC) = S10 / M + S01 / N``, ``S10``, ``S01`` the sample variances (``ddof = 1``) of
  ``V10`` and ``V01``;
* the ``level`` interval ``AUC -+ z * sqrt(var)``, ``z`` the normal quantile of
  ``(1 + level) / 2``, clipped to ``[0, 1]``.

Both components come from sorted columns and batched ``torch.searchsorted`` (no ``N x M``
matrix): ``O(K (N + M) log(N + M))``, in chunks of neurons so that memory stays bounded for
``N = 50,000`` control images and ``K = 2,048`` neurons.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import NamedTuple

import torch
from scipy.stats import t as student_t
from torch import Tensor

from cosy_bench.scorers.cosy import _comparison_dtype, _sorted_columns, _validate

#: Neurons per chunk are chosen so that a chunk's ``[k, N]`` int64 index tensors stay below
#: this many elements (2**24 = 128 MB each).
_CHUNK_ELEMENTS = 1 << 24


class DeLongResult(NamedTuple):
    """Result of :func:`auc_delong`: two float64 tensors ``[K]``: ``auc`` and its ``variance``."""

    auc: Tensor
    variance: Tensor


def _sample_var(x: Tensor) -> Tensor:
    """Variance along dim 1 with ``ddof = 1`` (0 for a single value): float64 ``[K]``."""
    if x.shape[1] < 2:
        return torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    return x.var(dim=1, correction=1)


def _delong_chunk(control: Tensor, concept: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """DeLong's AUC and variance for validated ``control [N, k]``, ``concept [M, k]``."""
    n, m = control.shape[0], concept.shape[0]
    a = _sorted_columns(control, dtype)  # [k, N]
    b = _sorted_columns(concept, dtype)  # [k, M]
    # V10_j: (control values below b_j + half of those equal) / N
    below = torch.searchsorted(a, b, side="left")
    upto = torch.searchsorted(a, b, side="right")
    v10 = (below + upto).to(torch.float64) / (2.0 * n)  # [k, M]
    del below, upto
    # V01_i: (concept values above a_i + half of those equal) / M
    above = m - torch.searchsorted(b, a, side="right")
    from_ = m - torch.searchsorted(b, a, side="left")
    v01 = (above + from_).to(torch.float64) / (2.0 * m)  # [k, N]
    del above, from_
    auc = v10.mean(dim=1)
    variance = _sample_var(v10) / m + _sample_var(v01) / n
    return auc, variance.clamp_min(0.0)


def auc_delong(control: Tensor, concept: Tensor) -> DeLongResult:
    """CoSy AUC of each neuron and DeLong's estimate of its variance.

    Args:
        control: ``[N, K]`` control activations (``N >= 1``).
        concept: ``[M, K]``; column ``k`` = neuron ``k`` on its explanation's images.

    Returns:
        :class:`DeLongResult` ``(auc [K], variance [K])``, float64. ``auc`` equals
        :func:`cosy_bench.scorers.auc`; ``variance = S10 / M + S01 / N`` (module docstring).
        A sample of size 1 contributes no variance term; a perfectly separated neuron
        (AUC 0 or 1) has variance 0.
    """
    _validate(control, concept)
    dtype = _comparison_dtype(control, concept)
    k = control.shape[1]
    step = max(1, _CHUNK_ELEMENTS // max(control.shape[0], concept.shape[0]))
    aucs, variances = [], []
    for start in range(0, k, step):
        auc, var = _delong_chunk(control[:, start:start + step], concept[:, start:start + step],
                                 dtype)
        aucs.append(auc)
        variances.append(var)
    return DeLongResult(torch.cat(aucs), torch.cat(variances))


def normal_quantile(level: float) -> float:
    """Two-sided normal quantile of a confidence ``level`` in (0, 1): 1.959964 for 0.95."""
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95; got {level!r}")
    return NormalDist().inv_cdf((1.0 + float(level)) / 2.0)


def auc_ci(control: Tensor, concept: Tensor, level: float = 0.95) -> tuple[Tensor, Tensor]:
    """``level`` confidence interval of each neuron's AUC from DeLong's variance.

    Args:
        control: ``[N, K]`` control activations.
        concept: ``[M, K]``; column ``k`` = neuron ``k`` on its explanation's images.
        level: confidence level in (0, 1), default 0.95.

    Returns:
        ``(low [K], high [K])``, float64: ``AUC -+ z sqrt(var)`` clipped to ``[0, 1]``.

    >>> control = torch.tensor([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0]])
    >>> concept = torch.tensor([[3.0, 0.0], [4.0, 1.0]])
    >>> low, high = auc_ci(control, concept, 0.95)
    >>> low.tolist(), [round(v, 4) for v in high.tolist()]
    ([1.0, 0.0], [1.0, 0.3143])
    """
    z = normal_quantile(level)
    auc, variance = auc_delong(control, concept)
    return interval(auc, variance, z)


def interval(estimate: Tensor, variance: Tensor, z: float) -> tuple[Tensor, Tensor]:
    """``estimate -+ z sqrt(variance)`` clipped to ``[0, 1]``: ``(low, high)``, float64."""
    half = z * variance.to(torch.float64).clamp_min(0.0).sqrt()
    est = estimate.to(torch.float64)
    return (est - half).clamp(0.0, 1.0), (est + half).clamp(0.0, 1.0)


#: scores that live in [0, 1]: their mean's interval is clipped there (an interval of a mean
#: AUC such as [0.01, 1.11] says nothing beyond 1)
UNIT_INTERVAL_SCORES = frozenset({"auc", "auprc", "inverse_auprc", "f1", "iou",
                                  "balanced_accuracy", "utest_p", "label_similarity"})


def mean_ci(values: Tensor, level: float = 0.95, score: str | None = None) -> tuple[float, float]:
    """Student-t ``level`` interval of the mean of ``values [K]`` over neurons:
    ``mean -+ t_{K-1} * std / sqrt(K)`` (``ddof = 1``); NaN values are left out;
    ``(nan, nan)`` with fewer than 2 values. Clipped to [0, 1] where ``score`` is one of
    :data:`UNIT_INTERVAL_SCORES` (MAD has no bounds)."""
    normal_quantile(level)  # validates level
    x = values.to(torch.float64).flatten()
    x = x[~torch.isnan(x)]
    if x.numel() < 2:
        return math.nan, math.nan
    t = float(student_t.ppf((1.0 + float(level)) / 2.0, x.numel() - 1))
    half = t * float(x.std(correction=1)) / math.sqrt(x.numel())
    mean = float(x.mean())
    if score in UNIT_INTERVAL_SCORES:
        return min(max(mean - half, 0.0), 1.0), min(max(mean + half, 0.0), 1.0)
    return mean - half, mean + half
