"""CLIP-Dissect's label similarity: accuracy, cosines, the mpnet encoder offline, and the
pipeline step on the toy CNN's output layer (true vs random explanations)."""

from __future__ import annotations

import pytest
import torch

from cosy_bench.pipeline import run
from cosy_bench.scorers.label_similarity import (
    MeanPooledEncoder,
    accuracy,
    cosine,
    label_similarity,
    normalize,
)


def test_accuracy_is_exact_match_after_normalisation():
    assert normalize("  Sea_Lion! ") == "sea lion"
    got = accuracy(["Sea_lion", "red circle", "dog"], ["sea lion", "red  circle", "cat"])
    assert got.tolist() == [1.0, 1.0, 0.0] and got.dtype == torch.float64
    with pytest.raises(ValueError, match="2 explanations for 1"):
        accuracy(["a", "b"], ["a"])


def test_cosine_and_encoders_give_one_column_each():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert cosine(a, torch.tensor([[2.0, 0.0], [-1.0, -1.0]])).tolist() == pytest.approx(
        [1.0, -1.0])

    def bag(texts):  # a toy encoder: letter counts
        return torch.stack([torch.bincount(torch.tensor([ord(c) - 97 for c in t if c.isalpha()]),
                                           minlength=26).double() for t in texts])

    out = label_similarity(["abc", "xyz"], ["abc", "abd"], {"bag": bag})
    assert set(out) == {"accuracy", "bag_cos"}
    assert out["bag_cos"][0] == pytest.approx(1.0) and out["bag_cos"][1] == 0.0


def test_mean_pooled_mpnet_with_random_weights_offline():
    enc = MeanPooledEncoder(random_weights=True, config={"hidden_size": 32,
                            "num_hidden_layers": 1, "num_attention_heads": 2,
                            "intermediate_size": 64, "vocab_size": 300})
    emb = enc(["red circle", "red circle", "blue night sky"])
    assert emb.shape == (3, 32)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    assert torch.equal(emb[0], emb[1]) and not torch.allclose(emb[0], emb[2])
    # padding does not change an embedding (mean over the attention mask)
    torch.testing.assert_close(enc(["red circle"])[0], emb[0], atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def cache_dir(toy_cache):
    return toy_cache


def toy(cache_dir, *extra):
    return [f"paths.cache_dir={cache_dir}", "logger=none", "n_images=5",
            "scorer=[auc,label_similarity]", *extra]


def test_true_output_labels_score_accuracy_one_and_the_highest_clip_cos(compose, cache_dir,
                                                                        tmp_path):
    true = run(compose(toy(cache_dir, "layer=output", "explainer=ground_truth")),
               tmp_path / "true")
    rand = run(compose(toy(cache_dir, "layer=output", "explainer=random")), tmp_path / "rand")
    assert true.summary["accuracy"]["mean"] == 1.0
    assert rand.summary["accuracy"]["mean"] < 0.2
    assert true.summary["clip_cos"]["mean"] == pytest.approx(1.0)
    assert rand.summary["clip_cos"]["mean"] < 0.6
    assert {"accuracy", "clip_cos", "auc"} <= set(true.rows[0])  # beside CoSy's columns


def test_a_layer_without_ground_truth_is_skipped_with_a_note(compose, cache_dir, tmp_path,
                                                              caplog):
    cfg = compose(toy(cache_dir, "layer=conv4", "explainer=random", "neurons.ids=[0,1]"))
    with caplog.at_level("INFO", logger="cosy_bench"):
        report = run(cfg, tmp_path)
    assert "accuracy" not in report.summary and "auc" in report.summary
    assert any("label_similarity: skipped" in r.message for r in caplog.records)


def test_paper_protocol_reads_words_and_truths_as_the_clip_dissect_authors():
    from cosy_bench.scorers.label_similarity import (
        imagenet_lemmas,
        paper_accuracy,
        paper_truths,
        paper_word,
    )

    assert paper_word("kitchen-s") == "kitchen" and paper_word("sea_lion") == "sea lion"
    assert paper_word("Sea Lion!") == "Sea Lion!"  # no lower-casing, punctuation kept
    lemmas = imagenet_lemmas()
    assert lemmas[0] == "tench, Tinca tinca" and lemmas[134] == "crane, bird"
    assert lemmas[517] == "crane, machine" and len(set(lemmas)) == 1000
    from cosy_bench.models.classes import torchvision_categories

    tv = torchvision_categories("ResNet18_Weights.IMAGENET1K_V1")
    assert paper_truths(tv) == lemmas and tv[0] == "tench"
    assert paper_truths(["red", "circle"]) == ["red", "circle"]  # the toy world: unchanged
    # Places365 raw names against Broden's scenes: oracle predictions spelled as Broden's
    # concept list spells them ("elevator-freight elevator"); "bakery/shop" has no scene
    truths = ["airfield", "elevator/freight_elevator", "bakery/shop", "amusement_park"]
    scenes = {"airfield-s", "elevator-freight_elevator-s", "amusement_park-s", "kitchen-s"}
    oracle = ["airfield", "elevator-freight elevator", "bakery-shop", "amusement park"]
    got = paper_accuracy(oracle, truths, scenes)
    # the '/' the authors put back does not match Broden's '-': 2 of the 3 counted classes
    assert got[[0, 1, 3]].tolist() == [1.0, 0.0, 1.0] and torch.isnan(got[2])
    assert accuracy(oracle, truths)[[0, 1, 3]].tolist() == [1.0, 1.0, 1.0]  # clean: all
    out = label_similarity(oracle, truths, {}, protocol="paper", scenes=scenes)
    assert torch.equal(out["accuracy"].nan_to_num(-1), got.nan_to_num(-1))
    with pytest.raises(ValueError, match="protocol='exact'"):
        label_similarity(oracle, truths, {}, protocol="exact")


def test_paper_protocol_override_runs_as_typed(compose, cache_dir, tmp_path):
    cfg = compose(toy(cache_dir, "layer=output", "explainer=ground_truth",
                      "scorer.label_similarity.protocol=paper"))
    assert cfg.scorer.label_similarity.protocol == "paper"
    report = run(cfg, tmp_path)
    assert report.summary["accuracy"]["mean"] == 1.0  # toy truths: unchanged by the paper
