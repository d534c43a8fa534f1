"""CLIP-Dissect's similarity functions between neurons and concepts (Oikarinen & Weng,
ICLR 2023): how well the CLIP image-text similarities over a probe set match each neuron's
activations.

``P[i, m] = I_i . T_m`` (normalised CLIP image and text embeddings, :func:`image_text_similarity`),
``q_k`` = neuron ``k``'s summary activation on every probe image (``target_feats[:, k]``), and
neuron ``k`` gets ``argmax_m sim(t_m, q_k; P)`` (:func:`label_neurons`).

Similarity functions (:data:`SIMILARITIES`, all ``(clip_feats [N, M], target_feats [N, K]) ->
[K, M]``), defaults from the paper (Sec. 3.2, App. A.1) and the authors' ``similarity.py``:

* ``cos`` (paper Eq. 1; authors' ``cos_similarity``): cosine of ``q_k`` and ``P[:, m]``.
* ``cos_cubed`` (authors' ``cos_similarity_cubed``, not in the paper): columns centred over the
  probe images, cubed, normalised (norms clamped at ``min_norm = 1e-3``), then cosine.
* ``rank_reorder`` (paper Eq. 2, top 5% of images, ``p = 3``), as the authors' code computes it:
  on the neuron's top ``int(N * top_fraction)`` images, ``q'`` gives the image with the
  ``r``-th lowest ``P[:, m]`` the ``r``-th lowest activation; the error
  ``mean |q - q'|^p`` is divided by a baseline ``mean |q - perm(q)|^p`` and by
  ``mean(P[top, m]) ** scale_p`` (``scale_p = 0.5``); similarity = minus that.
  Difference: the authors estimate the baseline from 5 random permutations; we use its exact
  expectation over permutations, ``mean_{i,j} |q_i - q_j|^p`` (deterministic). Non-positive
  mean CLIP scores (NaN in the authors' code) and zero baselines are clamped at ``1e-12``.
* ``wpmi`` (paper Eq. 8, ``B_k`` = top 28 images, ``a = 2``, ``lambda = 0.6``):
  ``sum_{i in B_k} log(p(t_m|x_i) + min_prob) - lambda log(sum_j prod_{i in B_j} ...) +
  lambda log K`` with ``p(t_m|x_i) = softmax(a P[i, :])_m`` and the authors'
  ``min_prob = 1e-7``; the second term is a logsumexp over the layer's K neurons.
* ``soft_wpmi`` (default; paper Eq. 14, ``a = 10``, ``lambda = 1``):
  ``sum_{r < top_k} log(1 + p_r (p(t_m|x_(r)) - 1) + min_prob) - lambda (logsumexp_j ... -
  log K)`` over the neuron's images ``x_(r)`` in decreasing activation order, with
  ``p(x in B_k)`` linear in the rank. The paper says ``0.998`` for the top image down to
  ``0.97`` for the 100th; the authors' code uses ``p_r = p_start - r / top_k (p_start - p_end)``,
  ``r = 0..99`` (``0.97028`` at the 100th), which is our default (``endpoint=True`` gives the
  paper's ``0.97`` exactly).

Every function works in memory-bounded blocks of ``chunk_size`` neurons by
``concept_chunk_size`` concepts (``None``: one block) and takes ``clip_feats`` either whole
or as :class:`~.products.ClipProducts` (blocks of ``P`` computed on demand, never ``[N, M]``
at once; :mod:`.plan` sizes the blocks to ``explainer.max_memory_gb``). Blocks change no
bit of the result: top images are found per neuron (``torch.topk``, largest first) before
any block, the reductions whose order a block shape could change (cosines' dot products and
norms, rank-reorder's means) accumulate in float64 and are rounded once, and the (soft)
WPMI sums are in a fixed order. Computation is in the dtype of ``clip_feats`` (at least
float32). Numerical details that differ from the authors' float32 code by a few float32 ulps of the ~1e2..1e3 sums of
logs (the benchmark reports the size): (soft) WPMI sums its logs in float64; the SoftWPMI
term is evaluated as ``log(p_r p + (1 - p_r + min_prob))``, algebraically the authors'
``log(1 + p_r (p - 1) + min_prob)`` without its cancellation; the membership weights are
computed in float64 (the authors' from a float32 ``arange``); softmax is
``exp(a P - logsumexp(a P))`` per row.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch

from cosy_bench.explainers.clip_dissect.products import ClipProducts, image_text_similarity

__all__ = [
    "ALIASES",
    "SIMILARITIES",
    "cos",
    "cos_cubed",
    "image_text_similarity",
    "rank_reorder",
    "similarity",
    "soft_wpmi",
    "wpmi",
]

_EPS = 1e-12
log = logging.getLogger("cosy_bench")


def _prepare(clip_feats, target_feats: torch.Tensor) -> tuple:
    """``(P, q)``: ``P`` a tensor or :class:`ClipProducts` (blocks on demand) ``[N, M]``."""
    p = clip_feats if isinstance(clip_feats, ClipProducts) else torch.as_tensor(clip_feats)
    q = torch.as_tensor(target_feats)
    if p.ndim != 2 or q.ndim != 2 or p.shape[0] != q.shape[0]:
        raise ValueError(
            f"need clip_feats [N, M] and target_feats [N, K] with the same N, got "
            f"{tuple(p.shape)} and {tuple(q.shape)}"
        )
    dtype = torch.promote_types(p.dtype, torch.float32)
    return (p if isinstance(p, ClipProducts) else p.to(dtype)), q.to(dtype)


def _topk(q: torch.Tensor, k: int, block: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk(q, k, dim=0)`` (largest first) in blocks of ``block`` neurons, so that no
    copy of the whole ``q`` ``[N, K]`` is made."""
    vals = torch.empty(k, q.shape[1], dtype=q.dtype)
    inds = torch.empty(k, q.shape[1], dtype=torch.int64)
    for k0, k1 in _blocks(q.shape[1], block):
        vals[:, k0:k1], inds[:, k0:k1] = torch.topk(q[:, k0:k1], k=k, dim=0)
    return vals, inds


