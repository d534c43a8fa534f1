"""The random baseline: each neuron gets a concept drawn (seeded) from a concept set."""

from __future__ import annotations

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf

from cosy_bench.explainers.base import Explainer, Explanations
from cosy_bench.explainers.concept_sets import load_concept_set


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
