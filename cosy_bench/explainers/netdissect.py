"""Network Dissection (Bau et al., CVPR 2017), as in the authors' NetDissect-Lite.

For every unit ``k`` of a layer and concept ``c`` of a densely labelled probe set:

* the unit's threshold ``T_k`` is its activation at the top ``quantile`` (0.005) over all
  positions of its maps on the probe set: MILAN's bounded quantile estimator
  (:meth:`RunContext.exemplars <cosy_bench.context.RunContext.exemplars>` with quantile
  ``1 - 0.005``), exact when ``quantile_samples >= N * h * w``;
* the unit's map on image ``x`` is upsampled bilinearly (``align_corners=False``, equal to
  the authors' PIL resize for upsampling) to the mask resolution and thresholded:
  ``M_k(x) = up(A_k(x)) > T_k``;
* ``IoU_{k,c} = sum_x |M_k(x) & L_c(x)| / sum_x |M_k(x) | L_c(x)|`` over the probe set, where
  an image-level label (a scene, a texture) is a whole-image mask. As in the authors' tally
  (``union: overlap``, the default), the unit's pixels ``|M_k(x)|`` enter the union of the
  concepts of category ``g`` on image ``x`` only where its active pixels overlap a label of
  ``g`` or ``x`` has an image-level label of ``g``; ``union: annotated`` counts them on every
  image carrying a label of ``g`` (a probe set whose images are annotated in every category,
  as the toy world's, says so with ``fully_annotated = True``); ``0 / 0`` counts as 0 (the
  authors add ``1e-10``). The threshold is the exact quantile (``threshold: exact``) or the
  authors' readout at ``994 / 999`` with mid-rank interpolation (``threshold: authors``);
* the label is ``argmax_c IoU`` (``netdissect_iou`` and ``netdissect_category`` are kept);
  ``top_k > 1``: the next concepts by IoU that the unit detects (``IoU > min_iou``, 0.04,
  :mod:`.detectors`).

Vectorised: a batch's masks are a sparse ``[B * P, C]`` matrix (pixel labels) and a dense
``[B, C]`` one (image-level labels); intersections are sparse x sparse products with the
units' active pixels ``[K, B * P]`` (a top quantile, so sparse), and the pass upsamples the
maps of a chunk of units at a time, so memory is one batch whatever the probe size.

Probe protocol: ``concepts`` (C names), optional ``categories`` (C category names), and per
image either ``segmentation(i, size) -> (pixels long [2, L] of (concept, flat pixel),
image_labels long [J])`` (the Broden loader) or ``masks(i) -> bool [C, H, W]`` (the toy
world).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from cosy_bench.distributed.ranks import gather_objects
from cosy_bench.distributed.session import require_session
from cosy_bench.distributed.shards import ShardSampler
from cosy_bench.explainers.base import Explainer, Explanations
from cosy_bench.explainers.detectors import MIN_IOU, check_min_iou, netdissect_rows
from cosy_bench.loops.activations import _collate, _Transformed

log = logging.getLogger("cosy_bench")

_UPSAMPLED_VALUES = 1 << 25  # map values upsampled at once by the dissection pass

#: ``explainer.union``: on which images a unit's pixels enter the union of category g's
#: concepts. ``overlap`` (NetDissect-Lite's tally, the default): where the unit's active
#: pixels overlap a label of g, or the image has an image-level label of g. ``annotated``
#: (this suite's rule before): on every image that carries a label of g.
UNIONS = ("overlap", "annotated")
#: ``explainer.threshold``: ``exact``, the exact quantile ``1 - quantile`` (linear rule);
#: ``authors``, NetDissect-Lite's readout: the quantile sketch read at ``994 / 999`` with
#: mid-rank interpolation (see :func:`authors_level`).
THRESHOLDS = ("exact", "authors")

__all__ = ["DissectionPass", "NetDissectExplainer", "Segmentation", "Tally", "dissect",
           "probe_categories", "segmentation", "unit_masks"]


# ----------------------------------------------------------------------------- masks


@dataclass
class Segmentation:
    """The labels of one probe image at the mask resolution ``P = H * W``: ``pixels`` long
    ``[2, L]`` (concept, flat pixel) pairs and ``image_labels`` long ``[J]``."""

    pixels: torch.Tensor
    image_labels: torch.Tensor


def segmentation(probe, i: int, size: tuple[int, int]) -> Segmentation:
    """Image ``i``'s labels at mask size ``size = (H, W)`` (nearest-neighbour resizing)."""
    if hasattr(probe, "segmentation"):
        pixels, image_labels = probe.segmentation(i, size)
        return Segmentation(pixels.long(), image_labels.long())
    if not hasattr(probe, "masks"):
        raise ValueError(f"probe set {getattr(probe, 'name', probe)!r} has no concept masks: "
                         "NetDissect and CompExp need a densely labelled probe set "
                         "(probe=toyworld or probe=broden)")
    masks = torch.as_tensor(probe.masks(i))
    if tuple(masks.shape[-2:]) != tuple(size):
        masks = F.interpolate(masks[None].float(), size=size, mode="nearest")[0] > 0.5
    c, flat = masks.flatten(1).nonzero(as_tuple=True)
    return Segmentation(torch.stack([c, flat]), torch.empty(0, dtype=torch.long))


