"""CLIP-Dissect within ``explainer.max_memory_gb``: P computed in blocks equals P held whole
(bit for bit, every similarity function), block plans shrink with the budget and stay within
it, a budget too small names the option, and the budget is not part of the cache key."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from cosy_bench.explainers.clip_dissect import ClipDissectExplainer
from cosy_bench.explainers.clip_dissect import similarities as cd
from cosy_bench.explainers.clip_dissect.plan import plan_blocks, working_set
from cosy_bench.explainers.clip_dissect.products import ClipProducts, image_text_similarity

N, M, K, D = 700, 41, 11, 24
HPARAMS = {"wpmi": {"top_k": 9}, "soft_wpmi": {"top_k": 20}, "rank_reorder": {}, "cos": {},
           "cos_cubed": {}}


@pytest.fixture(scope="module")
def embeddings():
    gen = torch.Generator().manual_seed(3)
    img = 0.4 + torch.randn(N, D, generator=gen)  # CLIP-like: a shared direction
    txt = 0.4 + torch.randn(M, D, generator=gen)
    q = torch.randn(N, K, generator=gen).clamp_min(0)
    p = image_text_similarity(img, txt)
    q[:, :4] += 3 * p[:, [5, 11, 17, 2]]  # planted neurons
    return img, txt, q


def test_blocks_of_p_equal_p_held_whole(embeddings):
    img, txt, _ = embeddings
    whole = image_text_similarity(img, txt, chunk_size=None)
    lazy = ClipProducts(img, txt, row_block=13)
    rows = torch.tensor([0, 699, 5, 5, 321])
    for c0, c1 in [(0, 1), (0, M), (3, 10), (M - 7, M)]:  # widths a float32 GEMM rounds apart
        assert torch.equal(lazy[:, c0:c1], whole[:, c0:c1])
        assert torch.equal(lazy[rows, c0:c1], whole[rows, c0:c1])
    assert lazy.shape == (N, M) and lazy.dtype == torch.float32
    assert torch.equal(image_text_similarity(img, txt, chunk_size=7), whole)


@pytest.mark.parametrize("name", sorted(cd.SIMILARITIES))
def test_blocked_similarity_equals_unblocked_bit_for_bit(name, embeddings):
    img, txt, q = embeddings
    hp = HPARAMS[name]
    whole = cd.similarity(name, image_text_similarity(img, txt), q, chunk_size=None,
                          concept_chunk_size=None, **hp)
    for c, mc in [(1, 1), (3, 5), (4, 40)]:
        parts = cd.similarity(name, ClipProducts(img, txt, row_block=50), q, chunk_size=c,
                              concept_chunk_size=mc, **hp)
        assert torch.equal(parts, whole), (name, c, mc, (parts - whole).abs().max())
    assert whole[:4].argmax(dim=1).tolist() == [5, 11, 17, 2] or name == "rank_reorder"


@pytest.mark.parametrize("name", sorted(cd.SIMILARITIES))
def test_plan_shrinks_with_the_budget_and_fits(name):
    n, k, m, d = 1_281_167, 512, 5000, 512  # ImageNet-train probes, a 512-unit layer
    blocks, last = [], None
    for gb in (16.0, 4.0, 2.0):
        plan = plan_blocks(name, n, k, m, d, gb)
        assert plan["bytes"] <= plan["budget"] == int(gb * 2**30)
        assert plan["bytes"] == working_set(name, n, k, m, d, plan["chunk_size"],
                                            plan["concept_chunk_size"], {**cd_defaults(name)})
        count = -(-k // plan["chunk_size"]) * -(-m // plan["concept_chunk_size"])
        assert last is None or count >= last
        blocks.append(count)
        last = count
    assert blocks[-1] > blocks[0] or name in ("wpmi", "soft_wpmi")


def cd_defaults(name):
    import inspect

    params = inspect.signature(cd.SIMILARITIES[name]).parameters
    return {key: p.default for key, p in params.items() if p.default is not inspect.Parameter.empty}


def test_plan_numbers_at_imagenet_train_size():
    """The blocks chosen for 1.28 M probe images, K = 512, M = 5,000 (deterministic)."""
    n, k, m, d = 1_281_167, 512, 5000, 512
    soft = plan_blocks("soft_wpmi", n, k, m, d, 4.0)
    assert (soft["chunk_size"], soft["concept_chunk_size"]) == (16, 1024)  # defaults fit
    cos = plan_blocks("cos", n, k, m, d, 4.0)
    assert (cos["chunk_size"], cos["concept_chunk_size"]) == (64, 64)
    small = plan_blocks("soft_wpmi", n, k, m, d, 0.5)
    assert small["concept_chunk_size"] < 1024 and small["bytes"] <= 2**29


def test_budget_below_the_smallest_block_names_the_option():
    with pytest.raises(ValueError, match=r"explainer\.max_memory_gb=0\.01 GiB .* raise "
                                         r"explainer\.max_memory_gb to at least"):
        plan_blocks("cos", 1_281_167, 512, 5000, 512, 0.01)
    with pytest.raises(ValueError, match="must be > 0"):
        plan_blocks("cos", 100, 4, 5, 8, 0.0)


def test_budget_is_not_in_the_cache_key():
    kw = dict(clip={"a": 1}, probe={"b": 2}, concepts=["x", "y"])
    assert (ClipDissectExplainer(**kw, max_memory_gb=0.5).cache_key()
            == ClipDissectExplainer(**kw).cache_key()
            == ClipDissectExplainer(**kw, chunk_size=7, max_memory_gb=None).cache_key())


def test_yaml_option_reaches_the_explainer_and_not_the_key(compose, smoke, tmp_path):
    def build(*extra):
        cfg = compose(smoke(tmp_path, "explainer=clip_dissect", "clip=toyworld", *extra))
        return instantiate(cfg.explainer)

    tight, default = build("explainer.max_memory_gb=0.05"), build()
    assert (tight.max_memory_gb, default.max_memory_gb) == (0.05, None)
    assert tight.cache_key() == default.cache_key()
