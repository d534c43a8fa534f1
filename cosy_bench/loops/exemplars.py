"""MILAN's exemplars (Hernandez et al., ICLR 2022): the images a unit fires on most, with
masks of where it fires.

As in the authors' exemplar pass (netdissect's tally), for every unit of a layer:

* the probe images are ranked by the spatial **max** of the unit's activation map; the top
  ``k`` (15 in MILAN) are its exemplars;
* the unit's **level** is its activation at ``quantile`` (0.99) over all spatial positions
  of all probe images;
* the mask of an exemplar is the unit's map upsampled (bilinear, ``align_corners=False``) to
  the image size and thresholded at the level (:meth:`Exemplars.masks`).

The pass is a Lightning predict loop (:func:`collect_exemplars`) that keeps a running top-k
buffer per unit and a bounded sample of activations for the level, so its memory is
``K * k * h * w`` plus the sample whatever the number of probe images. Under DDP each rank
ranks its shard and the ranks' buffers are merged; ties are broken by the lower dataset
index, so the result does not depend on the number of ranks or the batch size.

**The level is an estimate.** Over N probe images, each contributes
``q = min(h * w, max(1, ceil(quantile_samples / N)))`` positions drawn without replacement by
a generator seeded from ``(seed, dataset index)``; when N > quantile_samples only a seeded
``quantile_samples / N`` share of the images contributes (one position each). So the sample
holds about ``quantile_samples`` values per unit (at least N * q when N is smaller), the
same ones whatever the batching or sharding. With ``quantile_samples >= N * h * w`` every
position is used and the level is exact.

Shapes: K units, k exemplars per unit, [h, w] the unit maps, [H, W] the images, N images.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import NamedTuple

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from cosy_bench.distributed.ranks import gather_objects
from cosy_bench.distributed.session import require_session
from cosy_bench.distributed.shards import ShardSampler
from cosy_bench.loops.activations import _collate, _Transformed
from cosy_bench.models.layers import SpatialExtractor

log = logging.getLogger(__name__)

_FIELDS = ("indices", "scores", "maps", "levels")
_MASK_CHUNK_VALUES = 1 << 25  # floats upsampled at once by Exemplars.masks


@dataclass
class Exemplars:
    """The exemplars of every unit of a layer.

    Attributes:
        indices: long [K, k]: probe-dataset indices of each unit's top-k images, best first.
        scores: float [K, k]: the unit's spatial max on them.
        maps: float [K, k, h, w]: the unit's activation maps on them.
        levels: float [K]: the unit's activation at the quantile over all positions of the
            probe set (an estimate from a sample, see the module docstring).
    """

    indices: torch.Tensor
    scores: torch.Tensor
    maps: torch.Tensor
    levels: torch.Tensor

    def masks(self, size: int | tuple[int, int], units: torch.Tensor | None = None
              ) -> torch.Tensor:
        """Where each unit fires on its exemplars.

        Args:
            size: the image size, ``H`` (square) or ``(H, W)``.
            units: long [K'] units to return (default all K).

        Returns:
            bool [K', k, H, W]: the maps upsampled bilinearly (``align_corners=False``) to
            ``size`` and compared ``> levels``.
        """
        height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        maps, levels = self.maps, self.levels
        if units is not None:
            maps, levels = maps[units], levels[units]
        n_units, k = maps.shape[:2]
        out = torch.empty(n_units, k, height, width, dtype=torch.bool, device=maps.device)
        chunk = max(1, _MASK_CHUNK_VALUES // max(1, k * height * width))
        for start in range(0, n_units, chunk):  # chunks of units bound the float memory
            part = maps[start:start + chunk].float()
            up = F.interpolate(part.flatten(0, 1)[:, None], size=(height, width),
                               mode="bilinear", align_corners=False)
            out[start:start + chunk] = (up.view(-1, k, height, width)
                                        > levels[start:start + chunk, None, None, None])
        return out

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """The fields as contiguous tensors, e.g. for ``safetensors.torch.save_file``."""
        return {name: getattr(self, name).contiguous() for name in _FIELDS}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> Exemplars:
        """Inverse of :meth:`to_tensors`."""
        missing = [name for name in _FIELDS if name not in tensors]
        if missing:
            raise ValueError(f"exemplar tensors lack {missing}")
        return cls(**{name: tensors[name] for name in _FIELDS})


# ----------------------------------------------------------------------------- top-k


class TopK(NamedTuple):
    """A running top-k buffer: scores float [K, m], indices long [K, m], maps [K, m, h, w],
    each row ranked by score (descending), then dataset index (ascending)."""

    scores: torch.Tensor
    indices: torch.Tensor
    maps: torch.Tensor


def batch_candidates(maps: torch.Tensor, index: torch.Tensor) -> TopK:
    """A batch as candidates: maps [B, K, h, w] and dataset index [B] -> unranked TopK
    with m = B (scores are the spatial max)."""
    maps = maps.transpose(0, 1)  # [K, B, h, w]
    scores = maps.amax(dim=(2, 3))
    return TopK(scores, index[None, :].expand_as(scores), maps)


def merge_top_k(a: TopK, b: TopK, k: int) -> TopK:
    """The top ``k`` per unit of the union of ``a`` [K, m] and ``b`` [K, n].

    Ranked by score (NaN last), ties by lower dataset index: the result depends only on the
    union, not on how it was split. Returns a TopK of width min(k, m + n).
    """
    scores = torch.cat([a.scores, b.scores], dim=1)
    index = torch.cat([a.indices, b.indices], dim=1)
    by_index = index.argsort(dim=1, stable=True)
    ranked = scores.gather(1, by_index).nan_to_num(nan=-math.inf)
    order = by_index.gather(1, ranked.argsort(dim=1, descending=True, stable=True)[:, :k])
    m = a.scores.shape[1]
    pick = order[:, :, None, None]
    from_a = a.maps.take_along_dim(pick.clamp(max=max(m - 1, 0)), dim=1) if m else None
    from_b = b.maps.take_along_dim((pick - m).clamp(min=0), dim=1)
    maps = from_b if from_a is None else torch.where(pick < m, from_a, from_b)
    return TopK(scores.gather(1, order), index.gather(1, order), maps)


# ----------------------------------------------------------------------------- level sample


def samples_per_image(n_images: int, positions: int, quantile_samples: int) -> int:
    """q = min(positions, max(1, ceil(quantile_samples / n_images))) positions per image."""
    return min(positions, max(1, math.ceil(quantile_samples / max(1, n_images))))


def sampled_images(index: torch.Tensor, n_images: int, quantile_samples: int,
                   seed: int) -> torch.Tensor:
    """bool [B]: which images of dataset index [B] give positions to the level sample.
    All when ``n_images <= quantile_samples``; otherwise each with probability
    ``quantile_samples / n_images`` (seeded by its index), so the sample holds about
    ``quantile_samples`` values per unit however large the probe set."""
    if n_images <= quantile_samples:
        return torch.ones(len(index), dtype=torch.bool)
    rate = quantile_samples / n_images
    draws = [np.random.default_rng([seed % 2**63, int(i), 1]).random() for i in index.tolist()]
    return torch.tensor(draws) < rate


def image_generator(seed: int, index: int) -> torch.Generator:
    """A CPU generator seeded from (seed, dataset index): the same draw for an image
    whatever the batch or rank it is in."""
    state = np.random.SeedSequence([seed % 2**64, int(index)]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def sample_positions(index: torch.Tensor, positions: int, q: int, seed: int) -> torch.Tensor:
    """long [B, q]: distinct flat positions (< ``positions``) drawn for each image of
    dataset index [B]; all of them, in order, when ``q == positions``."""
    if q >= positions:
        return torch.arange(positions).expand(len(index), positions)
    return torch.stack([torch.randperm(positions, generator=image_generator(seed, i))[:q]
                        for i in index.tolist()])


def unit_quantile(values: torch.Tensor, quantile: float, rule: str = "linear") -> torch.Tensor:
    """Per-column quantile of values [n, K] -> [K] by ``kthvalue`` (no size limit, unlike
    torch.quantile's 16M elements). ``linear``: torch.quantile's default, the value at
    0-based rank ``quantile * (n - 1)``; ``midrank``: the value at ``quantile * n - 0.5``
    (clamped to ``[0, n - 1]``), NetDissect-Lite's sketch readout on exact data (each
    sample at the middle of its rank's probability mass); both interpolate linearly."""
    if rule not in ("linear", "midrank"):
        raise ValueError(f"quantile rule {rule!r}: choose linear or midrank")
    n = values.shape[0]
    columns = values.float().T.contiguous()  # [K, n]
    pos = quantile * (n - 1) if rule == "linear" else min(max(quantile * n - 0.5, 0.0), n - 1)
    lo = min(int(math.floor(pos)), n - 1)
    below = columns.kthvalue(lo + 1, dim=1).values
    if lo + 1 >= n or pos == lo:
        return below
    above = columns.kthvalue(lo + 2, dim=1).values
    return torch.lerp(below, above, pos - lo)


# ----------------------------------------------------------------------------- the pass


class ExemplarModule(L.LightningModule):
    """Wraps a :class:`SpatialExtractor`; ``predict_step`` updates a running top-k buffer
    and the level sample and returns only the number of images it saw (not None, which
    Lightning warns about)."""

    def __init__(self, extractor: SpatialExtractor, k: int, n_images: int,
                 quantile_samples: int, seed: int):
        super().__init__()
        self.extractor = extractor
        self.k, self.n_images = k, n_images
        self.quantile_samples, self.seed = quantile_samples, seed
        self.top: TopK | None = None
        self.samples: list[torch.Tensor] = []  # [B * q, K] each, on the CPU

    def predict_step(self, batch, batch_idx):
        images, index = batch
        if images.numel() == 0:
            return 0
        maps = self.extractor(images).float()  # [B, K, h, w]
        index = index.to(maps.device)
        candidates = batch_candidates(maps, index)
        if self.top is None:
            self.top = TopK(*(t[:, :0] for t in candidates))  # empty, of the right shapes
        self.top = merge_top_k(self.top, candidates, self.k)
        self.samples.append(self._sample(maps, index))
        return len(index)

    def _sample(self, maps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """[B' * q] sampled positions of maps [B, K, h, w] -> values [B' * q, K] (CPU),
        B' the images of the batch drawn into the sample (all when N <= quantile_samples)."""
        keep = sampled_images(index.cpu(), self.n_images, self.quantile_samples, self.seed)
        maps, index = maps[keep.to(maps.device)], index[keep.to(index.device)]
        b, n_units, h, w = maps.shape
        if b == 0:
            return maps.new_empty(0, n_units).cpu()
        q = samples_per_image(self.n_images, h * w, self.quantile_samples)
        pos = sample_positions(index.cpu(), h * w, q, self.seed).to(maps.device)
        values = maps.flatten(2).gather(2, pos[:, None, :].expand(b, n_units, q))
        return values.transpose(1, 2).reshape(b * q, n_units).cpu()

    def local_result(self) -> tuple[TopK, torch.Tensor] | None:
        """This rank's (top-k buffer, level sample [n, K]) on the CPU; None if no image."""
        if self.top is None:
            return None
        return TopK(*(t.cpu() for t in self.top)), torch.cat(self.samples)


def _validate(n_images: int, k: int, quantile: float, quantile_samples: int) -> None:
    if n_images == 0:
        raise ValueError("the probe dataset is empty: no exemplars to collect")
    if not 1 <= k <= n_images:
        raise ValueError(f"explainer.k={k} exemplars per unit, but the probe dataset has "
                         f"{n_images} images: choose 1 <= explainer.k <= {n_images}")
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"explainer.quantile={quantile} must lie strictly between 0 and 1 "
                         "(MILAN: 0.99)")
    if quantile_samples < 1:
        raise ValueError(f"explainer.quantile_samples={quantile_samples} must be >= 1")


def _merge(parts: list[tuple[TopK, torch.Tensor] | None], k: int) -> tuple[TopK, torch.Tensor]:
    parts = [p for p in parts if p is not None]
    if not parts:
        raise ValueError("no image of the probe dataset could be read")
    top = parts[0][0]
    for other, _ in parts[1:]:
        top = merge_top_k(top, other, k)
    return top, torch.cat([s for _, s in parts])


def collect_exemplars(extractor: SpatialExtractor, dataset: Dataset, transform, trainer,
                      k: int = 15, quantile: float = 0.99, quantile_samples: int = 16384,
                      seed: int = 0, batch_size: int = 64, num_workers: int = 0,
                      rule: str = "linear") -> Exemplars:
    """MILAN's exemplars of every unit of ``extractor`` over the probe ``dataset``.

    Args:
        extractor: gives unit maps [B, K, h, w] of images [B, 3, H, W].
        dataset: PIL images (``None`` for an unreadable one: skipped).
        transform: PIL image -> model input [3, H, W].
        trainer: a Lightning trainer (one process, or DDP inside a
            :func:`cosy_bench.distributed.session.session`).
        k: exemplars per unit (``explainer.k``, MILAN: 15).
        quantile: the level's quantile over all positions (``explainer.quantile``, 0.99).
        quantile_samples: target number of sampled positions per unit for the level: each
            image gives ``min(h * w, max(1, ceil(quantile_samples / N)))`` positions; when
            N > quantile_samples, a seeded ``quantile_samples / N`` share of the images gives
            one each, so memory stays bounded (about quantile_samples x K values) for any N.
        seed: seeds the positions sampled from each image, with its dataset index.
        rule: the level's interpolation rule (:func:`unit_quantile`: linear or midrank).

    Returns:
        :class:`Exemplars` on the CPU: indices [K, k], scores [K, k], maps [K, k, h, w],
        levels [K]; the same on every rank and for any batch size.
    """
    _validate(len(dataset), k, quantile, quantile_samples)
    require_session(trainer)
    data = _Transformed(dataset, transform)
    loader = DataLoader(data, batch_size=batch_size, sampler=ShardSampler(data),
                        num_workers=num_workers, collate_fn=_collate)
    module = ExemplarModule(extractor, k, len(dataset), quantile_samples, seed)
    trainer.predict(module, dataloaders=loader, return_predictions=False)
    top, samples = _merge(gather_objects(module.local_result()), k)
    if samples.shape[0] == 0:
        raise ValueError(f"no position was drawn for the quantile levels: raise "
                         f"explainer.quantile_samples (now {quantile_samples})")
    if top.indices.shape[1] < k:
        raise ValueError(f"explainer.k={k}, but only {top.indices.shape[1]} images of the "
                         "probe dataset could be read")
    log.info("exemplars: top %d of %d probe images for %d units; levels at quantile %g "
             "estimated from %d sampled positions per unit", k, len(dataset),
             top.indices.shape[0], quantile, samples.shape[0])
    # clone: tensors made in the predict loop are inference tensors, which refuse in-place use
    return Exemplars(indices=top.indices.long().clone(), scores=top.scores.float().clone(),
                     maps=top.maps.float().clone(), levels=unit_quantile(samples, quantile, rule).clone())
