"""A scorer: how often a neuron's activation on its explanation's images beats the top 1%
of its control activations (higher is better)."""

from __future__ import annotations

import torch
from torch import Tensor


def top_rate(control: Tensor, concept: Tensor) -> Tensor:
    """Fraction of each neuron's ``M`` concept activations above its control 99th percentile.

    Args:
        control: ``[N, K]`` control activations.
        concept: ``[M, K]``; column ``k`` = neuron ``k`` on its explanation's images.

    Returns:
        float64 ``[K]`` in ``[0, 1]``.

    >>> control = torch.arange(100.0)[:, None]        # one neuron, 100 control images
    >>> top_rate(control, torch.tensor([[99.5], [50.0]])).tolist()
    [0.5]
    """
    cutoff = torch.quantile(control.double(), 0.99, dim=0)  # [K]
    return (concept.double() > cutoff).double().mean(dim=0)