def mask_size(probe, size) -> tuple[int, int]:
    """``size`` (an int or a pair), else the probe's own mask resolution."""
    if size is not None:
        return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if hasattr(probe, "mask_size"):
        return tuple(probe.mask_size)
    if hasattr(probe, "masks"):
        return tuple(torch.as_tensor(probe.masks(0)).shape[-2:])
    raise ValueError("set explainer.mask_size: the probe set does not say its mask resolution")


def probe_categories(probe) -> tuple[list[str], torch.Tensor]:
    """The category names ``[G]`` and the concept-category one-hot ``labelcat`` float64
    ``[C, G]``: the probe's ``categories``, else the toy world's concept families, else one
    category for all concepts."""
    cats = getattr(probe, "categories", None)
    if cats is None:
        from cosy_bench.toyworld.vocab import FAMILY_OF

        cats = ([FAMILY_OF[c] for c in probe.concepts] if all(c in FAMILY_OF for c in
                probe.concepts) else ["concept"] * len(probe.concepts))
    names = list(dict.fromkeys(cats))
    onehot = torch.zeros(len(cats), len(names), dtype=torch.float64)
    onehot[torch.arange(len(cats)), torch.tensor([names.index(c) for c in cats])] = 1.0
    return names, onehot


def unit_masks(maps: torch.Tensor, thresholds: torch.Tensor, size: tuple[int, int]
               ) -> torch.Tensor:
    """bool ``[B, K, H * W]``: maps ``[B, K, h, w]`` upsampled (bilinear,
    ``align_corners=False``) to ``size`` and compared ``> thresholds [K]``."""
    up = F.interpolate(maps.float(), size=size, mode="bilinear", align_corners=False)
    return (up > thresholds.to(up)[None, :, None, None]).flatten(2)


# ----------------------------------------------------------------------------- tally


