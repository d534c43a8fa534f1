"""Block sizes of CLIP-Dissect's similarity functions under a memory budget
(``explainer.max_memory_gb``, :mod:`cosy_bench.explainers.budget`).

With ``P`` computed block by block (:class:`~.products.ClipProducts`), a similarity
function's working set beyond its inputs (activations ``[N, K]``, embeddings ``[N, D]`` and
``[M, D]``) is a fixed part (the ``[K, M]`` result, the top images of every neuron) plus a
part that grows with the block of ``chunk_size`` neurons by ``concept_chunk_size``
concepts (:func:`working_set`, upper bounds in bytes). :func:`plan_blocks` starts from the
function's own block sizes (or the user's ``hparams``) and halves the larger of the two until
the estimate fits; blocks change no result (see :mod:`.similarities`), so the plan is not
part of the cache key.
"""

from __future__ import annotations

import inspect

from cosy_bench.explainers.budget import budget_bytes, too_small
from cosy_bench.explainers.clip_dissect.products import ROW_BLOCK
from cosy_bench.explainers.clip_dissect.similarities import ALIASES, SIMILARITIES

__all__ = ["plan_blocks", "working_set"]

_PAIR_BUDGET = 2**24  # pairs per block of rank_reorder's baseline


def _defaults(name: str, hparams: dict) -> dict:
    params = inspect.signature(SIMILARITIES[name]).parameters
    out = {key: p.default for key, p in params.items() if p.default is not inspect.Parameter.empty}
    out.update(hparams)
    return out


def working_set(name: str, n: int, k: int, m: int, d: int, c: int, mc: int, hp: dict,
                itemsize: int = 4, row_block: int = ROW_BLOCK) -> int:
    """Upper bound in bytes of similarity ``name``'s working set for blocks of ``c`` neurons
    by ``mc`` concepts on ``N = n`` images, ``K = k`` neurons, ``M = m`` concepts of ``D = d``
    dimensions (``hp``: the function's keyword arguments)."""
    s = itemsize
    fetch = row_block * (d + mc) * 8  # float64 scratch of a block of P
    result = k * m * s
    if name in ("cos", "cos_cubed"):
        copies = 2 if name == "cos" else 3  # float64 copies of a column block
        return result + fetch + n * (mc + c) * (s + 8 * copies) + c * mc * 8
    if name == "rank_reorder":
        top = int(n * hp["top_fraction"])
        uniq = min(n, top * k)
        fixed = top * k * (3 * s + 40) + 3 * s * _PAIR_BUDGET
        block = top * c * mc * (4 * s + 16) + c * mc * 40 + n * c * (2 * s + 8)
        return result + fixed + fetch + uniq * mc * s + block
    # wpmi, soft_wpmi
    top = hp["top_k"]
    uniq = min(n, top * k)
    fixed = top * k * 40 + k * m * (16 + s) + 1024 * (m * (2 * s + 8) + d * 8) + uniq * s
    block = top * c * mc * s + c * mc * 32 + n * c * (2 * s + 8)
    return result + fixed + fetch + uniq * mc * s + block


def plan_blocks(name: str, n: int, k: int, m: int, d: int, max_memory_gb: float | None,
                hparams: dict | None = None, itemsize: int = 4,
                row_block: int = ROW_BLOCK) -> dict:
    """Block sizes for similarity ``name`` within ``max_memory_gb``.

    Returns:
        ``{"chunk_size": c, "concept_chunk_size": mc, "bytes": estimate, "budget": bytes}``;
        a ValueError naming ``explainer.max_memory_gb`` if even 1 x 1 blocks do not fit.
    """
    key = ALIASES.get(name, name)
    if key not in SIMILARITIES:
        raise ValueError(f"unknown similarity {name!r}; choose from {sorted(SIMILARITIES)}")
    hp = _defaults(key, dict(hparams or {}))
    budget = budget_bytes(max_memory_gb)
    c = max(1, min(k, hp.get("chunk_size") or k))
    mc = max(1, min(m, hp.get("concept_chunk_size") or m))
    need = working_set(key, n, k, m, d, c, mc, hp, itemsize, row_block)
    while need > budget and (c > 1 or mc > 1):
        if mc > 1 and (mc >= c or c == 1):
            mc = (mc + 1) // 2
        else:
            c = (c + 1) // 2
        need = working_set(key, n, k, m, d, c, mc, hp, itemsize, row_block)
    if need > budget:
        raise too_small(f"CLIP-Dissect ({key})", budget, need,
                        f"blocks of one neuron and one concept at N={n} probe images, K={k} "
                        f"neurons, M={m} concepts",
                        "use fewer probe images or concepts")
    return {"chunk_size": c, "concept_chunk_size": mc, "bytes": need, "budget": budget}
