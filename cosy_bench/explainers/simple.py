"""Baseline explainers: a seeded random concept per neuron, and the known ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from cosy_bench.explainers.base import Explainer, Explanations


def load_concept_set(spec, ctx) -> list[str]:
    """``None``: the model's class names; ``"ground_truth"``: the distinct ground-truth labels
    of the layer; a config with ``_target_`` (a ``concepts`` group entry): the list it builds;
    a list: itself; another string: a text file, one concept per line."""
    if isinstance(spec, (DictConfig, dict)) and "_target_" in spec:
        names = [str(n) for n in instantiate(spec)]
        if not names:
            raise ValueError(f"the concept set {spec['_target_']} is empty (explainer.concepts)")
        return names
    if spec == "ground_truth":
        truth = ctx.model.ground_truth(ctx.layer)
        if not truth:
            raise ValueError(f"explainer.concepts=ground_truth, but layer {ctx.layer.name!r} of "
                             f"{ctx.model.name!r} has no ground truth")
        return list(dict.fromkeys(truth))
    if spec is None:
        names = ctx.model.class_names
        if not names:
            raise ValueError(f"model {ctx.model.name!r} has no class names to draw concepts "
                             "from; set explainer.concepts to a list or a text file")
        return list(names)
    if isinstance(spec, str):
        path = Path(spec).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"concept file not found: {spec} (explainer.concepts)")
        names = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        names = [n for n in names if n]
    else:
        names = [str(n) for n in spec]
    if not names:
        raise ValueError("the concept set is empty (explainer.concepts)")
    return names


class RandomExplainer(Explainer):
    """Each neuron gets a concept drawn uniformly (seeded) from the concept set.

    By default (``conf/explainer/random.yaml``) the set is the run's ``concepts`` group, the
    vocabulary the other explainers choose from, so "random" means "a label an explainer could
    have given". Drawing from the model's own class names (``concepts: null``) is a harder
    baseline: a wrong class synthesises confident images of another class, which push the
    neuron below its control level, so AUC falls under 0.5.
    """

    name = "random"

    def __init__(self, concepts=None, seed: int = 0):
        self.concepts = concepts
        self.seed = seed

    def cache_key(self) -> dict:
        concepts = self.concepts
        if isinstance(concepts, (DictConfig, ListConfig)):
            concepts = OmegaConf.to_container(concepts, resolve=True)
        return {"name": self.name, "concepts": concepts, "seed": self.seed}

    def explain(self, ctx) -> Explanations:
        names = load_concept_set(self.concepts, ctx)
        picks = np.random.default_rng(self.seed).integers(0, len(names), size=ctx.num_neurons)
        return Explanations({k: names[int(p)] for k, p in enumerate(picks)})


class GroundTruthExplainer(Explainer):
    """The known concept of each unit (class names on ``output``; toy-world concept units)."""

    name = "ground_truth"

    def explain(self, ctx) -> Explanations:
        truth = ctx.model.ground_truth(ctx.layer)
        if truth is None:
            raise ValueError(
                f"explainer=ground_truth needs units with known labels, but layer "
                f"{ctx.layer.name!r} of model {ctx.model.name!r} has none. Layers with ground "
                f"truth: {[n for n, s in ctx.model.layers.items() if s.ground_truth]}"
            )
        if len(truth) != ctx.num_neurons:
            raise ValueError(f"layer {ctx.layer.name!r} has {ctx.num_neurons} units but its "
                             f"ground truth lists {len(truth)} names")
        return Explanations(dict(enumerate(truth)))


class PrecomputedExplainer(Explainer):
    """Explanations read from a CSV in a published method's format (see ``precomputed.py``)."""

    name = "precomputed"

    def __init__(self, path: str, layer: str | None = None, format: str | None = None):
        self.path = path
        self.layer = layer
        self.format = format

    def cache_key(self) -> dict:
        p = Path(self.path)
        stamp = p.stat().st_mtime_ns if p.exists() else None
        return {**super().cache_key(), "mtime": stamp}

    def explain(self, ctx) -> Explanations:
        from cosy_bench.explainers.precomputed import read_explanations

        kwargs = {"format": self.format} if self.format else {}
        return Explanations(read_explanations(self.path, layer=self.layer, **kwargs))


class ShuffledExplainer(Explainer):
    """Another explainer's explanations given to the wrong neurons (a seeded derangement):
    CoSy's sanity check that a score depends on the match of neuron and explanation."""

    name = "shuffled"

    def __init__(self, base, seed: int = 0):
        self.base = base
        self.seed = seed

    def cache_key(self) -> dict:
        base = OmegaConf.to_container(self.base, resolve=True) \
            if isinstance(self.base, DictConfig) else self.base
        return {"name": self.name, "base": base, "seed": self.seed}

    def explain(self, ctx) -> Explanations:
        base = instantiate(self.base)
        texts = base.explain(ctx).texts
        neurons = sorted(texts)
        if len(neurons) < 2:
            raise ValueError("explainer=shuffled needs at least two explained neurons")
        rng = np.random.default_rng(self.seed)
        # a random cyclic shift of a random order is a derangement: nobody keeps their own
        order = rng.permutation(len(neurons))
        shift = int(rng.integers(1, len(neurons)))
        donors = np.roll(order, shift)
        return Explanations({neurons[int(o)]: texts[neurons[int(d)]]
                             for o, d in zip(order, donors, strict=True)})
