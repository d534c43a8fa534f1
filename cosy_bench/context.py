"""The run's context: what every stage and explainer of one run is handed.

The model and its layer, the layer's extractor, the cache, and the cached services built on
the predict loops: the layer's activations on a dataset (:meth:`RunContext.activations`) and
the units' exemplars (:meth:`RunContext.exemplars`). Imports no stage and no explainer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from cosy_bench.cache.claims import compute_once
from cosy_bench.cache.fingerprint import dataset_fingerprint, module_fingerprint
from cosy_bench.cache.store import Cache, save_tensors_atomic, stable_hash
from cosy_bench.cache.structure import expect_equal, expect_tensors
from cosy_bench.distributed.ranks import agreed, broadcast_object, is_rank_zero
from cosy_bench.loops.activations import collect_activations, resolve_num_workers
from cosy_bench.loops.exemplars import Exemplars, collect_exemplars
from cosy_bench.models import ModelBundle
from cosy_bench.models.layers import LayerExtractor, LayerSpec
from cosy_bench.scorers.sorted import SortedControl, sort_control

log = logging.getLogger("cosy_bench")


@dataclass
class RunContext:
    """What the stages of one run share."""

    cfg: DictConfig
    cache: Cache
    model: ModelBundle
    layer: LayerSpec
    extractor: LayerExtractor
    num_neurons: int
    stats: dict = field(default_factory=dict)
    #: the neurons the run will evaluate (``neurons`` config), known before explaining
    wanted: list[int] | None = None
    #: ``units=sae``: the sparse dictionary whose latents are the run's units (``encode_rows``,
    #: ``wrap_spatial``), its part of every cache key, and the context of the layer's neurons
    units: object = None
    units_key: dict | None = None
    base: RunContext | None = None

    def with_units(self, units, key: dict, num_units: int) -> RunContext:
        """The context whose units are ``units``' latents of this context's neurons: every
        activation (control, probe, synthetic images, unit maps) goes through its encoder
        and every cache key holds ``key``."""
        return RunContext(self.cfg, self.cache, self.model, self.layer,
                          units.wrap(self.extractor), num_units, stats=self.stats,
                          units=units, units_key=key, base=self)

    def spatial_extractor(self):
        """The unit maps [B, K, h, w] of the layer (latent maps under ``units=sae``: the
        encoder applied at every position)."""
        extractor = self.model.spatial_extractor(self.layer.name)
        return extractor if self.units is None else self.units.wrap_spatial(extractor)

    def trainer(self, name: str | None = None):
        """The run's Lightning trainer; ``name`` labels its progress bar (the pass)."""
        if name and self.cfg.trainer.get("enable_progress_bar", True):
            from cosy_bench.loops.progress import progress_bar

            return instantiate(self.cfg.trainer, callbacks=[progress_bar(name)])
        return instantiate(self.cfg.trainer)

    def stage_bar(self, name: str, unit: str, total, per_batch: bool = False):
        """One progress bar for a stage of several predict loops (:class:`StageBar`), shown
        on rank 0 when the trainer config shows bars."""
        from cosy_bench.loops.progress import StageBar

        enabled = bool(self.cfg.trainer.get("enable_progress_bar", True)) and is_rank_zero()
        return StageBar(name, unit, total, enabled=enabled, per_batch=per_batch)

    def quiet_trainer(self, callbacks: list | None = None):
        """The run's trainer without a bar of its own (a :class:`StageBar` counts the stage)."""
        return instantiate(self.cfg.trainer, enable_progress_bar=False,
                           callbacks=list(callbacks or []))

    #: the control activations this run computed or read, by cache path: sorted without a
    #: second load (and without a "cache hit" line right after computing them); dropped
    #: once sorted (probe activations are not kept)
    _held: dict = field(default_factory=dict, init=False, repr=False)

    #: content fingerprint of the loaded weights (:func:`module_fingerprint`), made once
    _weights_digest: str | None = field(default=None, init=False, repr=False)

    @property
    def model_key(self) -> dict:
        """The model part of every cache key: the weights by content, not by name or path."""
        if self._weights_digest is None:
            self._weights_digest = module_fingerprint(self.model.module)
        precision = self.cfg.get("precision")  # autocast moves activations: in the key
        return {"model": self.model.name, "weights": self.model.weights_id,
                "weights_sha256": self._weights_digest,
                "layer": self.layer.name, "module": self.layer.module,
                "reduction": self.layer.reduction,
                **({"precision": precision} if precision not in (None, "float32") else {}),
                **({"units": self.units_key} if self.units_key is not None else {})}

    def dataset_key(self, dataset) -> dict:
        """The dataset part of a cache key: its name and, for image files, their contents."""
        fingerprint = dataset_fingerprint(dataset, self.cache.root / "fingerprints")
        return {"dataset": dataset.name, **({"content": fingerprint} if fingerprint else {})}

    def activations_path(self, dataset) -> Path:
        """Where the activations of the layer on ``dataset`` are cached."""
        key = stable_hash({**self.model_key, **self.dataset_key(dataset)})
        return self.cache.path("activations", key, ".safetensors")

    def _check_activations(self, tensors: dict) -> None:
        """An activations file's structure: activations float [N', K], index int [N'],
        skipped int [] (ValueError otherwise: the file is moved aside and recomputed)."""
        expect_tensors(tensors, {"activations": (2, "float"), "index": (1, "int"),
                                 "skipped": (0, "int")},
                       {"activations": (None, self.num_neurons or None)})  # 0: not known
        expect_equal("the number of indices", tensors["index"].shape[0],
                     tensors["activations"].shape[0])

    def _check_sorted(self, tensors: dict) -> None:
        """A sorted control's structure (:class:`SortedControl` plus ``skipped``)."""
        k = self.num_neurons or None  # 0: not known
        expect_tensors(tensors, {"values": (2, "float"), "mean": (1, "float"),
                                 "std": (1, "float"), "ties": (1, "float"),
                                 "constant": (1, "bool"), "skipped": (0, "int")},
                       {"values": (k, None), "mean": (k,), "std": (k,), "ties": (k,),
                        "constant": (k,)})

    def activations(self, dataset, what: str = "control", with_index: bool = False):
        """Activations [N', K] of the layer on the N' readable images of ``dataset``, cached by
        (model, layer, dataset); with ``with_index`` also their dataset indices [N']."""
        path = self.activations_path(dataset)
        if path in self._held:  # this run has them already (computed or read)
            tensors = self._held[path]
            return (tensors["activations"], tensors["index"]) if with_index \
                else tensors["activations"]
        cached = self.cache.load_tensors(path, check=self._check_activations)
        if cached is not None:
            if what == "control":
                self._held[path] = cached
            log.info("%s activations: cache hit (%s, %d images)", what, dataset.name,
                     cached["activations"].shape[0])
            self.stats[f"{what}_activations_computed"] = False
            self.stats[f"{what}_skipped"] = int(cached["skipped"].item())
            acts, index = cached["activations"], cached["index"]
            return (acts, index) if with_index else acts

        def compute():
            if self.base is not None:  # latents: the encoder on the (cached) neurons'
                acts, index = self.base.activations(dataset, what, with_index=True)
                log.info("%s activations: encoding %d images into %d latents", what,
                         acts.shape[0], self.num_neurons)
                return {"activations": self.units.encode_rows(acts), "index": index,
                        "skipped": torch.tensor(self.stats[f"{what}_skipped"])}
            log.info("%s activations: computing on %d images of %s", what, len(dataset),
                     dataset.name)
            acts, index = collect_activations(
                self.extractor, dataset, self.model.transform,
                self.trainer(f"{what} activations"), batch_size=self.cfg.batch_size,
                num_workers=self.cfg.num_workers, precision=self.cfg.get("precision"))
            skipped = len(dataset) - len(index)
            if skipped:
                log.warning("%d unreadable images of %s were skipped", skipped, dataset.name)
            return {"activations": acts, "index": index, "skipped": torch.tensor(skipped)}

        # one process of all the jobs sharing the cache computes them; the others wait for it
        tensors, computed = compute_once(
            path, compute, save_tensors_atomic,
            lambda p: self.cache.load_tensors(p, check=self._check_activations),
            what=f"{what} activations")
        self.stats[f"{what}_activations_computed"] = computed
        self.stats[f"{what}_skipped"] = int(tensors["skipped"].item())
        if what == "control":
            self._held[path] = tensors
        acts, index = tensors["activations"], tensors["index"]
        return (acts, index) if with_index else acts

    def sorted_control(self, dataset, what: str = "control") -> SortedControl:
        """The activations on ``dataset`` with every column sorted and the moments MAD needs
        (:func:`~cosy_bench.scorers.sorted.sort_control`), cached beside the activations.

        The entry's key holds the activations file's size and modification time, so it is
        derived from that very file: activations computed again (a new file) give a new key
        and the old sorted entry is never read again (it is deleted when seen stale).
        """
        flag = f"{what}_activations_computed"
        computed = bool(self.stats.get(flag))  # by this run, here or before
        source = self.activations_path(dataset)
        if not agreed(source.exists()):
            self.activations(dataset, what)
            computed = computed or self.stats[flag]
        stat = broadcast_object((source.stat().st_size, source.stat().st_mtime_ns)
                                if is_rank_zero() else None)
        path = source.with_name(f"{source.stem}.sorted-{stable_hash(stat, 12)}.safetensors")
        if is_rank_zero():
            for stale in source.parent.glob(f"{source.stem}.sorted-*.safetensors"):
                if stale != path:
                    stale.unlink(missing_ok=True)

        def compute():
            log.info("%s activations: sorting each column once (cached for later scoring)",
                     what)
            tensors = sort_control(self.activations(dataset, what)).to_tensors()
            return {**tensors, "skipped": torch.tensor(self.stats[f"{what}_skipped"])}

        tensors, sorted_now = compute_once(
            path, compute, save_tensors_atomic,
            lambda p: self.cache.load_tensors(p, check=self._check_sorted),
            what=f"sorted {what} activations")
        self._held.pop(source, None)  # sorted: the memo's work is done, free it
        if not sorted_now:
            log.debug("%s activations: cache hit (%s, sorted, %d images)", what, dataset.name,
                     tensors["values"].shape[1])
        self.stats[flag] = computed
        self.stats[f"{what}_skipped"] = int(tensors["skipped"].item())
        return SortedControl.from_tensors(tensors)

    def exemplars(self, dataset, k: int = 15, quantile: float = 0.99,
                  quantile_samples: int = 16384, seed: int = 0, rule: str = "linear"):
        """MILAN's exemplars of every unit of the layer on ``dataset`` (top-k images by the
        spatial max, their activation maps and the units' quantile levels by ``rule``, see
        :func:`~cosy_bench.loops.exemplars.unit_quantile`), cached by (model, layer,
        dataset, settings)."""
        key = stable_hash({**self.model_key, **self.dataset_key(dataset), "k": k,
                           "quantile": quantile, "quantile_samples": quantile_samples,
                           "seed": seed, "spatial": self.layer.spatial,
                           **({"rule": rule} if rule != "linear" else {})})
        path = self.cache.path("exemplars", key, ".safetensors")

        def check(tensors: dict) -> None:  # Exemplars' fields: K units, k images each
            expect_tensors(tensors, {"indices": (2, "int"), "scores": (2, "float"),
                                     "maps": (4, "float"), "levels": (1, "float")})
            units, top = tensors["indices"].shape
            expect_tensors(tensors, {"indices": (2, "int"), "scores": (2, "float"),
                                     "maps": (4, "float"), "levels": (1, "float")},
                           {"scores": (units, top), "maps": (units, top, None, None),
                            "levels": (units,)})

        def compute():
            log.info("exemplars: top-%d images of %d units on %d images of %s", k,
                     self.num_neurons, len(dataset), dataset.name)
            ex = collect_exemplars(self.spatial_extractor(), dataset,
                                   self.model.transform, self.trainer("exemplars"), k=k,
                                   quantile=quantile, rule=rule,
                                   quantile_samples=quantile_samples, seed=seed,
                                   batch_size=self.cfg.batch_size,
                                   num_workers=resolve_num_workers(self.cfg.num_workers,
                                                                   len(dataset)))
            return ex.to_tensors()

        tensors, computed = compute_once(path, compute, save_tensors_atomic,
                                         lambda p: self.cache.load_tensors(p, check=check),
                                         what="exemplars")
        self.stats["exemplars_computed"] = computed
        return Exemplars.from_tensors(tensors)


def count_neurons(extractor: LayerExtractor, transform) -> int:
    """K of a layer, from one forward pass on a blank image."""
    from PIL import Image

    with torch.no_grad():
        out = extractor(transform(Image.new("RGB", (256, 256), (127, 127, 127)))[None])
    return int(out.shape[1])
