"""The shuffled-neuron control: another explainer's labels given to the wrong neurons."""

from __future__ import annotations

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cosy_bench.explainers.base import Explainer, Explanations


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
