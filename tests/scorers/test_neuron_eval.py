"""NeuronEval's metrics as scorers: values against direct formulas / scikit-learn, shapes,
the registry, and the AUC scorer against torchmetrics' binary_auroc (and its sigmoid)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, jaccard_score

from cosy_bench.scorers import SCORERS, score_all
from cosy_bench.scorers.neuron_eval import NEURON_EVAL, binarize


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    control = torch.randn(400, 6, generator=g, dtype=torch.float64)
    concept = torch.randn(30, 6, generator=g, dtype=torch.float64) + torch.linspace(-1, 3, 6)
    return control, concept


def columns(control, concept, k):
    a = torch.cat([control[:, k], concept[:, k]]).numpy()
    c = np.r_[np.zeros(len(control)), np.ones(len(concept))]
    return a, c


def test_metrics_equal_their_per_neuron_definitions(data):
    control, concept = data
    alpha = 0.05
    got = {n: NEURON_EVAL[n](control, concept, **({"alpha": alpha} if n in
           ("auprc", "f1", "iou", "balanced_accuracy") else {})) for n in NEURON_EVAL}
    for k in range(6):
        a, c = columns(control, concept, k)
        top = (a >= np.sort(a)[::-1][int(np.ceil(alpha * len(a))) - 1]).astype(int)
        assert got["correlation"][k] == pytest.approx(np.corrcoef(a, c)[0, 1], abs=1e-5)
        assert got["cosine"][k] == pytest.approx(a @ c / np.linalg.norm(a) / np.linalg.norm(c))
        assert got["inverse_auprc"][k] == pytest.approx(average_precision_score(c, a), abs=1e-6)
        assert got["auprc"][k] == pytest.approx(average_precision_score(top, c), abs=1e-6)
        assert got["f1"][k] == pytest.approx(f1_score(c, top), abs=1e-6)
        assert got["iou"][k] == pytest.approx(jaccard_score(c, top), abs=1e-6)
        tp, tn = (top * c).sum(), ((1 - top) * (1 - c)).sum()
        assert got["balanced_accuracy"][k] == pytest.approx(
            (tp / top.sum() + tn / (1 - top).sum()) / 2)
    # a concept the neuron ignores scores lower than one it fires on, on every metric
    for name, v in got.items():
        assert v[5] > v[0], name


def test_registered_in_scorers_and_score_all(data):
    control, concept = data
    out = score_all(["auc", *NEURON_EVAL], control, concept)
    assert list(out) == ["auc", *NEURON_EVAL]
    for name in NEURON_EVAL:
        assert SCORERS[name] is NEURON_EVAL[name]
        assert out[name].shape == (6,) and out[name].dtype == torch.float64
    single = score_all(list(NEURON_EVAL), control[:, :1], concept[:, :1])  # K = 1 works too
    for name in NEURON_EVAL:
        torch.testing.assert_close(single[name], out[name][:1])


def test_binarize_keeps_ties_at_the_cutoff():
    a = torch.tensor([[3.0], [2.0], [2.0], [1.0]])
    assert binarize(a, 0.5).flatten().tolist() == [1, 1, 1, 0]


def test_auc_equals_torchmetrics_binary_auroc_inside_0_1_and_differs_by_the_sigmoid():
    from torchmetrics.functional.classification import binary_auroc

    g = torch.Generator().manual_seed(1)
    control = torch.rand(300, 1, generator=g, dtype=torch.float64)
    concept = torch.rand(20, 1, generator=g, dtype=torch.float64) * 0.5 + 0.4
    target = torch.r_[torch.zeros(300), torch.ones(20)].long() if hasattr(torch, "r_") else \
        torch.cat([torch.zeros(300), torch.ones(20)]).long()
    preds = torch.cat([control, concept])[:, 0]
    assert SCORERS["auc"](control, concept)[0] == pytest.approx(
        float(binary_auroc(preds, target)), abs=1e-7)
    # large activations: torchmetrics squashes them with a sigmoid, which ties them in
    # float32; CoSy's AUC ranks the raw values
    big = 40.0 + torch.arange(320, dtype=torch.float64)[:, None] / 10
    control, concept = big[:300], big[300:]
    assert SCORERS["auc"](control, concept)[0] == 1.0
    assert float(binary_auroc(torch.cat([control, concept])[:, 0].float(), target)) < 0.6


def _their_correlation(control: torch.Tensor, concept: torch.Tensor) -> torch.Tensor:
    """NeuronEval's ``correlation`` as its ``metrics.py`` defines it, rewritten: both vectors
    standardised with the unbiased std (``torch.std``), then their dot product over ``D``."""
    a = torch.cat([control, concept]).double()
    c = torch.zeros_like(a)
    c[control.shape[0]:] = 1.0

    def standard(x):
        x = x - x.mean(0, keepdim=True)
        return x / x.std(0, keepdim=True).clamp_min(1e-9)

    return (standard(a) * standard(c)).sum(0) / a.shape[0]


def _their_inverse_auc(control: torch.Tensor, concept: torch.Tensor,
                       gen: torch.Generator) -> torch.Tensor:
    """NeuronEval's ``inverse_auc``, rewritten: ranks after adding uniform noise of 1e-7
    (ties broken at random), rank sum of the concept inputs, as a Mann-Whitney U / (N M)."""
    a = torch.cat([control, concept]).double()
    a = a + 1e-7 * torch.rand(a.shape, generator=gen, dtype=torch.float64)
    ranks = a.argsort(0).argsort(0).double()  # 0 = smallest
    m, n = concept.shape[0], control.shape[0]
    return (ranks[n:].sum(0) - m * (m - 1) / 2) / (m * n)


def test_neuron_evals_correlation_is_ours_times_d_minus_1_over_d():
    from cosy_bench.scorers.neuron_eval import correlation

    gen = torch.Generator().manual_seed(0)
    for n, m in ((50, 5), (200, 50), (1000, 3)):
        control = torch.randn(n, 4, generator=gen, dtype=torch.float64)
        concept = torch.randn(m, 4, generator=gen, dtype=torch.float64) + 1.0
        d = n + m
        ours, theirs = correlation(control, concept), _their_correlation(control, concept)
        torch.testing.assert_close(theirs, ours * (d - 1) / d, rtol=1e-12, atol=1e-12)
        assert not torch.allclose(theirs, ours, rtol=1e-6, atol=0)  # not equal as such


def test_inverse_auc_ties_random_noise_there_mid_ranks_here():
    from cosy_bench.scorers.cosy import auc

    gen = torch.Generator().manual_seed(1)
    control = torch.randn(300, 3, generator=gen, dtype=torch.float64)
    concept = torch.randn(20, 3, generator=gen, dtype=torch.float64) + 0.5
    # without ties they agree (to the noise, 1e-7 below any gap here)
    torch.testing.assert_close(_their_inverse_auc(control, concept, gen),
                               auc(control, concept).double(), rtol=0, atol=1e-12)
    # with ties (a ReLU unit: zeros) theirs varies with the noise; mid-ranks give its mean
    control, concept = control.clamp_min(0.0), concept.clamp_min(0.0)
    draws = torch.stack([_their_inverse_auc(control, concept, gen) for _ in range(400)])
    ours = auc(control, concept).double()
    assert (draws.std(0) > 1e-3).all()  # the noise moves their value
    torch.testing.assert_close(draws.mean(0), ours, rtol=0, atol=4 * draws.std(0).max() / 20)
