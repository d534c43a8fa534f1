"""The probe-set truth of a unit (a neuron or a latent), by one rule for both: the planted
concepts whose probe-set AUROC of the unit is at least ``min_auroc`` (0.9). A unit with none
has no truth and is left out of the matches; one with exactly one is monosemantic.

Truth strings join the concepts with ``|`` in the probe set's concept order (``red|stripes``);
an empty string is no truth.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from cosy_bench.explainers.auroc import auroc_matrix

SEP = "|"


def probe_truth(acts: torch.Tensor, labels: torch.Tensor, concepts: list[str],
                min_auroc: float = 0.9) -> list[str]:
    """Per unit, its truth string.

    Args:
        acts: float [N, K], the units' activations on N probe images.
        labels: bool [N, C], which of the C concepts each image shows.
        concepts: the C concept names.
        min_auroc: the AUROC a concept needs to be part of a unit's truth.

    Returns:
        K strings (``""``: no concept reaches ``min_auroc``).
    """
    if labels.shape != (acts.shape[0], len(concepts)):
        raise ValueError(f"probe labels {tuple(labels.shape)} do not fit {acts.shape[0]} "
                         f"images and {len(concepts)} concepts")
    auc = torch.nan_to_num(auroc_matrix(acts.float(), labels.bool()), nan=0.0)  # [K, C]
    hits = auc >= min_auroc
    return [SEP.join(concepts[c] for c in row.nonzero().flatten().tolist()) for row in hits]


def truth_sets(truth: list[str]) -> list[list[str]]:
    """The concepts of each truth string ([] for no truth)."""
    return [[c for c in str(t).split(SEP) if c] for t in truth]


def monosemantic_fraction(truth: list[str]) -> float | None:
    """Of the units with a truth, the fraction with exactly one concept (None: none has one)."""
    sizes = [len(s) for s in truth_sets(truth) if s]
    return sum(1 for s in sizes if s == 1) / len(sizes) if sizes else None


def match_fraction(explanations: list[str], truth: list[str], names) -> float | None:
    """Of the units with a truth, the fraction whose explanation names one of its concepts
    (``names(explanation, concept) -> bool``, :func:`cosy_bench.record.names_concept`)."""
    hits = [any(names(e, c) for c in s) for e, s in zip(explanations, truth_sets(truth),
                                                        strict=True) if s]
    return sum(hits) / len(hits) if hits else None


def units_meta(cfg: DictConfig) -> dict:
    """A run's identity beyond its layer: for ``units=sae`` the layer is named ``LAYER+sae``
    wherever runs are told apart (tables, comparisons, W&B), with ``units`` and
    ``base_layer`` saying what it is; nothing for neurons."""
    target = str(OmegaConf.select(cfg, "units._target_", default="") or "")
    if not target or target.endswith(".Neurons"):
        return {}
    layer = cfg.layer.name or cfg.model.default_layer
    return {"layer": f"{layer}+sae", "units": "sae", "base_layer": layer}
