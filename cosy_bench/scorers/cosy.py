"""CoSy's scores (AUC, MAD, Mann-Whitney U) as pure functions on activation tensors.

Every scorer takes the same two tensors and scores all ``K`` neurons at once:

* ``control``: float tensor ``[N, K]``: activations of the ``K`` neurons on the ``N`` images of
  the control dataset (``A0`` of every neuron).
* ``concept``: float tensor ``[M, K]``: column ``k`` holds neuron ``k``'s activations on the
  ``M`` synthetic images generated from *its own* explanation (``A1`` of neuron ``k``).

and returns a float64 tensor ``[K]`` (one score per neuron) on the device of the inputs.
Inputs of any real dtype (float16/32/64, integer) are accepted. Order and ties are decided in
a dtype that holds both inputs exactly (their own float dtype, else float64), so ties in the
inputs stay ties; counts are summed in int64 and every mean, variance and score is computed in
float64. The scorers are vectorised over neurons: no Python loop runs over ``K``.

Scores (Kopf et al., NeurIPS 2024, and the authors' code):

* :func:`auc`: ``AUC = sum_{a in A0} sum_{b in A1} 1[a < b] / (n m)``, ties count 1/2; equal to
  ``sklearn.metrics.roc_auc_score`` with label 0 for control and 1 for concept activations.
* :func:`mad`: ``(mean(A1) - mean(A0)) / std(A0)`` with the unbiased (``n - 1``) std; 0 where
  the control column is constant, as in the authors' code, or near-constant
  (``std(A0) <= 1e-5 max|A0|``, :func:`near_constant`).
* :func:`utest`: Mann-Whitney U of concept vs control (``U = AUC * n * m``) and its two-sided
  p-value from the normal approximation with tie and continuity corrections; equal to
  ``scipy.stats.mannwhitneyu(concept[:, k], control[:, k], method="asymptotic")``.

:mod:`cosy_bench.scorers.registry` declares every scorer once (:data:`~.registry.REGISTRY`)
and :func:`~.registry.score_all` computes several of them on a control set sorted once.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

_MAX_LISTED = 10  # neuron indices named in an error message before eliding the rest


class MannWhitneyResult(NamedTuple):
    """Result of :func:`utest`: two float64 tensors ``[K]``.

    ``u``: Mann-Whitney U of the concept activations against the control activations
    (pairs with concept > control, ties counted 1/2), i.e. ``AUC * n * m``.
    ``p``: two-sided p-value (normal approximation, tie and continuity corrections).
    """

    u: Tensor
    p: Tensor


# --------------------------------------------------------------------------- validation


def _describe_neurons(mask: Tensor) -> str:
    idx = mask.nonzero().flatten().tolist()
    shown = ", ".join(str(i) for i in idx[:_MAX_LISTED])
    more = f", ... ({len(idx)} neurons in all)" if len(idx) > _MAX_LISTED else ""
    return f"neuron{'s' if len(idx) > 1 else ''} {shown}{more}"


def _check_one(name: str, x: Tensor, rows: str, nan: bool = True) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [{rows}, K], got {type(x).__name__}")
    if x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    if x.ndim != 2:
        hint = " (for a single neuron use x.unsqueeze(1))" if x.ndim == 1 else ""
        raise ValueError(f"{name} must be 2-D [{rows}, K], got shape {tuple(x.shape)}{hint}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: it has no rows (shape {tuple(x.shape)})")
    if x.shape[1] == 0:
        raise ValueError(f"{name} is empty: it has no neurons (shape {tuple(x.shape)})")
    if nan and x.is_floating_point():
        nan_cols = torch.isnan(x).any(dim=0)
        if bool(nan_cols.any()):
            raise ValueError(f"{name} contains NaN in {_describe_neurons(nan_cols)}")


def _validate(control: Tensor, concept: Tensor, min_control: int = 1,
              control_nan: bool = True) -> None:
    """Check ``control [N, K]`` and ``concept [M, K]``; raise ``TypeError``/``ValueError``.
    ``control_nan=False`` leaves the control's NaN check to the sorted path (NaN sorts last:
    :func:`~cosy_bench.scorers.sorted.score_sorted` finds them without a pass of its own)."""
    _check_one("control", control, "N", nan=control_nan)
    _check_one("concept", concept, "M")
    if control.shape[1] != concept.shape[1]:
        raise ValueError(
            "control and concept must score the same neurons (same K = size of dim 1), got "
            f"control shape {tuple(control.shape)} and concept shape {tuple(concept.shape)}"
        )
    if control.device != concept.device:
        raise ValueError(f"control is on {control.device} but concept is on {concept.device}")
    if control.shape[0] < min_control:
        raise ValueError(
            f"need at least {min_control} control rows, got control shape {tuple(control.shape)}"
        )


# --------------------------------------------------------------------------- kernels
# The kernels take validated tensors and do no checking. Comparisons (sorting, searching,
# ties) run in a dtype both inputs convert to exactly; every sum and score is float64.


def _comparison_dtype(control: Tensor, concept: Tensor) -> torch.dtype:
    """A dtype holding both inputs exactly, so that order and ties are those of the inputs."""
    if control.dtype == concept.dtype and control.is_floating_point():
        if control.dtype in (torch.float16, torch.bfloat16):
            return torch.float32  # sort/searchsorted lack half kernels on some devices
        return control.dtype
    return torch.float64  # mixed dtypes or integers (exact below 2**53)


#: dtypes numpy sorts natively (and torch shares memory with)
_NUMPY_SORTABLE = (torch.float32, torch.float64, torch.int32, torch.int64)


#: elements of ``[K, R]`` from which the CPU sort is split over threads
_PARALLEL_SORT_MIN = 1 << 20


def _row_blocks(k: int, size: int) -> list[slice]:
    """The row blocks of a ``[k, ...]`` CPU job of ``size`` elements: one per intra-op
    thread where the job is large enough to be worth splitting, else one."""
    parts = max(1, min(torch.get_num_threads(), k)) if size >= _PARALLEL_SORT_MIN else 1
    step = max(1, -(-k // parts))
    return [slice(i, min(i + step, k)) for i in range(0, k, step)] or [slice(0, 0)]


def _map_blocks(fn, blocks: list[slice]) -> list:
    """``[fn(b) for b in blocks]``, on threads where there are several blocks (numpy's sort
    and torch's kernels release the GIL)."""
    if len(blocks) <= 1:
        return [fn(b) for b in blocks]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(blocks)) as pool:
        return list(pool.map(fn, blocks))


