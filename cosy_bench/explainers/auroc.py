"""AUROC of every neuron against every concept label from one ranking (the objective of
INVERT's formula search): mid-ranks of each neuron's activations, and rank sums for many
labels at once as label products ``R.T @ Y`` (dense in row chunks, or sparse CSR for sparse
labels), in the Mann-Whitney form that equals ``sklearn.metrics.roc_auc_score``."""

from __future__ import annotations

import warnings

import torch

__all__ = ["LabelProducts", "auc_from_ranksum", "auroc_matrix", "check_inputs", "midranks"]

_SPARSE_MAX_DENSITY = 0.05  # label density at or below which a sparse product is used
_DENSE_ROW_CHUNK = 8192  # samples per dense label-product chunk
_CHUNK_BYTES = 256 * 2**20  # per-chunk float64 working set aimed at when chunk_size is None


def midranks(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mid-ranks of each row of ``x``.

    Args:
        x: float ``[K, N]``, finite (one row per neuron, one column per sample).

    Returns:
        ``(ranks, tie_term)``: ranks float64 ``[K, N]`` in ``1..N`` (tied values get the mean
        of their ranks, as ``scipy.stats.rankdata``), and ``sum_groups (t**3 - t)`` float64
        ``[K]`` over the tie groups of each row (for the Mann-Whitney variance).
    """
    k, n = x.shape
    vals, order = torch.sort(x, dim=1)
    first = torch.ones(k, n, dtype=torch.bool)  # first element of a tie group (per row)
    first[:, 1:] = vals[:, 1:] != vals[:, :-1]
    del vals
    flat = first.view(-1)
    group = torch.cumsum(flat, 0, dtype=torch.int64) - 1  # tie group of each sorted element
    starts = flat.nonzero().view(-1)  # flat start of each group (groups never cross rows)
    ends = torch.empty_like(starts)
    ends[:-1] = starts[1:]
    ends[-1:] = k * n
    size = (ends - starts).to(torch.float64)
    row = torch.div(starts, n, rounding_mode="floor")
    mid = (starts - row * n).to(torch.float64) + (size + 1) / 2  # mean of 1-based ranks
    ranks = torch.empty(k, n, dtype=torch.float64)
    ranks.scatter_(1, order, mid[group].view(k, n))
    tie = torch.zeros(k, dtype=torch.float64).index_add_(0, row, size * (size * size - 1))
    return ranks, tie


class LabelProducts:
    """Right operand ``Y`` (bool ``[N, C]``) of products ``X [P, N] @ Y -> float64 [P, C]``."""

    def __init__(self, labels: torch.Tensor):
        n, c = labels.shape
        self.n, self.c = n, c
        self.dense = labels
        self.counts = torch.zeros(c, dtype=torch.float64)  # [C], in row chunks (no [N, C] int64)
        for r0 in range(0, n, _DENSE_ROW_CHUNK):
            self.counts += labels[r0 : r0 + _DENSE_ROW_CHUNK].sum(dim=0)
        density = float(self.counts.sum()) / max(n * c, 1)
        self.sparse = None
        if density <= _SPARSE_MAX_DENSITY:
            rows, cols = labels.nonzero(as_tuple=True)
            coo = torch.sparse_coo_tensor(  # Y.T [C, N]: CSR times dense is the fast path
                torch.stack([cols, rows]),
                torch.ones(rows.numel(), dtype=torch.float64),
                (c, n),
                check_invariants=False,
            )
            with warnings.catch_warnings():  # "sparse CSR support is in beta"
                warnings.simplefilter("ignore", UserWarning)
                self.sparse = coo.coalesce().to_sparse_csr()

    def rmatmul(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ Y`` for float64 ``x [P, N]`` -> float64 ``[P, C]``, memory-bounded."""
        if self.sparse is not None:
            return (self.sparse @ x.T).T.contiguous()
        out = torch.zeros(x.shape[0], self.c, dtype=torch.float64)
        for r0 in range(0, self.n, _DENSE_ROW_CHUNK):
            r1 = min(r0 + _DENSE_ROW_CHUNK, self.n)
            out.addmm_(x[:, r0:r1], self.dense[r0:r1].to(torch.float64))
        return out


def auc_from_ranksum(s: torch.Tensor, n1: torch.Tensor, n: int) -> torch.Tensor:
    """AUROC from the rank sum ``s`` of the ``n1`` positives among ``n`` samples (NaN if
    ``n1`` is 0 or ``n``). Shapes broadcast; float64."""
    n0 = n - n1
    return (s - n1 * (n1 + 1) / 2) / (n1 * n0)


def check_inputs(activations: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    a = torch.as_tensor(activations)
    y = torch.as_tensor(labels)
    if a.ndim != 2 or y.ndim != 2 or a.shape[0] != y.shape[0]:
        raise ValueError(
            f"need activations [N, K] and labels [N, C] with the same N, got "
            f"{tuple(a.shape)} and {tuple(y.shape)}"
        )
    if not a.is_floating_point():
        a = a.to(torch.float64)
    if not all(torch.isfinite(a[r0 : r0 + _DENSE_ROW_CHUNK]).all()  # row chunks: bounded memory
               for r0 in range(0, a.shape[0], _DENSE_ROW_CHUNK)):
        raise ValueError("activations must be finite (no NaN / inf)")
    if y.dtype != torch.bool:
        if not ((y == 0) | (y == 1)).all():
            raise ValueError("labels must be boolean (or 0/1)")
        y = y.to(torch.bool)
    return a.cpu(), y.cpu()


def auroc_matrix(
    activations: torch.Tensor, labels: torch.Tensor, chunk_size: int | None = None
) -> torch.Tensor:
    """AUROC of every neuron's activations for every concept indicator.

    Equal to ``sklearn.metrics.roc_auc_score(labels[:, c], activations[:, k])`` (ties count
    1/2), from one mid-ranking per neuron and one label product per chunk of neurons.

    Args:
        activations: float ``[N, K]`` (N probe samples, K neurons), finite.
        labels: bool (or 0/1) ``[N, C]``.
        chunk_size: neurons per chunk (``None``: as many as fit in about 256 MiB of float64).

    Returns:
        float64 ``[K, C]``; NaN for concepts present in no sample or in all samples.
    """
    a, y = check_inputs(activations, labels)
    n, k = a.shape
    lab = LabelProducts(y)
    step = chunk_size or max(1, _CHUNK_BYTES // (8 * 8 * max(n, 1)))
    out = torch.empty(k, lab.c, dtype=torch.float64)
    for k0 in range(0, k, step):
        ranks, _ = midranks(a[:, k0 : k0 + step].T.contiguous())
        out[k0 : k0 + step] = auc_from_ranksum(lab.rmatmul(ranks), lab.counts, n)
    return out
