"""The stopping rule of n_images=auto."""

from __future__ import annotations

import pytest
import torch

from cosy_bench.scorers.intervals import auc_ci
from cosy_bench.scorers.stopping import decided


def test_separated_neurons_are_decided_early_and_chance_ones_are_not():
    gen = torch.Generator().manual_seed(0)
    control = torch.randn(2000, 3, generator=gen)
    concept = torch.randn(10, 3, generator=gen)
    concept[:, 0] += 6.0  # AUC ~ 1: interval of width ~0
    done = decided(control, concept, ci_width=0.1)
    low, high = auc_ci(control, concept)
    assert done.tolist() == ((high - low) < 0.1).tolist()
    assert done[0] and not done[1] and not done[2]


def test_threshold_outside_the_interval_decides():
    gen = torch.Generator().manual_seed(1)
    control = torch.randn(2000, 2, generator=gen)
    concept = torch.randn(10, 2, generator=gen) + torch.tensor([2.0, 0.0])
    assert decided(control, concept, ci_width=0.01).tolist() == [False, False]
    low, _ = auc_ci(control, concept)
    assert low[0] > 0.6
    assert decided(control, concept, ci_width=0.01, threshold=0.6).tolist() == [True, False]


def test_one_image_decides_nothing_and_bad_settings_are_errors():
    control = torch.randn(100, 2)
    assert decided(control, torch.full((1, 2), 9.0)).tolist() == [False, False]
    with pytest.raises(ValueError, match="ci_width"):
        decided(control, torch.randn(3, 2), ci_width=0)
    with pytest.raises(ValueError, match="threshold"):
        decided(control, torch.randn(3, 2), threshold=2.0)