def _sorted_columns(x: Tensor, dtype: torch.dtype) -> Tensor:
    """``[R, K]`` -> ``[K, R]`` in ``dtype``: each neuron's values ascending, contiguous (NaN
    last, as torch sorts). On CPU the sort runs in numpy: its vectorised sort is an order of
    magnitude faster than ``torch.sort`` for float32 rows; large inputs are split into row
    blocks sorted on one thread each (numpy sorts on one core)."""
    rows = torch.empty(x.shape[1], x.shape[0], dtype=dtype, device=x.device)
    rows.copy_(x.T)  # one pass: transpose and convert together
    if rows.device.type == "cpu" and dtype in _NUMPY_SORTABLE:
        def sort(block: slice) -> None:
            rows[block].numpy().sort(axis=1)  # in place, through the shared memory

        _map_blocks(sort, _row_blocks(rows.shape[0], rows.numel()))
        return rows
    return torch.sort(rows, dim=1).values


class _Ranks(NamedTuple):
    """Where each concept value falls among the control values of its neuron.

    control: ``[K, N]`` ascending. concept: ``[K, M]`` ascending.
    below: int64 ``[K, M]``, control values ``<`` each concept value.
    upto: int64 ``[K, M]``, control values ``<=`` each concept value.
    """

    control: Tensor
    concept: Tensor
    below: Tensor
    upto: Tensor


def _ranks(control: Tensor, concept: Tensor) -> _Ranks:
    """Sort ``control [N, K]`` and ``concept [M, K]`` per neuron; locate concept in control."""
    dtype = _comparison_dtype(control, concept)
    control_sorted = _sorted_columns(control, dtype)  # the one O(K N log N) step
    concept_sorted = _sorted_columns(concept, dtype)
    below = torch.searchsorted(control_sorted, concept_sorted, side="left")
    upto = torch.searchsorted(control_sorted, concept_sorted, side="right")
    return _Ranks(control_sorted, concept_sorted, below, upto)


def _u_statistic(ranks: _Ranks) -> Tensor:
    """Mann-Whitney U of concept vs control, float64 ``[K]``.

    ``U = sum_b (#{a < b} + #{a == b} / 2) = sum_b (below_b + upto_b) / 2``; the integer
    ``2 U`` is summed exactly in int64.
    """
    return (ranks.below + ranks.upto).sum(dim=1).to(torch.float64) / 2.0


def _cube_minus(t: Tensor) -> Tensor:
    """``t^3 - t`` in float64 (exact for counts below 2**17)."""
    t = t.to(torch.float64)
    return t * t * t - t


