"""The TopK SAE trainer (seeded, its figures) and the probe-set truth rule."""

from __future__ import annotations

import pytest
import torch

from cosy_bench.record import names_concept
from cosy_bench.units.train import TrainSettings, evaluate, train_topk_sae
from cosy_bench.units.truth import match_fraction, monosemantic_fraction, probe_truth


def _sparse_data(n=600, c=12, atoms=24, seed=0):
    """x = z D with 2 of ``atoms`` random unit atoms active per row (a planted dictionary)."""
    g = torch.Generator().manual_seed(seed)
    dic = torch.nn.functional.normalize(torch.randn(atoms, c, generator=g), dim=1)
    z = torch.zeros(n, atoms)
    idx = torch.stack([torch.randperm(atoms, generator=g)[:2] for _ in range(n)])
    z.scatter_(1, idx, 1 + torch.rand(n, 2, generator=g))
    return 3.0 * z @ dic + 5.0  # off-centre and scaled: the trainer normalises


def test_training_is_seeded_and_reconstructs_a_planted_sparse_code():
    x = _sparse_data()
    settings = TrainSettings(d_sae=32, k=2, epochs=30, batch_size=64, seed=3)
    a, ma = train_topk_sae(x, settings, progress=False)
    b, mb = train_topk_sae(x, settings, progress=False)
    for name, t in a.tensors().items():
        assert torch.equal(t, b.tensors()[name]), name
    assert ma["r2"] == mb["r2"] > 0.8
    assert ma["l0"] <= 2.0 and 0.0 <= ma["dead_fraction"] < 0.5
    again = evaluate(a, x)  # the figures are the dictionary's on the training data
    assert again["r2"] == pytest.approx(ma["r2"])
    other, _ = train_topk_sae(x, TrainSettings(d_sae=32, k=2, epochs=30, batch_size=64,
                                               seed=4), progress=False)
    assert not torch.equal(other.W_enc, a.W_enc)


def test_bad_training_settings_are_named():
    with pytest.raises(ValueError, match="units.k=9 must be between 1 and the dictionary size 8"):
        train_topk_sae(torch.randn(10, 4), TrainSettings(d_sae=8, k=9), progress=False)


def test_probe_truth_is_the_concepts_at_auroc_090():
    labels = torch.zeros(100, 3, dtype=torch.bool)
    labels[:30, 0] = True  # concept a on images 0..29
    labels[30:60, 1] = True  # b on 30..59
    acts = torch.zeros(100, 4)
    acts[:30, 0] = 1.0  # unit 0: a only
    acts[:60, 1] = 1.0  # unit 1: a or b; AUROC for each: 40/70 + 30/70 / 2 = 0.786
    acts[:, 2] = -acts[:, 0]  # unit 2: off on a (AUROC 0 for a), no truth
    acts[:, 3] = torch.arange(100.0)  # unit 3: nothing
    truth = probe_truth(acts, labels, ["a", "b", "c"])
    assert truth == ["a", "", "", ""]
    assert probe_truth(acts, labels, ["a", "b", "c"], min_auroc=0.78)[1] == "a|b"
    assert monosemantic_fraction(["a", "a|b", "", "b"]) == pytest.approx(2 / 3)
    assert monosemantic_fraction(["", ""]) is None
    assert match_fraction(["red", "circle", "x", "sky"], ["red|circle", "circle", "", "dots"],
                          names_concept) == pytest.approx(2 / 3)