@dataclass
class Tally:
    """NetDissect's counts over a probe set (float64): ``both [K, C]`` intersections,
    ``units [K]`` unit pixels, ``units_cat [K, G]`` unit pixels on images annotated in each
    category, ``labels [C]`` concept pixels."""

    both: torch.Tensor
    units: torch.Tensor
    units_cat: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def zeros(cls, k: int, c: int, g: int) -> Tally:
        z = torch.zeros
        return cls(z(k, c, dtype=torch.float64), z(k, dtype=torch.float64),
                   z(k, g, dtype=torch.float64), z(c, dtype=torch.float64))

    def add(self, masks: torch.Tensor, segs: list[Segmentation], labelcat: torch.Tensor,
            fully_annotated: bool = False, union: str = "overlap") -> None:
        """Count a batch: unit masks bool ``[B, K, P]``, one :class:`Segmentation` per image,
        ``labelcat`` ``[C, G]``. ``union`` (see :data:`UNIONS`) says on which images a
        unit's pixels enter the union of a category's concepts."""
        if union not in UNIONS:
            raise ValueError(f"explainer.union={union!r}: choose one of {list(UNIONS)}")
        b, k, p = masks.shape
        c, g = self.labels.shape[0], labelcat.shape[1]
        rows, cols, img = [], [], torch.zeros(b, c, dtype=torch.float64)
        for j, seg in enumerate(segs):
            rows.append(seg.pixels[0])
            cols.append(seg.pixels[1] + j * p)
            img[j, seg.image_labels] = 1.0
        rows_t, cols_t = torch.cat(rows), torch.cat(cols)
        hits = masks.sum(-1, dtype=torch.float64)  # [B, K]
        img_cat = (img @ labelcat > 0).double()  # [B, G] image-level labels of each category
        overlap = torch.zeros(k, b, g, dtype=torch.float64)  # [K, B, G]
        if rows_t.numel():
            # Y [B * P, C]: a label twice on a pixel counts once
            y = torch.sparse_coo_tensor(torch.stack([cols_t, rows_t]),
                                        torch.ones(rows_t.numel()), (b * p, c),
                                        check_invariants=False).coalesce()
            idx = y.indices()
            y = torch.sparse_coo_tensor(idx, torch.ones_like(y.values()), (b * p, c),
                                        check_invariants=False, is_coalesced=True)
            # A [K, B * P]: the units' active pixels (sparse: a top quantile)
            bi, ki, pi = masks.nonzero(as_tuple=True)
            a = torch.sparse_coo_tensor(torch.stack([ki, bi * p + pi]),
                                        torch.ones(ki.numel()), (k, b * p),
                                        check_invariants=False)
            with warnings.catch_warnings():  # "sparse CSR support is in beta"
                warnings.simplefilter("ignore", UserWarning)
                self.both += torch.sparse.mm(a, y).to_dense().double()
                if union == "overlap":  # Z [B * P, B * G]: pixel labelled in category g
                    cat = labelcat.argmax(dim=1)[idx[1]]
                    z = torch.sparse_coo_tensor(
                        torch.stack([idx[0], torch.div(idx[0], p, rounding_mode="floor") * g
                                     + cat]), torch.ones(idx.shape[1]), (b * p, b * g),
                        check_invariants=False)
                    overlap = (torch.sparse.mm(a, z).to_dense() > 0).double().view(k, b, g)
            self.labels += torch.bincount(idx[1], minlength=c).double()
        self.both += hits.T @ img
        self.labels += img.sum(0) * p
        self.units += hits.sum(0)
        if union == "overlap":  # the unit's pixels overlap a label of g, or an image label
            counted = torch.maximum(overlap, img_cat[None])  # [K, B, G]
            self.units_cat += torch.einsum("bk,kbg->kg", hits, counted)
            return
        if fully_annotated:
            annotated = torch.ones(b, g, dtype=torch.float64)
        else:  # an image is annotated in a category when it has a label of it
            present = img.clone()
            if rows_t.numel():
                present.index_put_((torch.div(cols_t, p, rounding_mode="floor"), rows_t),
                                   torch.ones(rows_t.numel(), dtype=torch.float64))
            annotated = ((present > 0).double() @ labelcat > 0).double()  # [B, G]
        self.units_cat += hits.T @ annotated

    def put(self, part: Tally, k0: int) -> None:
        """Add the counts of units ``k0 .. k0 + K'`` of ``part`` (its labels are counted once:
        only with ``k0 == 0``)."""
        k1 = k0 + part.units.shape[0]
        self.both[k0:k1] += part.both
        self.units[k0:k1] += part.units
        self.units_cat[k0:k1] += part.units_cat
        if k0 == 0:
            self.labels += part.labels

    def merge(self, other: Tally) -> Tally:
        return Tally(self.both + other.both, self.units + other.units,
                     self.units_cat + other.units_cat, self.labels + other.labels)

    def iou(self, labelcat: torch.Tensor) -> torch.Tensor:
        """float64 ``[K, C]``: ``both / (units_cat[:, cat(c)] + labels - both)``, 0 for 0/0."""
        union = self.units_cat @ labelcat.T + self.labels[None] - self.both
        return torch.where(union > 0, self.both / union.clamp_min(1e-300), 0.0)


# ----------------------------------------------------------------------------- the pass