def _run_tie_term(sorted_rows: Tensor) -> Tensor:
    """``sum over tie groups (t^3 - t)`` of each row of ``sorted_rows [K, R]``: float64 [K].

    An element equal to its predecessor is "tied"; a group of ``t >= 2`` equal values is a run
    of ``t - 1`` tied elements, found from the edges of the tied mask (groups of one add 0).
    """
    k, r = sorted_rows.shape
    # One spare False column per row, so that runs end inside their row when flattened.
    tied = torch.zeros(k, r + 1, dtype=torch.bool, device=sorted_rows.device)
    torch.eq(sorted_rows[:, 1:], sorted_rows[:, :-1], out=tied[:, 1:r])
    flat = tied.view(-1)
    edges = (flat[1:] != flat[:-1]).nonzero().squeeze(1)  # alternately run start-1, run end
    first, last = edges[0::2] + 1, edges[1::2]
    sizes = last - first + 2  # run of tied elements plus the group's first element
    out = torch.zeros(k, dtype=torch.float64, device=sorted_rows.device)
    return out.index_add_(0, torch.div(first, r + 1, rounding_mode="floor"), _cube_minus(sizes))


def _tie_term(ranks: _Ranks) -> Tensor:
    """``sum over tie groups (t^3 - t)`` of each neuron's pooled sample: float64 ``[K]``.

    A pooled group of value ``v`` has ``t0`` control and ``t1`` concept members, so the sum is
    the control-only sum plus, over the distinct concept values ``b``, ``f(t0 + t1) - f(t0)``
    with ``f(t) = t^3 - t``, ``t0 = upto_b - below_b`` and ``t1`` = copies of ``b`` in concept.
    Equal to ``sum_i (c_i^2 - 1)`` over the pooled elements, ``c_i`` = values equal to ``i``.
    """
    qs = ranks.concept
    t0 = ranks.upto - ranks.below
    t1 = torch.searchsorted(qs, qs, side="right") - torch.searchsorted(qs, qs, side="left")
    first = torch.ones_like(qs, dtype=torch.bool)
    torch.ne(qs[:, 1:], qs[:, :-1], out=first[:, 1:])  # one representative per distinct value
    extra = torch.where(first, _cube_minus(t0 + t1) - _cube_minus(t0), 0.0).sum(dim=1)
    return _run_tie_term(ranks.control) + extra


def _utest_p(u: Tensor, tie_term: Tensor, n: int, m: int) -> Tensor:
    """Two-sided asymptotic p-value of the Mann-Whitney U test (as scipy computes it).

    u, tie_term: float64 ``[K]``. Returns float64 ``[K]`` in ``[0, 1]``.
    """
    total = n + m  # >= 2
    mu = n * m / 2.0
    u_max = torch.maximum(u, n * m - u)  # two-sided: the larger of U1 and U2
    var_factor = (total + 1) - tie_term / (total * (total - 1))
    sigma = torch.sqrt((n * m / 12.0) * var_factor.clamp_min(0.0))
    # Continuity correction; sigma == 0 (all values tied) gives z = -inf and p = 1.
    z = (u_max - mu - 0.5) / sigma
    return torch.special.erfc(z / math.sqrt(2.0)).clamp(0.0, 1.0)


#: relative tolerance below which a control column counts as constant (see :func:`near_constant`)
NEAR_CONSTANT_RTOL = 1e-5


def _near_constant(control: Tensor, std: Tensor, rtol: float) -> Tensor:
    hi, lo = control.amax(dim=0), control.amin(dim=0)
    scale = torch.maximum(hi.abs(), lo.abs()).to(torch.float64)
    # exactly equal values first: a constant column can get a tiny std from rounding the mean
    return (hi == lo) | (std <= rtol * scale)