def _unit_columns(x: torch.Tensor, centre_cube: bool = False, min_norm: float = _EPS):
    """Columns of ``x`` in float64, optionally centred and cubed, divided by their norms
    (clamped at ``min_norm``)."""
    x = x.to(torch.float64)
    if centre_cube:
        x = (x - x.mean(dim=0, keepdim=True)) ** 3
    return x / x.norm(dim=0, keepdim=True).clamp_min(min_norm)


def _blocks(total: int, size: int | None) -> list[tuple[int, int]]:
    size = total if not size or size <= 0 else size
    return [(s, min(s + size, total)) for s in range(0, total, max(size, 1))]


def cos(
    clip_feats: torch.Tensor,
    target_feats: torch.Tensor,
    chunk_size: int | None = 1024,
    concept_chunk_size: int | None = 4096,
) -> torch.Tensor:
    """Cosine similarity (paper Eq. 1) of ``q_k`` and ``P[:, m]``.

    Args:
        clip_feats: ``[N, M]``; target_feats: ``[N, K]``.
        chunk_size, concept_chunk_size: block sizes over neurons and concepts.

    Returns:
        ``[K, M]``. Zero columns give 0 (the authors' code gives NaN).
    """
    p, q = _prepare(clip_feats, target_feats)
    k, m = q.shape[1], p.shape[1]
    out = torch.empty(k, m, dtype=q.dtype)
    for c0, c1 in _blocks(m, concept_chunk_size):
        pc = _unit_columns(p[:, c0:c1])
        for k0, k1 in _blocks(k, chunk_size):
            out[k0:k1, c0:c1] = _unit_columns(q[:, k0:k1]).T @ pc
    return out


def cos_cubed(
    clip_feats: torch.Tensor,
    target_feats: torch.Tensor,
    chunk_size: int | None = 1024,
    concept_chunk_size: int | None = 4096,
    min_norm: float = 1e-3,
) -> torch.Tensor:
    """Cosine of centred, cubed columns (authors' ``cos_similarity_cubed``).

    Args:
        clip_feats: ``[N, M]``; target_feats: ``[N, K]``.
        chunk_size, concept_chunk_size: block sizes over neurons and concepts.
        min_norm: clamp of the cubed columns' norms (authors: 1e-3).

    Returns:
        ``[K, M]``.
    """
    p, q = _prepare(clip_feats, target_feats)
    k, m = q.shape[1], p.shape[1]
    out = torch.empty(k, m, dtype=q.dtype)
    for c0, c1 in _blocks(m, concept_chunk_size):
        pc = _unit_columns(p[:, c0:c1], True, min_norm)
        for k0, k1 in _blocks(k, chunk_size):
            out[k0:k1, c0:c1] = _unit_columns(q[:, k0:k1], True, min_norm).T @ pc
    return out


