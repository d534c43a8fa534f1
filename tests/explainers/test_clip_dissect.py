"""CLIP-Dissect similarity functions against per-neuron references of the paper's equations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp, softmax

from cosy_bench.explainers.clip_dissect import label_neurons
from cosy_bench.explainers.clip_dissect import similarities as cd

N, M, K = 320, 24, 9


@pytest.fixture(scope="module")
def feats():
    """P [N, M] like CLIP cosines (0.1..0.35); target [N, K] with planted neurons 0..3."""
    rng = np.random.default_rng(0)
    p = 0.1 + 0.25 * rng.random((N, M))
    q = np.maximum(rng.normal(size=(N, K)), 0) + 0.01 * rng.random((N, K))
    for k, m in enumerate([5, 11, 17, 2]):  # neuron k follows concept m
        q[:, k] = 4 * p[:, m] + 0.01 * rng.random(N)
    return p, q


# ----------------------------------------------------------------------------------------------
# per-neuron references (float64 numpy)
# ----------------------------------------------------------------------------------------------


def ref_cos(p, q):
    out = np.empty((q.shape[1], p.shape[1]))
    for k in range(q.shape[1]):
        for m in range(p.shape[1]):
            out[k, m] = p[:, m] @ q[:, k] / (np.linalg.norm(p[:, m]) * np.linalg.norm(q[:, k]))
    return out


def ref_cos_cubed(p, q, min_norm=1e-3):
    def prep(v):
        v = (v - v.mean()) ** 3
        return v / max(np.linalg.norm(v), min_norm)

    out = np.empty((q.shape[1], p.shape[1]))
    for k in range(q.shape[1]):
        qk = prep(q[:, k])
        for m in range(p.shape[1]):
            out[k, m] = qk @ prep(p[:, m])
    return out


def ref_rank_reorder(p, q, top_fraction=0.05, power=3.0, scale_p=0.5):
    n_top = int(q.shape[0] * top_fraction)
    out = np.empty((q.shape[1], p.shape[1]))
    for k in range(q.shape[1]):
        top = np.argsort(-q[:, k], kind="stable")[:n_top]
        qk = q[top, k]
        # expected |q - perm(q)|^p over uniformly random permutations
        baseline = np.mean(np.abs(qk[:, None] - qk[None, :]) ** power)
        for m in range(p.shape[1]):
            clip = p[top, m]
            # q' holds the values of q in the order of P[:, m]
            q_prime = np.sort(qk)[np.argsort(np.argsort(clip))]
            err = np.mean(np.abs(qk - q_prime) ** power) / baseline
            out[k, m] = -err / clip.mean() ** scale_p
    return out


def _prior_term(log_e, lam):
    # Eq. 8 / 14: - lam * log(sum_j prod ...) + lam * log |C|
    return np.array([lam * (logsumexp(log_e[:, m]) - math.log(log_e.shape[0]))
                     for m in range(log_e.shape[1])])


def ref_wpmi(p, q, top_k=28, a=2.0, lam=0.6, min_prob=1e-7):
    prob = softmax(a * p, axis=1)  # p(t_m | x_i)
    log_e = np.empty((q.shape[1], p.shape[1]))
    for k in range(q.shape[1]):
        b_k = np.argsort(-q[:, k], kind="stable")[:top_k]
        for m in range(p.shape[1]):
            log_e[k, m] = sum(math.log(prob[i, m] + min_prob) for i in b_k)
    return log_e - _prior_term(log_e, lam)[None, :]


def ref_soft_wpmi(p, q, top_k=100, a=10.0, lam=1.0, min_prob=1e-7, p_start=0.998, p_end=0.97,
                  endpoint=False):
    prob = softmax(a * p, axis=1)
    log_e = np.zeros((q.shape[1], p.shape[1]))
    for k in range(q.shape[1]):
        order = np.argsort(-q[:, k], kind="stable")
        for r in range(top_k):  # p(x in B_k) falls linearly with the rank; 0 after top_k
            p_in = p_start - r / ((top_k - 1) if endpoint else top_k) * (p_start - p_end)
            log_e[k] += np.log(1 + p_in * (prob[order[r]] - 1) + min_prob)
    return log_e - _prior_term(log_e, lam)[None, :]


REFERENCES = {
    "cos": ref_cos,
    "cos_cubed": ref_cos_cubed,
    "rank_reorder": ref_rank_reorder,
    "wpmi": ref_wpmi,
    "soft_wpmi": ref_soft_wpmi,
}


# ----------------------------------------------------------------------------------------------
# tests
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_similarity_matches_reference(name, feats):
    p, q = feats
    got = cd.similarity(name, torch.from_numpy(p), torch.from_numpy(q)).numpy()
    assert got.shape == (K, M)
    np.testing.assert_allclose(got, REFERENCES[name](p, q), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("name", ["wpmi", "soft_wpmi"])
def test_float32_matches_reference(name, feats):
    # float32 evaluates log-sums as logs of products of 4 (WPMI) / 11 (SoftWPMI) factors
    p, q = feats
    got = cd.similarity(name, torch.from_numpy(p).float(), torch.from_numpy(q).float())
    np.testing.assert_allclose(got.double().numpy(), REFERENCES[name](p, q), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("group", [1, 3, 7, 40])
def test_grouped_log_sum(group):
    rng = np.random.default_rng(group)
    x = rng.uniform(1e-3, 1.0, size=(40, 3, 5))
    got = cd._sum_log(torch.from_numpy(x.copy()), group).numpy()
    np.testing.assert_allclose(got, np.log(x).sum(axis=0), rtol=1e-12)
    assert cd._product_group(1e-3, 100, torch.float32) == 9  # 1e-27 > 1e8 * float32 tiny
    assert cd._product_group(1e-7, 28, torch.float32) == 4
    assert cd._product_group(0.0, 28, torch.float32) == 1


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_planted_neurons_get_their_concept(name, feats):
    p, q = feats
    sim = cd.similarity(name, torch.from_numpy(p).float(), torch.from_numpy(q).float())
    assert sim.dtype == torch.float32
    labels = label_neurons(sim, [f"t{m}" for m in range(M)])
    assert [rec["label"] for rec in labels[:4]] == ["t5", "t11", "t17", "t2"]
    for rec in labels:
        assert rec["similarity"] == pytest.approx(float(sim[rec["neuron"]].max()))


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_chunked_equals_unchunked(name, feats):
    p, q = (torch.from_numpy(x).float() for x in feats)
    whole = cd.similarity(name, p, q, chunk_size=None, concept_chunk_size=None)
    parts = cd.similarity(name, p, q, chunk_size=4, concept_chunk_size=10)
    assert torch.equal(parts, whole)  # float64 sums: blocks change no bit


def test_hyperparameters_are_used(feats):
    p, q = feats
    tp, tq = torch.from_numpy(p), torch.from_numpy(q)
    np.testing.assert_allclose(
        cd.soft_wpmi(tp, tq, top_k=40, a=5.0, lam=0.5, endpoint=True).numpy(),
        ref_soft_wpmi(p, q, top_k=40, a=5.0, lam=0.5, endpoint=True), rtol=1e-5)
    np.testing.assert_allclose(cd.wpmi(tp, tq, top_k=10, a=3.0, lam=1.0).numpy(),
                               ref_wpmi(p, q, top_k=10, a=3.0, lam=1.0), rtol=1e-5)
    np.testing.assert_allclose(cd.rank_reorder(tp, tq, top_fraction=0.1, p=2, scale_p=0).numpy(),
                               ref_rank_reorder(p, q, 0.1, 2.0, 0.0), rtol=1e-5)
    # SoftWPMI with p(x in B_k) = 1 on the top images is WPMI (App. A.1, Eq. 12 -> Eq. 6)
    np.testing.assert_allclose(
        cd.soft_wpmi(tp, tq, top_k=28, a=2.0, lam=0.6, p_start=1.0, p_end=1.0).numpy(),
        cd.wpmi(tp, tq).numpy(), rtol=1e-9)


def test_image_text_similarity_chunked_and_normalised():
    g = torch.Generator().manual_seed(1)
    img, txt = torch.randn(37, 16, generator=g), torch.randn(11, 16, generator=g)
    whole = cd.image_text_similarity(img, txt, chunk_size=None)
    want = (img / img.norm(dim=1, keepdim=True)) @ (txt / txt.norm(dim=1, keepdim=True)).T
    torch.testing.assert_close(whole, want)
    for chunk in (1, 5, 36, 1000):
        torch.testing.assert_close(cd.image_text_similarity(img, txt, chunk_size=chunk), whole,
                                   rtol=1e-6, atol=1e-6)
    scaled = cd.image_text_similarity(3 * img, 0.5 * txt.double(), chunk_size=4)
    assert scaled.dtype == torch.float64
    torch.testing.assert_close(scaled.float(), whole, rtol=1e-5, atol=1e-6)


def test_registry_aliases_and_errors(feats):
    p, q = (torch.from_numpy(x) for x in feats)
    assert set(cd.SIMILARITIES) == {"cos", "cos_cubed", "rank_reorder", "wpmi", "soft_wpmi"}
    torch.testing.assert_close(cd.similarity("cos_similarity", p, q), cd.cos(p, q))
    with pytest.raises(ValueError, match="unknown similarity"):
        cd.similarity("iou", p, q)
    with pytest.raises(ValueError, match="same N"):
        cd.similarity("cos", p[:10], q)


def test_label_neurons_skips_nan():
    sim = torch.tensor([[0.1, math.nan, 0.3], [math.nan] * 3])
    recs = label_neurons(sim, ["a", "b", "c"])
    assert recs[0]["label"] == "c" and recs[0]["similarity"] == pytest.approx(0.3)
    assert recs[1]["label"] is None and math.isnan(recs[1]["similarity"])


def test_soft_wpmi_value_is_log_k_plus_log_share_of_the_neuron():
    """Issue #13, item 7: why every toy concept unit's clip_similarity is ln 25. With
    lam = 1, sim[k, m] = log K + log softmax_j(log E[p(t_m | B_j)])[k] <= log K, reached
    when neuron k holds the concept's mass: the label's own score, saturated."""
    g = torch.Generator().manual_seed(0)
    n, k, m = 400, 6, 9
    p = torch.rand(n, m, generator=g, dtype=torch.float64)
    q = torch.rand(n, k, generator=g, dtype=torch.float64)
    sim = cd.similarity("soft_wpmi", p, q)
    cond = cd.similarity("soft_wpmi", p, q, lam=0.0)  # log E[p(t_m | B_k)]
    assert torch.allclose(sim, math.log(k) + torch.log_softmax(cond, dim=0), atol=1e-9)
    assert float(sim.max()) <= math.log(k) + 1e-12
    # neuron 0 fires on the images where concept 3 dominates: its score saturates at log K
    q[:, 0] = p[:, 3] * 10
    p[:, 3] = p[:, 3] * 3
    sim = cd.similarity("soft_wpmi", p, q)
    (rec, *_) = label_neurons(sim, [f"t{i}" for i in range(m)])
    assert rec["label"] == "t3"
    assert rec["similarity"] == pytest.approx(math.log(k), abs=1e-6)
    assert rec["margin"] == pytest.approx(float(sim[0, 3] - sim[0].topk(2).values[1]))
    assert rec["margin"] > 0


def test_label_neurons_reports_the_margin():
    sim = torch.tensor([[0.1, math.nan, 0.3], [0.5, 0.2, 0.4], [math.nan] * 3])
    recs = label_neurons(sim, ["a", "b", "c"])
    assert recs[0]["margin"] == pytest.approx(0.2) and recs[1]["margin"] == pytest.approx(0.1)
    assert math.isnan(recs[2]["margin"])
    assert math.isnan(label_neurons(torch.tensor([[1.0]]), ["a"])[0]["margin"])
