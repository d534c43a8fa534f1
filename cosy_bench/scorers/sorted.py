"""CoSy's scores against a control set sorted once: the fast path for repeated scoring.

The control activations of a (model, layer, control set) are shared by every explainer,
prompt and generator scored on them, and sorting them is the whole cost of
:func:`cosy_bench.scorers.cosy.auc`. :func:`sort_control` sorts every control column once and
keeps what MAD and the U test need (:class:`SortedControl`); :func:`score_sorted` then scores
``M`` concept values per neuron by binary search in ``O(K M log N)``.

Shapes:

* ``control``: ``[N, K]`` activations of ``K`` neurons on ``N`` control images;
* :class:`SortedControl`: ``values [K, N]`` (each neuron's control values ascending, in the
  dtype that orders them exactly), ``mean``, ``std`` (``N - 1``), ``ties`` float64 ``[K]``,
  ``constant`` bool ``[K]``;
* ``concept``: ``[M, K]``, column ``k`` = neuron ``k`` on its explanation's images.

:func:`score_sorted` returns the same columns as :func:`~cosy_bench.scorers.cosy.score_all`
with the same values (AUC and U are the same integer counts; MAD and the p-value use the same
float64 formulas on the same moments). On CPU the sort runs in numpy (its vectorised sort is
an order of magnitude faster than ``torch.sort`` for float32 rows); on other devices in torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from cosy_bench.scorers.cosy import (
    NEAR_CONSTANT_RTOL,
    _check_one,
    _cube_minus,
    _run_tie_term,
    _sorted_columns,
    _utest_p,
)

_CHUNK = 32  # rows of [K, N] reduced together


class SortedControl(NamedTuple):
    """A control set's columns sorted once, with the moments MAD and the U test need.

    values: ``[K, N]`` ascending per neuron (float32/float64: a dtype holding the control
    values exactly). mean, std: float64 ``[K]`` (two-pass, std with ``N - 1``; 0 for
    ``N = 1``). ties: float64 ``[K]``, ``sum (t^3 - t)`` over the tie groups of each column
    (the U test's variance), or None where :func:`sort_control` was asked not to count them
    (:func:`score_sorted` then counts them if a U test asks). constant: bool ``[K]``, the
    column holds one value.
    """

    values: Tensor
    mean: Tensor
    std: Tensor
    ties: Tensor | None
    constant: Tensor

    @property
    def n(self) -> int:
        return int(self.values.shape[1])

    def select(self, neurons: Sequence[int] | Tensor) -> SortedControl:
        """The same control set restricted to ``neurons`` (in that order)."""
        idx = torch.as_tensor(neurons, dtype=torch.long, device=self.values.device)
        return SortedControl(*(None if t is None else t.index_select(0, idx) for t in self))

    def to_tensors(self) -> dict[str, Tensor]:
        """The tensors to save (with the tie sums: a saved control serves every scorer)."""
        tensors = self._asdict()
        if tensors["ties"] is None:
            tensors["ties"] = _run_tie_term(self.values)
        return tensors

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor]) -> SortedControl:
        return cls(**{name: tensors[name] for name in cls._fields})


def _row_stats(values: Tensor, chunk: int = _CHUNK, ties: bool = True
               ) -> tuple[Tensor, Tensor, Tensor | None]:
    """float64 mean, unbiased std (two-pass; 0 for ``N = 1``) and tie sum ``[K]`` (None
    unless ``ties``) of the sorted rows ``values [K, N]``, a few rows at a time (they stay in
    the CPU's cache)."""
    n = values.shape[1]
    means, stds, tie_sums = [], [], []
    for start in range(0, values.shape[0], chunk):
        rows = values[start:start + chunk]
        x = rows.to(torch.float64, copy=True)  # never the sorted values themselves
        mean = x.mean(dim=1)
        means.append(mean)
        stds.append((x.sub_(mean[:, None]).square_().sum(dim=1) / max(n - 1, 1)).sqrt_())
        if ties:
            tie_sums.append(_run_tie_term(rows))
    return torch.cat(means), torch.cat(stds), torch.cat(tie_sums) if ties else None


def sort_control(control: Tensor, ties: bool = True) -> SortedControl:
    """Sort each control column once: ``[N, K]`` -> :class:`SortedControl` (``O(K N log N)``).

    Args:
        control: ``[N, K]`` real activations (``N >= 1``), any device. A column holding NaN
            is sorted (NaN last) but :func:`score_sorted` refuses to score its neuron, so
            that a NaN only stops the neurons a run scores.
        ties: count the tie groups now (the U test's variance); False leaves
            ``ties=None`` for a one-off AUC/MAD scoring (:func:`score_all`), which then
            saves that pass over the values.

    >>> sc = sort_control(torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 2.0]]))  # N = 3, K = 2
    >>> sc.values.tolist(), sc.mean.tolist(), sc.std.tolist()
    ([[0.0, 1.0, 2.0], [1.0, 2.0, 3.0]], [1.0, 2.0], [1.0, 1.0])
    """
    if isinstance(control, Tensor) and control.ndim == 2 and control.numel():
        _check_one("control", control[:1], "N")  # type and shape; NaN is checked sorted
    else:
        _check_one("control", control, "N")
    dtype = control.dtype if control.dtype in (torch.float32, torch.float64) else (
        torch.float32 if control.dtype in (torch.float16, torch.bfloat16) else torch.float64)
    values = _sorted_columns(control, dtype)  # NaN sorts last; score_sorted refuses such neurons
    mean, std, tie_sums = _row_stats(values, ties=ties)
    # the same (near-)constant rule as cosy.mad: std <= rtol * max|A0|
    scale = torch.maximum(values[:, 0].abs(), values[:, -1].abs()).to(torch.float64)
    constant = (values[:, 0] == values[:, -1]) | (std <= NEAR_CONSTANT_RTOL * scale)
    return SortedControl(values, mean, std, tie_sums, constant)


def _concept_rows(sorted_control: SortedControl, concept: Tensor) -> tuple[Tensor, Tensor]:
    """(control values, concept values ascending ``[K, M]``) in one dtype ordering both
    exactly: the control's own if the concept converts to it exactly, else float64."""
    values = sorted_control.values
    same = concept.dtype == values.dtype or (
        values.dtype == torch.float32 and concept.dtype in (torch.float16, torch.bfloat16))
    dtype = values.dtype if same else torch.float64
    values = values if values.dtype == dtype else values.to(dtype)  # widening keeps order
    return values, _sorted_columns(concept, dtype)


def score_sorted(names: Iterable[str], sorted_control: SortedControl, concept: Tensor
                 ) -> dict[str, Tensor]:
    """:func:`~cosy_bench.scorers.cosy.score_all` against a control set sorted once.

    Args:
        names: scorer names whose registry entry has ``sorted=True`` (``"auc"``, ``"mad"``,
            ``"utest"``, ``"utest_p"``).
        sorted_control: :func:`sort_control` of the ``[N, K]`` control activations (use
            :meth:`SortedControl.select` to score a subset of its neurons).
        concept: ``[M, K]``; column ``k`` = neuron ``k`` on its explanation's images.

    Returns:
        ``{column: float64 [K]}``, the columns and values of ``score_all(names, control,
        concept)``. Costs ``O(K M log N)``: two batched binary searches of the ``M`` concept
        values of each neuron among its ``N`` sorted control values.

    >>> sc = sort_control(torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 2.0]]))
    >>> out = score_sorted(["auc", "mad"], sc, torch.tensor([[3.0, 0.0], [4.0, 1.0]]))
    >>> out["auc"].tolist(), out["mad"].tolist()
    ([1.0, 0.08333333333333333], [2.5, -1.5])
    """
    from cosy_bench.scorers.registry import sorted_names

    names = list(dict.fromkeys(names))
    unknown = [name for name in names if name not in sorted_names()]
    if unknown or not names:
        raise ValueError(f"unknown or no scorer(s) {unknown}; the sorted path scores "
                         f"{sorted(sorted_names())} (others: score_all)")
    _check_one("concept", concept, "M")
    k, n, m = sorted_control.values.shape[0], sorted_control.n, concept.shape[0]
    if concept.shape[1] != k:
        raise ValueError(f"concept scores {concept.shape[1]} neurons but the sorted control set "
                         f"holds {k}: select the same neurons (SortedControl.select(neurons))")
    if concept.device != sorted_control.values.device:
        raise ValueError(f"the sorted control set is on {sorted_control.values.device} but "
                         f"concept is on {concept.device}")
    if bool(torch.isnan(sorted_control.values[:, -1]).any()):  # NaN sorts last
        _check_one("control", sorted_control.values[:, -1:].T, "N")  # raises, naming them
    if "mad" in names and n < 2:
        raise ValueError(f"need at least 2 control rows for mad, got {n}")

    columns: dict[str, Tensor] = {}
    u = p = None
    if {"auc", "utest", "utest_p"} & set(names):
        values, qs = _concept_rows(sorted_control, concept)
        below = torch.searchsorted(values, qs, side="left")
        upto = torch.searchsorted(values, qs, side="right")
        u = (below + upto).sum(dim=1).to(torch.float64) / 2.0
        if {"utest", "utest_p"} & set(names):
            # pooled tie groups: the control's own plus, per distinct concept value b,
            # f(t0 + t1) - f(t0) with t0 control and t1 concept copies of b (cosy._tie_term)
            t0 = upto - below
            t1 = (torch.searchsorted(qs, qs, side="right")
                  - torch.searchsorted(qs, qs, side="left"))
            first = torch.ones_like(qs, dtype=torch.bool)
            torch.ne(qs[:, 1:], qs[:, :-1], out=first[:, 1:])
            extra = torch.where(first, _cube_minus(t0 + t1) - _cube_minus(t0), 0.0).sum(dim=1)
            control_ties = sorted_control.ties
            if control_ties is None:  # sorted without them (sort_control(ties=False))
                control_ties = _run_tie_term(sorted_control.values)
            p = _utest_p(u, control_ties + extra, n, m)
    for name in names:
        if name == "auc":
            columns["auc"] = u / (n * m)
        elif name == "mad":
            columns["mad"] = mad_from_moments(sorted_control, concept)
        elif name == "utest":
            columns["utest_u"], columns["utest_p"] = u, p
        else:
            columns["utest_p"] = p
    return columns


def mad_from_moments(sorted_control: SortedControl, concept: Tensor) -> Tensor:
    """MAD ``(mean(A1) - mean(A0)) / std(A0)`` from the cached moments: float64 ``[K]``;
    0 where the control column is constant (as :func:`cosy_bench.scorers.cosy.mad`)."""
    std, constant = sorted_control.std, sorted_control.constant
    diff = concept.to(torch.float64).mean(dim=0) - sorted_control.mean
    safe_std = torch.where(constant, torch.ones_like(std), std)
    return torch.where(constant, torch.zeros_like(std), diff / safe_std)

