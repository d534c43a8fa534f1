"""Baseline explainers: a seeded random concept per neuron, and the known ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cosy_bench.explainers.base import Explainer, Explanations


def load_concept_set(spec, ctx) -> list[str]:
    """``None``: the model's class names; a list: itself; a string: a text file, one per line."""
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
    """Each neuron gets a concept drawn uniformly (seeded) from the concept set."""

    name = "random"

    def __init__(self, concepts=None, seed: int = 0):
        self.concepts = concepts
        self.seed = seed

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
