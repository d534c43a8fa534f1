"""Which explanations beyond rank 1 the IoU explainers (NetDissect, CompExp) offer with
``explainer.top_k = K > 1``.

Rank 1 is always the method's label, whatever its IoU: NetDissect-Lite labels every unit
(its report greys out those below the threshold), and a top-1 run is unchanged. Ranks 2..K
are explanations the method would also offer for the unit:

* **Detectors only** (``explainer.min_iou``, default :data:`MIN_IOU` = 0.04): a label or
  formula of rank >= 2 is kept only when its IoU with the unit's mask is above ``min_iou``.
  Bau et al. (CVPR 2017) count a unit as a detector of concept ``c`` when
  ``IoU_{k,c} > 0.04``; NetDissect-Lite's and the CompExp authors' ``settings.py`` hold it as
  ``SCORE_THRESHOLD = 0.04`` ("the threshold used for IoU score": their reports count the
  units "with IoU >= 0.04" and grey out the rest). A runner-up concept the unit does not
  detect is not an explanation the method offers; a unit left with one explanation is one
  the method calls monosemantic (its polysemanticity is 0, :mod:`cosy_bench.ranks`).
* **Distinct positive parts** (CompExp): the final beam of a formula search mostly holds one
  concept with different negated terms (``(red AND NOT triangle) AND NOT cross``,
  ``(red AND NOT triangle) AND NOT zigzag``), which name the same thing. The top-K are the
  best formulas of the beam whose *positive parts* (the set of concepts not under ``NOT``)
  differ: each positive part once, by its best formula, so K explanations name K different
  sets of concepts. ``a OR b`` and ``a AND b`` share the positive part ``{a, b}``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["MIN_IOU", "check_min_iou", "detector_ranks", "distinct_positive",
           "netdissect_rows", "positive_part"]

#: Bau et al. (2017): a unit is a detector of a concept when its IoU is above 0.04
MIN_IOU = 0.04


def check_min_iou(value) -> float:
    """``explainer.min_iou`` as a float in [0, 1), or a clear error."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if isinstance(value, bool) or not 0.0 <= v < 1.0:
        raise ValueError(f"explainer.min_iou={value!r}: give an IoU in [0, 1) (labels of "
                         f"rank >= 2 need an IoU above it; Bau et al. 2017: 0.04)")
    return v


def detector_ranks(iou: torch.Tensor, top_k: int, min_iou: float
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each unit's ``top_k`` concepts of highest IoU, best first, and which of them it
    offers.

    Args:
        iou: float ``[U, C]``, IoU of unit ``u`` with concept ``c``.
        top_k: labels per unit at most; min_iou: ranks >= 2 need ``IoU > min_iou``.

    Returns:
        ``(values [U, K'], concepts long [U, K'], keep bool [U, K'])`` with
        ``K' = min(top_k, C)``; ``keep[:, 0]`` is always True (rank 1 is the label).
    """
    top = torch.sort(iou, dim=1, descending=True, stable=True)
    k = min(top_k, iou.shape[1])
    values, concepts = top.values[:, :k], top.indices[:, :k]
    keep = values > min_iou
    keep[:, 0] = True
    return values, concepts, keep


def netdissect_rows(iou: torch.Tensor, concepts: Sequence[str], categories: Sequence[str],
                    top_k: int, min_iou: float) -> list[dict]:
    """NetDissect's ranked labels: per unit of ``iou`` ``[U, C]``, rows ``{neuron, label,
    netdissect_iou, netdissect_category}`` of its :func:`detector_ranks`, best first
    (``categories[c]``: concept ``c``'s category)."""
    vals, ids, keep = (t.tolist() for t in detector_ranks(iou, top_k, min_iou))
    return [{"neuron": k, "label": concepts[c], "netdissect_iou": f"{v:.4f}",
             "netdissect_category": categories[c]} for k in range(iou.shape[0])
            for v, c, ok in zip(vals[k], ids[k], keep[k], strict=True) if ok]


def positive_part(terms: Sequence[tuple[str | None, int, bool]]) -> frozenset[int]:
    """The concepts of a formula's ``terms`` (``(op, concept, negated)``) not under ``NOT``."""
    return frozenset(c for _, c, neg in terms if not neg)


def distinct_positive(records: list[dict], top_k: int, min_iou: float) -> list[dict]:
    """One unit's top-K of its final beam (``records``, best first, dicts with ``terms``
    and ``iou``): the first formula of each distinct :func:`positive_part`, at most
    ``top_k``; rank 1 is ``records[0]`` and every later one needs ``iou > min_iou``."""
    out: list[dict] = []
    seen: set[frozenset[int]] = set()
    for rec in records:
        part = positive_part(rec["terms"])
        if part in seen or (out and not rec["iou"] > min_iou):
            continue
        seen.add(part)
        out.append(rec)
        if len(out) == top_k:
            break
    return out
