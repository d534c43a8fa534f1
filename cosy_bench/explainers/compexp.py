"""Compositional explanations (Mu & Andreas, NeurIPS 2020), as in the authors' code
(jayelm/compexp, ``vision/``): NetDissect's IoU objective over logical formulas of probe
concepts.

Each unit's binary masks come from NetDissect's pass (:mod:`.netdissect`: maps upsampled to
the mask resolution, thresholded at the unit's top-``quantile`` level). Samples are the
pixels of the probe set at the mask resolution; a formula's mask is the pixelwise formula of
the concept masks (image-level labels cover the whole image), and its score is
``IoU(formula, unit) = |f & M| / |f | M|`` summed over the probe set, times
``penalty ** (length - 1)``, the length counting each ``NOT`` as one more unit as the
authors' (``len(a AND NOT b) = 3``).

Search (:func:`~cosy_bench.explainers.formulas.beam_search`, shared with INVERT: one search,
two objectives): the beam starts with the ``beam_size`` atomic concepts of highest IoU; each
step adds ``b OR c``, ``b AND c`` and ``b AND NOT c`` of every beam formula ``b`` and concept
``c``, and keeps the ``beam_size`` best of the old and new formulas, up to ``length`` terms.
Defaults from the authors' ``vision/settings.py``: ``BEAM_SIZE = 5``, ``MAX_FORMULA_LENGTH =
3``, ``FORMULA_COMPLEXITY_PENALTY = 1.00``, ``QUANTILE = 0.005``.
Differences (documented): formulas with identical masks are kept once; ties are broken by
candidate order; formulas that leave the parent's mask unchanged and formulas with empty
masks are not candidates; the authors start the beam only from concepts with a nonzero IoU
(here zero-IoU atoms may fill a beam that has fewer than ``beam_size`` others).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch

from cosy_bench.explainers.auroc import LabelProducts
from cosy_bench.explainers.base import Explanations
from cosy_bench.explainers.detectors import MIN_IOU, distinct_positive
from cosy_bench.explainers.formulas import OPS, Beam, beam_search, format_formula
from cosy_bench.explainers.netdissect import ProbeDissector, dissect

log = logging.getLogger("cosy_bench")

__all__ = ["CompExpExplainer", "compexp", "pixel_samples"]

_CHUNK_BYTES = 256 * 2**20
_HASH_SEED = 0x1A2B3C
KINDS = ("AND", "AND NOT", "OR")  # the authors' operators


def _iou(s: torch.Tensor, z: torch.Tensor, tot: torch.Tensor) -> torch.Tensor:
    union = tot + z - s
    return torch.where(union > 0, s / union.clamp_min(1e-300), 0.0)


def compexp(unit_masks: torch.Tensor, labels: torch.Tensor, concepts: Sequence[str],
            length: int = 3, beam_size: int = 5, penalty: float = 1.0,
            chunk_size: int | None = None, not_length: bool = True,
            top_k: int = 1, min_iou: float = MIN_IOU) -> list[dict]:
    """The best formula of every unit (``top_k > 1``: up to ``top_k`` formulas of its final
    beam with distinct positive parts, best first, ranks >= 2 only with IoU > ``min_iou``
    (:func:`~cosy_bench.explainers.detectors.distinct_positive`); one dict each, the units
    in order).

    Args:
        unit_masks: bool ``[N, K]``: unit ``k`` fires at sample (pixel) ``n``.
        labels: bool ``[N, C]``: concept ``c`` at sample ``n``.
        concepts: the C concept names.
        length: maximal formula length (authors: 3); beam_size: beam width (authors: 5).
        penalty: the score is ``IoU * penalty ** (length - 1)`` (authors: 1.0), where the
            length counts each ``NOT`` as one more unit, as the authors' ``len(formula)``
            (``a AND NOT b``: 3); ``not_length=False``: the number of concepts.
        chunk_size: units per chunk (``None``: about 256 MiB working set).
        top_k, min_iou: formulas per unit at most, and the IoU a formula of rank >= 2 needs.

    Returns:
        one dict per unit: ``neuron``, ``label`` (e.g. ``"(red OR orange) AND NOT circle"``;
        None if no concept occurs), ``iou``, ``length``, ``terms`` (as INVERT's records).
    """
    if length < 1 or beam_size < 1:
        raise ValueError("explainer.length and explainer.beam_size must be >= 1")
    m = torch.as_tensor(unit_masks).to(torch.bool)
    y = torch.as_tensor(labels).to(torch.bool)
    if m.ndim != 2 or y.ndim != 2 or m.shape[0] != y.shape[0]:
        raise ValueError(f"need unit masks [N, K] and labels [N, C] with the same N, got "
                         f"{tuple(m.shape)} and {tuple(y.shape)}")
    if len(concepts) != y.shape[1]:
        raise ValueError(f"{len(concepts)} concept names for {y.shape[1]} label columns")
    n, k = m.shape
    lab, labels_t = LabelProducts(y), y.T.contiguous()
    gen = torch.Generator().manual_seed(_HASH_SEED)
    hi_w = max(2, 2**52 // max(n, 1))
    weights = torch.randint(0, hi_w, (n,), generator=gen, dtype=torch.int64).to(torch.float64)
    step = chunk_size or max(1, _CHUNK_BYTES // (8 * n * (3 * beam_size + 8)))
    parts = []
    for k0 in range(0, k, step):
        values = m[:, k0:k0 + step].T.to(torch.float64).contiguous()
        parts.append(beam_search(values, lab, labels_t, weights, length, beam_size,
                                 metric=_iou, allowed=lambda z: z > 0, kinds=KINDS,
                                 negated_atoms=False, penalty=penalty,
                                 not_length=not_length))
    if not parts:
        return []
    res = Beam.cat(parts)
    lits, ops, lens = res.literals.tolist(), res.operators.tolist(), res.length.tolist()
    vals, valid = res.value.tolist(), res.valid.tolist()
    c_tot = y.shape[1]
    out = []
    for i in range(k):
        beam = []
        for s in range(len(valid[i]) if top_k > 1 else 1):
            if s and not valid[i][s]:
                break
            rec = {"neuron": i, "label": None, "iou": math.nan, "length": 0, "terms": []}
            if valid[i][s]:
                terms = [(None if j == 0 else OPS[ops[i][s][j]], lits[i][s][j] % c_tot,
                          lits[i][s][j] >= c_tot) for j in range(lens[i][s])]
                rec.update(label=format_formula(terms, concepts), iou=vals[i][s],
                           length=lens[i][s], terms=terms)
            beam.append(rec)
        out += distinct_positive(beam, top_k, min_iou) if top_k > 1 else beam
    return out


def pixel_samples(kept, n_concepts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit masks bool ``[N * P, K]`` and labels bool ``[N * P, C]`` of the pixels of the
    probe set, from NetDissect's kept batches ``(index, masks [B, K, P], segmentations)``."""
    masks = torch.cat([mk.transpose(1, 2).reshape(-1, mk.shape[1]) for _, mk, _ in kept])
    p = kept[0][1].shape[2]
    labels = torch.zeros(masks.shape[0], n_concepts, dtype=torch.bool)
    row = 0
    for _, _, segs in kept:
        for seg in segs:
            labels[row + seg.pixels[1], seg.pixels[0]] = True
            labels[row:row + p, seg.image_labels] = True
            row += p
    return masks, labels


class CompExpExplainer(ProbeDissector):
    """``explainer=compexp``: the formula of probe concepts whose mask best overlaps the
    unit's (IoU), by beam search (``top_k > 1``: the beam's best formulas with distinct
    positive parts, ranks >= 2 only above ``min_iou``; :mod:`.detectors`)."""

    name = "compexp"

    def __init__(self, probe, length: int = 3, beam_size: int = 5, penalty: float = 1.0,
                 quantile: float = 0.005, quantile_samples: int = 65536, mask_size=None,
                 seed: int = 0, threshold: str = "exact", top_k: int = 1,
                 min_iou: float = MIN_IOU):
        super().__init__(probe, quantile, quantile_samples, mask_size, seed, threshold, top_k,
                         min_iou)
        self.length, self.beam_size, self.penalty = int(length), int(beam_size), float(penalty)
        if self.top_k > self.beam_size:
            raise ValueError(f"explainer.top_k={self.top_k} needs explainer.beam_size >= "
                             f"{self.top_k} (the formulas come from the final beam)")

    def explain(self, ctx) -> Explanations:
        probe, size, thr = self.probe_and_thresholds(ctx)
        _, _, kept = dissect(ctx.spatial_extractor(), probe,
                             ctx.model.transform, ctx.trainer(), thr, size, keep=True,
                             batch_size=ctx.cfg.batch_size, num_workers=ctx.cfg.num_workers)
        masks, labels = pixel_samples(kept, len(probe.concepts))
        log.info("CompExp: formulas of length <= %d (beam %d) for %d units over %d pixels",
                 self.length, self.beam_size, masks.shape[1], masks.shape[0])
        records = compexp(masks, labels, probe.concepts, length=self.length,
                          beam_size=self.beam_size, penalty=self.penalty, top_k=self.top_k,
                          min_iou=self.min_iou)
        kept_r = [{**r, "compexp_iou": f"{r['iou']:.4f}"} for r in records
                  if r["label"] is not None]
        return Explanations.from_ranked(kept_r, ["compexp_iou"])
