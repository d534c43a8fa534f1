"""An explainer: each neuron gets the concept whose probe images raise it most.

For every neuron ``k`` and concept ``c`` of a labelled probe set: the mean activation on the
images showing ``c`` minus the mean on the others; the label is the concept with the largest
difference. Vectorised over neurons and concepts: one ``[C, N] @ [N, K]`` product.
"""

from __future__ import annotations

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cosy_bench.explainers.base import Explainer, Explanations


class MeanDifferenceExplainer(Explainer):
    """``probe``: the config of a labelled probe set (its dataset has ``labels`` bool
    ``[N, C]`` and ``concepts``, C names), e.g. the run's ``probe`` group."""

    name = "mean_difference"

    def __init__(self, probe):
        self.probe = probe

    def cache_key(self) -> dict:
        # everything that decides the explanations (the pipeline adds model, layer, weights)
        return {"name": self.name, "probe": OmegaConf.to_container(self.probe, resolve=True)}

    def explain(self, ctx) -> Explanations:
        probe = instantiate(self.probe)
        acts, index = ctx.activations(probe, "probe", with_index=True)  # [N, K], [N]
        labels = probe.labels[index].double()  # [N, C]
        acts = acts.double()
        shown = labels.sum(0).clamp_min(1)[:, None]  # [C, 1]
        hidden = (1 - labels).sum(0).clamp_min(1)[:, None]
        mean_in = labels.T @ acts / shown  # [C, K]
        mean_out = (1 - labels).T @ acts / hidden
        best = torch.argmax(mean_in - mean_out, dim=0)  # [K]
        return Explanations({k: probe.concepts[int(c)] for k, c in enumerate(best)})
