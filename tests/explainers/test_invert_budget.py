"""INVERT within ``explainer.max_memory_gb``: the neuron chunk follows the budget, chunks
change no result, a budget below one neuron names the option, the budget is not part of the
cache key (:mod:`cosy_bench.explainers.budget`)."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from cosy_bench.explainers import budget
from cosy_bench.explainers.invert import InvertExplainer, chunk_for_budget, invert, working_set


def test_chunk_follows_the_budget():
    n, c = 1_281_167, 1000  # ImageNet-train probes, one class label each
    fixed, per_neuron = working_set(n, c, n, 1, 5)
    assert per_neuron == 72 * n and fixed == n * c + 16 * n + 56 * n
    assert chunk_for_budget(n, c, n, 1, 5, 24.0) == 2**28 // per_neuron == 2  # 256 MiB aim
    assert chunk_for_budget(n, c, n, 1, 5, 1.5) == (int(1.5 * 2**30) - fixed) // per_neuron
    assert chunk_for_budget(50_000, 1000, 50_000, 1, 5, None) == 2**28 // (72 * 50_000)
    with pytest.raises(ValueError, match=r"INVERT: explainer\.max_memory_gb=1 GiB .*1\.51 GiB "
                                         r"\(one neuron at N=1281167"):
        chunk_for_budget(n, c, n, 3, 5, 1.0)  # 1.26 GB fixed + 8 N (3 B + 9) a neuron


def test_default_budget_is_min_of_4_gib_and_half_the_available(monkeypatch):
    monkeypatch.setattr(budget, "available_bytes", lambda: 6 * 2**30)
    assert budget.budget_bytes(None) == 3 * 2**30
    monkeypatch.setattr(budget, "available_bytes", lambda: None)
    assert budget.budget_bytes(None) == 4 * 2**30
    assert budget.budget_bytes(0.5) == 2**29
    with pytest.raises(ValueError, match=r"explainer\.max_memory_gb must be > 0"):
        budget.budget_bytes(-1)


def test_a_small_budget_changes_no_result_and_too_small_raises():
    gen = torch.Generator().manual_seed(1)
    labels = torch.rand(4000, 6, generator=gen) < 0.2
    acts = torch.randn(4000, 10, generator=gen) + 2 * labels[:, [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]]
    names = list("abcdef")
    base = invert(acts, labels, names, length=2, beam_size=3, pvalue=True)
    fixed, per = working_set(4000, 6, int(labels.sum()), 2, 3)
    tight = (fixed + per) / 2**30  # room for one neuron per chunk
    assert chunk_for_budget(4000, 6, int(labels.sum()), 2, 3, tight) == 1
    assert invert(acts, labels, names, length=2, beam_size=3, pvalue=True,
                  max_memory_gb=tight) == base
    with pytest.raises(ValueError, match=r"raise explainer\.max_memory_gb to at least"):
        invert(acts, labels, names, length=2, beam_size=3, max_memory_gb=tight / 2)


def test_budget_is_not_in_the_cache_key():
    assert (InvertExplainer(probe={"p": 1}, max_memory_gb=0.25).cache_key()
            == InvertExplainer(probe={"p": 1}).cache_key())


def test_yaml_option_reaches_the_explainer_and_not_the_key(compose, smoke, tmp_path):
    def build(*extra):
        return instantiate(compose(smoke(tmp_path, "explainer=invert", *extra)).explainer)

    tight, default = build("explainer.max_memory_gb=0.02"), build()
    assert (tight._max_memory_gb, default._max_memory_gb) == (0.02, None)
    assert tight.cache_key() == default.cache_key()
