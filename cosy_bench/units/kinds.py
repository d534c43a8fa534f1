"""``units=neurons`` and ``units=sae``: what a run's units are, and their probe-set truth.

Both kinds are Hydra targets (``conf/units/*.yaml``). :meth:`Units.attach` turns the run's
context into the context of its units; :meth:`Units.probe_truth` gives each unit's truth by
the AUROC rule of :mod:`cosy_bench.units.truth`; :meth:`Units.summary` is the ``units`` block
of summary.json.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.utils import instantiate

from cosy_bench.cache.checked import tensors_digest
from cosy_bench.cache.claims import compute_once
from cosy_bench.cache.store import stable_hash
from cosy_bench.context import RunContext
from cosy_bench.units.dictionary import SparseDictionary
from cosy_bench.units.formats import (
    from_suite_file,
    load_dictionary,
    metrics_of,
    read_metadata,
    save_dictionary,
)
from cosy_bench.units.train import TrainSettings, train_topk_sae
from cosy_bench.units.truth import match_fraction, monosemantic_fraction, probe_truth, truth_sets

log = logging.getLogger("cosy_bench")

TRUTH_MODES = ("auto", "always", "never")
#: a trained TopK SAE's k when ``units.k`` is null: a quarter of the layer's units, at least 1
#: and at most ``MAX_DEFAULT_K`` (toy scenes show about 4 of the 25 concepts each)
MAX_DEFAULT_K = 16


def default_k(d_in: int, d_sae: int) -> int:
    return max(1, min(MAX_DEFAULT_K, d_in // 4, d_sae))


class Units:
    """What both kinds share: the truth rule's settings.

    Args:
        truth: ``auto`` (latents always; neurons where the probe activations are cached
            already, e.g. after INVERT or CLIP-Dissect), ``always`` or ``never``.
        truth_min_auroc: the probe-set AUROC a planted concept needs to be in a unit's truth.
    """

    kind = "units"

    def __init__(self, truth: str = "auto", truth_min_auroc: float = 0.9):
        if truth not in TRUTH_MODES:
            raise ValueError(f"units.truth={truth!r}: choose one of {TRUTH_MODES}")
        if not 0.5 <= float(truth_min_auroc) <= 1.0:
            raise ValueError(f"units.truth_min_auroc={truth_min_auroc}: expected 0.5 .. 1")
        self.truth, self.min_auroc = truth, float(truth_min_auroc)
        self.info: dict = {}

    def attach(self, ctx: RunContext, control_ds) -> RunContext:
        """The context whose units the run evaluates."""
        return ctx

    def probe_truth(self, ctx: RunContext) -> list[str] | None:
        """Each unit's truth string (:func:`~cosy_bench.units.truth.probe_truth`), or None
        (a note in :attr:`info`) where it is off or the probe set has no concept labels."""
        from cosy_bench.data.probe import probe_concepts

        if self.truth == "never":
            self.info["truth"] = "off (units.truth=never)"
            return None
        try:
            probe = instantiate(ctx.cfg.probe)
        except Exception as err:  # noqa: BLE001 - a missing folder, a bad config: no truth
            self.info["truth"] = f"the probe set cannot be built here ({err})"
            return None
        if not hasattr(probe, "labels") or not hasattr(probe, "concepts"):
            self.info["truth"] = f"the probe set {probe.name} has no concept labels"
            return None
        if self.truth == "auto" and ctx.units is None and \
                not ctx.activations_path(probe).exists():
            self.info["truth"] = "not computed: no cached probe activations (units.truth=always)"
            return None
        kept = {k: ctx.stats[k] for k in ("probe_activations_computed", "probe_skipped")
                if k in ctx.stats}
        acts, index = ctx.activations(probe, "probe", with_index=True)
        ctx.stats.update(kept)  # what the explainer's pass said stays said
        truth = probe_truth(acts, probe.labels[index], probe_concepts(probe, ctx.model),
                            self.min_auroc)
        self.info.update(truth_probe=probe.name, truth_min_auroc=self.min_auroc)
        return truth

    def summary(self, units: list[int], texts: list[str], truth: list[str] | None,
                names) -> dict:
        """The ``units`` block of summary.json over the evaluated ``units`` (indices) and their
        explanations ``texts``; ``names(explanation, concept)`` decides a match."""
        out = {"kind": self.kind, **self.info}
        if truth is not None:
            mine = [truth[k] for k in units]
            with_truth = sum(1 for s in truth_sets(mine) if s)
            out.update(n_units=len(units), n_with_truth=with_truth,
                       monosemantic_fraction=monosemantic_fraction(mine),
                       ground_truth_match=match_fraction(texts, mine, names))
        return out


class Neurons(Units):
    """``units=neurons``: the layer's own units (today's behaviour, same cache keys)."""

    kind = "neurons"


class SaeUnits(Units):
    """``units=sae``: the latents of a sparse dictionary on the layer's activations.

    Args:
        path: a dictionary file (:mod:`cosy_bench.units.formats`); None: a TopK SAE trained on
            the control set's activations and cached by content.
        activation: ``topk``/``relu``/``jumprelu`` where the file does not say.
        k: latents kept per image (topk): the file's; trained: :func:`default_k` when null.
        d_sae: dictionary size when trained (null: ``expansion`` x the layer's units).
        expansion, epochs, lr, batch_size, seed: training settings.
        device: where it trains (``cpu``, ``cuda``).
    """

    kind = "sae"

    def __init__(self, path: str | None = None, activation: str | None = None,
                 k: int | None = None, d_sae: int | None = None, expansion: int = 4,
                 epochs: int = 50, lr: float = 5e-3, batch_size: int = 256, seed: int = 0,
                 device: str = "cpu", truth: str = "auto", truth_min_auroc: float = 0.9):
        super().__init__(truth, truth_min_auroc)
        self.path, self.activation = path, activation
        self.k = None if k is None else int(k)
        self.d_sae, self.expansion = d_sae, int(expansion)
        self.epochs, self.lr, self.batch_size = int(epochs), float(lr), int(batch_size)
        self.seed, self.device = int(seed), device

    def attach(self, ctx: RunContext, control_ds) -> RunContext:
        if self.path:
            dictionary, metrics = load_dictionary(self.path, self.activation, self.k)
            source = str(Path(self.path).expanduser())
        else:
            dictionary, metrics = self._trained(ctx, control_ds)
            source = "trained"
        if dictionary.d_in != ctx.num_neurons:
            raise ValueError(f"units.path={self.path!r}: the dictionary reads d_in="
                             f"{dictionary.d_in} units but layer {ctx.layer.name!r} of "
                             f"{ctx.model.name!r} has {ctx.num_neurons}: give a dictionary "
                             "made for this layer")
        self.info["sae"] = {"source": source, **dictionary.settings(), **metrics}
        log.info("units=sae: %d latents (%s, %s%s) on %d units of layer %s", dictionary.d_sae,
                 source, dictionary.activation,
                 f", k={dictionary.k}" if dictionary.k else "", dictionary.d_in, ctx.layer.name)
        key = {"kind": "sae", "sha256": tensors_digest(dictionary.tensors()),
               **dictionary.settings()}
        return ctx.with_units(dictionary, key, dictionary.d_sae)

    def settings(self, d_in: int) -> TrainSettings:
        d_sae = int(self.d_sae) if self.d_sae is not None else self.expansion * d_in
        k = self.k if self.k is not None else default_k(d_in, d_sae)
        return TrainSettings(d_sae=d_sae, k=k, epochs=self.epochs, lr=self.lr,
                             batch_size=self.batch_size, seed=self.seed)

    def _trained(self, ctx: RunContext, control_ds) -> tuple[SparseDictionary, dict]:
        """The TopK SAE of the layer's control-set activations, trained once per content."""
        if self.activation not in (None, "topk"):
            raise ValueError(f"units.activation={self.activation!r}: training makes TopK SAEs; "
                             "give units.path to use another kind")
        acts = ctx.activations(control_ds, "control")
        settings = self.settings(acts.shape[1])
        settings.check(acts.shape[1], acts.shape[0])
        key = stable_hash({**ctx.model_key, **ctx.dataset_key(control_ds),
                           "sae": settings.key()})
        path = ctx.cache.path("sae", key, ".safetensors")
        progress = bool(ctx.cfg.trainer.get("enable_progress_bar", True))

        def compute():
            log.info("units=sae: training a TopK SAE (%d latents, k=%d, %d epochs) on %d x %d "
                     "control activations", settings.d_sae, settings.k, settings.epochs,
                     *acts.shape)
            return train_topk_sae(acts, settings, progress=progress, device=self.device)

        def load(p: Path):
            found = {}

            def check(tensors):  # a checksum-valid file the reader cannot use is damaged
                meta = read_metadata(p)
                dictionary = from_suite_file(tensors, meta, f"cached SAE {p.name}")
                shape = (dictionary.d_in, dictionary.d_sae, dictionary.activation, dictionary.k)
                want = (acts.shape[1], settings.d_sae, "topk", settings.k)
                if shape != want:
                    raise ValueError(f"(d_in, d_sae, activation, k) = {shape}, expected {want}")
                found["value"] = dictionary, metrics_of(meta)

            if ctx.cache.load_tensors(p, check=check) is None:
                return None
            return found["value"]

        (dictionary, metrics), computed = compute_once(
            path, compute, lambda p, v: save_dictionary(p, *v), load, what="SAE training")
        ctx.stats["sae_trained"] = computed
        return dictionary, metrics