class DissectionPass(L.LightningModule):
    """Predict loop over the probe set: the units' masks of every batch are tallied; with
    ``keep`` they are also kept (for CompExp's formula search)."""

    def __init__(self, extractor, probe, thresholds: torch.Tensor, size: tuple[int, int],
                 labelcat: torch.Tensor, keep: bool = False, union: str = "overlap"):
        super().__init__()
        self.extractor, self.probe, self.size = extractor, probe, size
        self.thresholds, self.labelcat, self.keep = thresholds, labelcat, keep
        self.union = union
        self.fully = bool(getattr(probe, "fully_annotated", hasattr(probe, "masks")))
        self.tally: Tally | None = None
        self.kept: list[tuple[torch.Tensor, torch.Tensor, list[Segmentation]]] = []

    def predict_step(self, batch, batch_idx):
        images, index = batch
        if images.numel() == 0:
            return 0
        maps = self.extractor(images).float()
        segs = [segmentation(self.probe, int(i), self.size) for i in index.tolist()]
        n_units, p = maps.shape[1], self.size[0] * self.size[1]
        if self.tally is None:
            self.tally = Tally.zeros(n_units, len(self.probe.concepts), self.labelcat.shape[1])
        step = max(1, _UPSAMPLED_VALUES // max(1, len(index) * p))  # units upsampled at once
        parts = []
        for k0 in range(0, n_units, step):
            masks = unit_masks(maps[:, k0:k0 + step], self.thresholds[k0:k0 + step]
                               .to(maps.device), self.size).cpu()
            part = Tally.zeros(masks.shape[1], len(self.probe.concepts), self.labelcat.shape[1])
            part.add(masks, segs, self.labelcat, self.fully, self.union)
            self.tally.put(part, k0)
            if self.keep:
                parts.append(masks)
        if self.keep:
            self.kept.append((index.cpu(), torch.cat(parts, dim=1), segs))
        return len(index)


def dissect(extractor, probe, transform, trainer, thresholds: torch.Tensor,
            size: tuple[int, int], keep: bool = False, batch_size: int = 64,
            num_workers: int = 0, union: str = "overlap"):
    """Run the dissection pass over ``probe``; returns ``(tally, labelcat, kept)`` with
    ``kept`` (when ``keep``) the ``(index [B], masks [B, K, P], segmentations)`` of every
    batch of every rank, sorted by dataset index; the same on every rank. ``union``: see
    :data:`UNIONS`."""
    if union not in UNIONS:
        raise ValueError(f"explainer.union={union!r}: choose one of {list(UNIONS)}")
    require_session(trainer)
    _, labelcat = probe_categories(probe)
    data = _Transformed(probe, transform)
    loader = DataLoader(data, batch_size=batch_size, sampler=ShardSampler(data),
                        num_workers=num_workers, collate_fn=_collate)
    module = DissectionPass(extractor, probe, thresholds, size, labelcat, keep, union)
    trainer.predict(module, dataloaders=loader, return_predictions=False)
    parts = gather_objects((module.tally, module.kept))
    tallies = [t for t, _ in parts if t is not None]
    if not tallies:
        raise ValueError("no image of the probe set could be read")
    tally = tallies[0]
    for t in tallies[1:]:
        tally = tally.merge(t)
    kept = sorted((b for _, k in parts for b in k), key=lambda b: int(b[0][0]))
    return tally, labelcat, kept


def authors_level(quantile: float) -> float:
    """The level NetDissect-Lite reads its sketch at for the top ``quantile``:
    ``readout(1000)[:, int(1000 * (1 - quantile) - 1)]``, i.e. ``994 / 999`` for 0.005."""
    return int(1000 * (1 - quantile) - 1) / 999


def thresholds_of(ctx, probe, quantile: float, quantile_samples: int, seed: int,
                  rule: str = "exact"):
    """Each unit's activation at the top ``quantile`` of its map positions (MILAN's pass):
    ``exact`` = the ``1 - quantile`` quantile (linear rule); ``authors`` = at
    :func:`authors_level` with mid-rank interpolation (NetDissect-Lite's readout)."""
    if rule not in THRESHOLDS:
        raise ValueError(f"explainer.threshold={rule!r}: choose one of {list(THRESHOLDS)}")
    if rule == "exact":
        return ctx.exemplars(probe, k=1, quantile=1.0 - quantile,
                             quantile_samples=quantile_samples, seed=seed).levels
    return ctx.exemplars(probe, k=1, quantile=authors_level(quantile),
                         quantile_samples=quantile_samples, seed=seed, rule="midrank").levels


class ProbeDissector(Explainer):
    """What NetDissect and CompExp share: a densely labelled probe set, each unit's threshold
    at the top ``quantile`` of its map positions (MILAN's pass), a mask resolution, and the
    IoU ``min_iou`` an explanation of rank >= 2 needs (in the cache key only when top_k > 1:
    rank 1 is the label whatever its IoU)."""

    def __init__(self, probe, quantile: float = 0.005, quantile_samples: int = 65536,
                 mask_size=None, seed: int = 0, threshold: str = "exact",
                 top_k: int = 1, min_iou: float = MIN_IOU):
        if threshold not in THRESHOLDS:
            raise ValueError(f"explainer.threshold={threshold!r}: choose one of "
                             f"{list(THRESHOLDS)}")
        self.set_top_k(top_k)
        self.probe, self.quantile = probe, float(quantile)
        self.quantile_samples, self.seed = int(quantile_samples), int(seed)
        self.mask_size = mask_size if mask_size is None or isinstance(mask_size, int) \
            else [int(v) for v in mask_size]  # None, an int, or two ints
        self.threshold, self.min_iou = threshold, check_min_iou(min_iou)

    def cache_key(self) -> dict:
        key = super().cache_key()
        if isinstance(self.probe, DictConfig):  # the probe config as plain data
            key["probe"] = OmegaConf.to_container(self.probe, resolve=True)
        if self.top_k == 1:
            key.pop("min_iou")
        return key

    def probe_and_thresholds(self, ctx) -> tuple[object, tuple[int, int], torch.Tensor]:
        """(the probe set, its mask size ``(h, w)``, the units' thresholds ``[K]``)."""
        probe = instantiate(self.probe)
        return probe, mask_size(probe, self.mask_size), thresholds_of(
            ctx, probe, self.quantile, self.quantile_samples, self.seed, self.threshold)


class NetDissectExplainer(ProbeDissector):
    """``explainer=netdissect``: label each unit with the probe concept of highest IoU
    (``top_k > 1``: then its next concepts by IoU above ``min_iou``, up to ``top_k``);
    ``union`` (:data:`UNIONS`) picks the rule of the union's unit pixels."""

    name = "netdissect"

    def __init__(self, probe, quantile: float = 0.005, quantile_samples: int = 65536,
                 mask_size=None, seed: int = 0, threshold: str = "exact",
                 union: str = "overlap", top_k: int = 1, min_iou: float = MIN_IOU):
        super().__init__(probe, quantile, quantile_samples, mask_size, seed, threshold, top_k,
                         min_iou)
        if union not in UNIONS:
            raise ValueError(f"explainer.union={union!r}: choose one of {list(UNIONS)}")
        self.union = union

    def explain(self, ctx) -> Explanations:
        probe, size, thr = self.probe_and_thresholds(ctx)
        log.info("NetDissect: tallying %d units against %d concepts on %d probe images at "
                 "%dx%d", thr.numel(), len(probe.concepts), len(probe), *size)
        tally, labelcat, _ = dissect(ctx.spatial_extractor(), probe,
                                     ctx.model.transform, ctx.trainer(), thr, size,
                                     batch_size=ctx.cfg.batch_size,
                                     num_workers=ctx.cfg.num_workers, union=self.union)
        iou = tally.iou(labelcat)
        best, arg = iou.max(dim=1)
        names, _ = probe_categories(probe)
        cat_of = labelcat.argmax(dim=1).tolist()
        if self.top_k == 1:
            texts = {k: probe.concepts[c] for k, c in enumerate(arg.tolist())}
            extra = {"netdissect_iou": {k: f"{v:.4f}" for k, v in enumerate(best.tolist())},
                     "netdissect_category": {k: names[cat_of[c]] for k, c in
                                             enumerate(arg.tolist())}}
            return Explanations(texts, extra)
        rows = netdissect_rows(iou, probe.concepts, [names[c] for c in cat_of], self.top_k,
                               self.min_iou)
        return Explanations.from_ranked(rows, ["netdissect_iou", "netdissect_category"])