def _std(control: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and unbiased std of each column of ``control [N, K]`` (N >= 2), float64 ``[K]``."""
    n = control.shape[0]
    c64 = control.to(torch.float64)
    mean0 = c64.mean(dim=0)
    # Two-pass variance; subtract in place when the conversion already made a private copy.
    dev = c64.sub_(mean0) if c64.data_ptr() != control.data_ptr() else c64 - mean0
    return mean0, (dev.square_().sum(dim=0) / (n - 1)).sqrt_()


def near_constant(control: Tensor, rtol: float = NEAR_CONSTANT_RTOL) -> Tensor:
    """Which neurons' control activations are (near-)constant: bool ``[K]``.

    ``control [N, K]`` (N >= 2). A column is constant when ``std(A0) <= rtol * max|A0|``
    (unbiased std; ``max|A0|`` is the column's scale). The default ``1e-5`` is about 80
    float32 rounding steps of the scale: identical images run in different batches give
    columns differing in their last bits (relative 1e-7 to 1e-6), which would otherwise turn
    into MADs of 1e7; a real neuron's spread is far above it.

    >>> near_constant(torch.tensor([[3.25, 0.0], [3.2500002, 1.0], [3.25, 2.0]])).tolist()
    [True, False]
    """
    _check_one("control", control, "N")
    if control.shape[0] < 2:
        raise ValueError(f"need at least 2 control rows, got control shape {tuple(control.shape)}")
    return _near_constant(control, _std(control)[1], rtol)


def _mad(control: Tensor, concept: Tensor, rtol: float = NEAR_CONSTANT_RTOL) -> Tensor:
    """MAD of ``control [N, K]`` (N >= 2) and ``concept [M, K]``: float64 ``[K]``."""
    mean0, std = _std(control)
    constant = _near_constant(control, std, rtol)
    diff = concept.to(torch.float64).mean(dim=0) - mean0
    safe_std = torch.where(constant, torch.ones_like(std), std)
    return torch.where(constant, torch.zeros_like(std), diff / safe_std)


# --------------------------------------------------------------------------- public API


def auc(control: Tensor, concept: Tensor) -> Tensor:
    """CoSy AUC of each neuron: how well its activations rank concept above control images.

    Args:
        control: ``[N, K]`` control activations (``N >= 1``).
        concept: ``[M, K]``; column ``k`` = neuron ``k`` on its explanation's images.

    Returns:
        float64 ``[K]`` in ``[0, 1]``:
        ``sum_{a in A0} sum_{b in A1} (1[a < b] + 1[a == b] / 2) / (N M)``, equal to
        ``sklearn.metrics.roc_auc_score`` with labels 0 (control) / 1 (concept).

    Sorts each control column once (``O(K N log N)``) and locates all concept values with one
    batched ``torch.searchsorted``.

    >>> control = torch.tensor([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0]])  # N = 3, K = 2
    >>> concept = torch.tensor([[3.0, 0.0], [4.0, 1.0]])              # M = 2
    >>> auc(control, concept).tolist()  # neuron 1: 0.5 of 6 pairs (a tie) favour concept
    [1.0, 0.08333333333333333]
    """
    _validate(control, concept)
    return _u_statistic(_ranks(control, concept)) / (control.shape[0] * concept.shape[0])


def mad(control: Tensor, concept: Tensor, rtol: float = NEAR_CONSTANT_RTOL) -> Tensor:
    """CoSy MAD (mean activation difference) of each neuron.

    Args:
        control: ``[N, K]`` control activations, ``N >= 2``.
        concept: ``[M, K]``; column ``k`` = neuron ``k`` on its explanation's images.

    Returns:
        float64 ``[K]``: ``(mean(A1) - mean(A0)) / std(A0)``, std unbiased (``N - 1``).
        Where a control column is constant the score is **0**, whatever the concept
        activations, as in the CoSy authors' code (not ``inf``/``nan``); constant means
        ``std(A0) <= rtol * max|A0|`` (:func:`near_constant`), so that rounding noise of
        identical values does not give MADs of 1e7.

    >>> control = torch.tensor([[0.0, 5.0], [1.0, 5.0], [2.0, 5.0]])  # neuron 1: constant
    >>> concept = torch.tensor([[3.0, 9.0], [4.0, 9.0]])
    >>> mad(control, concept).tolist()  # (3.5 - 1) / 1; 0 for the constant column
    [2.5, 0.0]
    """
    _validate(control, concept, min_control=2)
    return _mad(control, concept, rtol)


def utest(control: Tensor, concept: Tensor) -> MannWhitneyResult:
    """Mann-Whitney U test of concept vs control activations, for every neuron.

    Args:
        control: ``[N, K]`` control activations.
        concept: ``[M, K]``; column ``k`` = neuron ``k`` on its explanation's images.

    Returns:
        :class:`MannWhitneyResult` of two float64 ``[K]`` tensors: ``u = AUC * N * M`` and the
        two-sided ``p`` (normal approximation, tie correction, continuity correction), equal to
        ``scipy.stats.mannwhitneyu(concept[:, k], control[:, k], method="asymptotic")``
        (note the argument order: concept first). ``p = 1`` where all values of a neuron are
        tied.

    >>> control = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    >>> concept = torch.tensor([[4.0], [5.0], [6.0]])
    >>> res = utest(control, concept)
    >>> res.u.tolist(), round(res.p.item(), 4)  # U = AUC * N * M = 1 * 4 * 3
    ([12.0], 0.0518)
    """
    _validate(control, concept)
    ranks = _ranks(control, concept)
    u = _u_statistic(ranks)
    return MannWhitneyResult(u, _utest_p(u, _tie_term(ranks), control.shape[0], concept.shape[0]))


def utest_u(control: Tensor, concept: Tensor) -> Tensor:
    """Mann-Whitney U of :func:`utest` alone: float64 ``[K]`` (``= AUC * N * M``)."""
    _validate(control, concept)
    return _u_statistic(_ranks(control, concept))


def utest_p(control: Tensor, concept: Tensor) -> Tensor:
    """Two-sided p-value of :func:`utest` alone: float64 ``[K]``."""
    return utest(control, concept).p