def _pairwise_power_mean(vals: torch.Tensor, p: float, budget: int = 2**24) -> torch.Tensor:
    """``mean_{i,j} |v_i - v_j|^p`` per column of ``vals`` ``[T, K]`` -> float64 ``[K]``: the
    expectation over uniformly random permutations ``s`` of ``mean_i |v_i - v_s(i)|^p`` (the
    authors' baseline draws 5 such permutations). Blocks of at most ``budget`` pairs."""
    t, k = vals.shape
    out = torch.zeros(k, dtype=torch.float64)
    for k0, k1 in _blocks(k, max(1, budget // (t * t))):
        v = vals[:, k0:k1].T  # [c, T]
        rows = max(1, budget // ((k1 - k0) * t))
        for i0, i1 in _blocks(t, rows):
            diff = (v[:, i0:i1, None] - v[:, None, :]).abs_().pow_(p)
            out[k0:k1] += diff.sum(dim=(1, 2), dtype=torch.float64)
    return out / (t * t)


def rank_reorder(
    clip_feats: torch.Tensor,
    target_feats: torch.Tensor,
    chunk_size: int | None = 8,
    concept_chunk_size: int | None = 1024,
    top_fraction: float = 0.05,
    p: float = 3.0,
    scale_p: float = 0.5,
) -> torch.Tensor:
    """Rank-reorder similarity (paper Eq. 2 as computed by the authors' ``rank_reorder``).

    Args:
        clip_feats: ``[N, M]``; target_feats: ``[N, K]``.
        chunk_size, concept_chunk_size: block sizes (a block holds
            ``int(N * top_fraction) * chunk_size * concept_chunk_size`` values, a few times).
        top_fraction: share of the neuron's most activating images used (paper: 5%).
        p: exponent of the error (paper: 3).
        scale_p: exponent of the mean CLIP score dividing the error (authors' code: 0.5;
            0 gives the paper's Eq. 2 up to the per-neuron baseline).

    Returns:
        ``[K, M]``, ``-mean|q - q'|^p / baseline / mean(P[top, m])^scale_p``.
    """
    clip, q = _prepare(clip_feats, target_feats)
    n, k = q.shape
    m = clip.shape[1]
    top_n = int(n * top_fraction)
    if top_n < 1:
        raise ValueError(f"top_fraction={top_fraction} selects no image of {n}")
    vals, inds = _topk(q, top_n, chunk_size)  # [top_n, K], descending
    baseline = _pairwise_power_mean(vals, p).clamp_min(_EPS)
    ascending = vals.flip(0)  # [top_n, K]
    uniq, where = torch.unique(inds.reshape(-1), return_inverse=True)
    where = where.view(top_n, k)  # position of each (rank, neuron) image in ``uniq``
    del inds
    out = torch.empty(k, m, dtype=q.dtype)
    for c0, c1 in _blocks(m, concept_chunk_size):
        mc = c1 - c0
        scores = clip[uniq, c0:c1]  # CLIP scores of the top images [U, mc]
        for k0, k1 in _blocks(k, chunk_size):
            c = k1 - k0
            g = scores[where[:, k0:k1].reshape(-1)].view(top_n, c, mc)
            order = torch.argsort(g, dim=0, stable=True)
            src = ascending[:, k0:k1, None].expand(-1, -1, mc)
            reorg = torch.empty_like(g).scatter_(0, order, src)  # q'
            del order
            err = (vals[:, k0:k1, None] - reorg).abs_().pow_(p).mean(dim=0, dtype=torch.float64)
            avg = g.mean(dim=0, dtype=torch.float64).clamp_min(_EPS).pow(scale_p)
            out[k0:k1, c0:c1] = -err / baseline[k0:k1, None] / avg
    return out


def _row_logsumexp(clip: torch.Tensor, rows: torch.Tensor, a: float, block: int) -> torch.Tensor:
    """``logsumexp(a * clip[r, :])`` for the given rows ``[R]`` -> ``[R]``, in row blocks."""
    out = torch.empty(rows.numel(), dtype=clip.dtype)
    for r0, r1 in _blocks(rows.numel(), block):
        out[r0:r1] = torch.logsumexp(a * clip[rows[r0:r1]], dim=1)
    return out


def _product_group(floor: float, top_k: int, dtype: torch.dtype) -> int:
    """Number of consecutive factors in ``[floor, 1 + eps]`` whose product cannot underflow
    ``dtype`` (kept above ``1e8 * tiny``); 1 if ``floor <= 0``."""
    if floor <= 0:
        return 1
    if floor >= 1:
        return top_k
    limit = math.log(torch.finfo(dtype).tiny) + math.log(1e8)
    return max(1, min(top_k, int(limit / math.log(floor))))


def _sum_log(term: torch.Tensor, group: int) -> torch.Tensor:
    """``sum_r log(term[r])`` over the first dim of ``term`` ``[R, ...]`` (overwritten), as
    the float64 sum of the logs of products of ``group`` consecutive factors (Eq. 11 is a
    product: one log per ``group`` factors, sums in a fixed rank order)."""
    r = term.shape[0]
    full = r // group
    acc = None
    if full:
        grouped = term[: full * group].view(full, group, *term.shape[1:])
        prod = grouped[:, 0]
        for j in range(1, group):  # loop over positions in a group, vectorised over the rest
            prod.mul_(grouped[:, j])
        prod.log_()
        acc = prod[0].to(torch.float64)
        for i in range(1, full):
            acc += prod[i]
    if full * group < r:
        tail = term[full * group]
        for j in range(full * group + 1, r):
            tail.mul_(term[j])
        tail.log_()
        acc = tail.to(torch.float64) if acc is None else acc.add_(tail)
    return acc


def _pmi(
    clip: torch.Tensor,
    q: torch.Tensor,
    weights: torch.Tensor | None,
    top_k: int,
    a: float,
    lam: float,
    min_prob: float,
    chunk_size: int | None,
    concept_chunk_size: int | None,
) -> torch.Tensor:
    """Shared core of :func:`wpmi` (``weights=None``: hard membership) and :func:`soft_wpmi`.

    Args:
        clip: ``[N, M]``; q: ``[N, K]``; weights: float64 ``[top_k]`` membership
            probabilities by rank, or None; the rest as in :func:`soft_wpmi`.

    Returns:
        ``[K, M]``: ``log E[p(t_m | B_k)] - lam * (logsumexp_j log E[p(t_m | B_j)] - log K)``.
        ``p(t_m | x)`` is computed once per (distinct top image, concept) for each concept
        block (``[#distinct top images, concept_chunk_size]``); the per-neuron factors
        ``1 + p(x in B_k) (p(t_m | x) - 1) + min_prob`` live in one reused ``[top_k,
        chunk_size, concept_chunk_size]`` buffer; their log-sum is taken as the float64 sum of
        the logs of products of as many consecutive factors as cannot underflow (10 for
        SoftWPMI in float32, 4 for WPMI), in a fixed order, so chunking reorders nothing.
    """
    n, k = q.shape
    m = clip.shape[1]
    if not 1 <= top_k <= n:
        raise ValueError(f"top_k={top_k} must be in [1, N={n}]")
    inds = _topk(q, top_k, chunk_size)[1]  # [top_k, K], most activating first
    uniq, where = torch.unique(inds.reshape(-1), return_inverse=True)
    where = where.view(top_k, k)  # position of each (rank, neuron) image in ``uniq``
    lse = _row_logsumexp(clip, uniq, a, 1024)[:, None]  # softmax normaliser per top image
    if weights is not None:  # log(1 + w (p - 1) + eps) = log(w p + (1 - w + eps))
        scale = weights.to(clip.dtype)[:, None, None]
        offset = (1 - weights + min_prob).to(clip.dtype)[:, None, None]
        floor = float((1 - weights.clamp(max=1)).min()) + min_prob  # every term >= floor
    else:
        floor = min_prob
    group = _product_group(floor, top_k, clip.dtype)
    kb = _blocks(k, chunk_size)
    mb = _blocks(m, concept_chunk_size)
    width = max(k1 - k0 for k0, k1 in kb) * max(c1 - c0 for c0, c1 in mb)
    buf = torch.empty(top_k * width, dtype=clip.dtype)
    log_e = torch.empty(k, m, dtype=torch.float64)
    for c0, c1 in mb:
        mc = c1 - c0
        prob = clip[uniq, c0:c1].mul_(a).sub_(lse).exp_()  # p(t_m | x) of the top images
        for k0, k1 in kb:
            c = k1 - k0
            term = buf[: top_k * c * mc].view(top_k * c, mc)
            torch.index_select(prob, 0, where[:, k0:k1].reshape(-1), out=term)
            term = term.view(top_k, c, mc)
            if weights is None:
                term.add_(min_prob)
            else:
                term.mul_(scale).add_(offset)
            log_e[k0:k1, c0:c1] = _sum_log(term, group)
    log_prior = torch.logsumexp(log_e, dim=0, keepdim=True) - math.log(k)
    return (log_e - lam * log_prior).to(clip.dtype)


def wpmi(
    clip_feats: torch.Tensor,
    target_feats: torch.Tensor,
    chunk_size: int | None = 64,
    concept_chunk_size: int | None = 1024,
    top_k: int = 28,
    a: float = 2.0,
    lam: float = 0.6,
    min_prob: float = 1e-7,
) -> torch.Tensor:
    """WPMI (paper Eq. 8; top 28 images, ``a = 2``, ``lambda = 0.6``, authors' ``min_prob``).

    Args:
        clip_feats: ``[N, M]``; target_feats: ``[N, K]`` (all K neurons of the layer: the
            prior ``p(t_m)`` averages over them).
        chunk_size, concept_chunk_size: block sizes over neurons and concepts (working
            memory about ``(N + top_k * chunk_size) * concept_chunk_size`` values).
        top_k, a, lam, min_prob: hyperparameters.

    Returns:
        ``[K, M]``.
    """
    clip, q = _prepare(clip_feats, target_feats)
    return _pmi(clip, q, None, top_k, a, lam, min_prob, chunk_size, concept_chunk_size)


def soft_wpmi(
    clip_feats: torch.Tensor,
    target_feats: torch.Tensor,
    chunk_size: int | None = 16,
    concept_chunk_size: int | None = 1024,
    top_k: int = 100,
    a: float = 10.0,
    lam: float = 1.0,
    min_prob: float = 1e-7,
    p_start: float = 0.998,
    p_end: float = 0.97,
    endpoint: bool = False,
) -> torch.Tensor:
    """SoftWPMI (paper Eq. 14; the default similarity).

    Args:
        clip_feats: ``[N, M]``; target_feats: ``[N, K]`` (all K neurons of the layer).
        chunk_size, concept_chunk_size: block sizes over neurons and concepts (working
            memory about ``(N + top_k * chunk_size) * concept_chunk_size`` values).
        top_k: images with non-zero ``p(x in B_k)`` (100).
        a, lam: softmax temperature and prior weight (10 and 1).
        min_prob: added inside the log (authors: 1e-7).
        p_start, p_end: ``p(x in B_k)`` of the top image and (about) of the ``top_k``-th.
        endpoint: ``False`` (authors' code): ``p_r = p_start - r / top_k (p_start - p_end)``;
            ``True``: linear from ``p_start`` to exactly ``p_end`` at rank ``top_k``.

    Returns:
        ``[K, M]``.
    """
    clip, q = _prepare(clip_feats, target_feats)
    r = torch.arange(top_k, dtype=torch.float64)
    denom = max(top_k - 1, 1) if endpoint else top_k
    weights = p_start - r / denom * (p_start - p_end)
    return _pmi(clip, q, weights, top_k, a, lam, min_prob, chunk_size, concept_chunk_size)


SIMILARITIES: dict[str, Callable[..., torch.Tensor]] = {
    "cos": cos,
    "cos_cubed": cos_cubed,
    "rank_reorder": rank_reorder,
    "wpmi": wpmi,
    "soft_wpmi": soft_wpmi,
}
ALIASES = {"cos_similarity": "cos", "cos_similarity_cubed": "cos_cubed"}  # authors' names


def similarity(
    name: str, clip_feats: torch.Tensor, target_feats: torch.Tensor, **hparams
) -> torch.Tensor:
    """``sim(t_m, q_k; P)`` for all neurons and concepts.

    Args:
        name: a key of :data:`SIMILARITIES` (or the authors' ``cos_similarity`` /
            ``cos_similarity_cubed``).
        clip_feats: ``P`` ``[N, M]``; target_feats: ``[N, K]``.
        **hparams: the function's keyword arguments (``chunk_size``, hyperparameters).

    Returns:
        ``[K, M]``.
    """
    key = ALIASES.get(name, name)
    if key not in SIMILARITIES:
        raise ValueError(f"unknown similarity {name!r}; choose from {sorted(SIMILARITIES)}")
    return SIMILARITIES[key](clip_feats, target_feats, **hparams)
