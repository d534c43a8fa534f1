"""Several explanations per unit (``explainer.top_k``, issue #20 item 2): the ranked table,
cache keys that change only when top_k != 1, each explainer's top-K, the summary figures."""

from __future__ import annotations

import math

import pytest
import torch

from cosy_bench.explainers.base import Explanations
from cosy_bench.explainers.clip_dissect import ClipDissectExplainer, label_neurons, label_top_k
from cosy_bench.explainers.compexp import CompExpExplainer, compexp
from cosy_bench.explainers.ground_truth import GroundTruthExplainer
from cosy_bench.explainers.invert import InvertExplainer, invert
from cosy_bench.explainers.milan import MilanExplainer
from cosy_bench.explainers.netdissect import NetDissectExplainer
from cosy_bench.explainers.precomputed import (
    PrecomputedExplainer,
    read_explanations,
    read_ranked,
)
from cosy_bench.ranks import expand, polysemanticity, rank_summary, truth_concepts
from cosy_bench.record import summarize as summarize_at


def summarize(values):
    return summarize_at(values, 0.95)


PROBE = {"_target_": "x.Probe", "n": 3}


def test_ranked_table_round_trips_and_a_top1_table_is_as_before():
    rows = [{"neuron": 2, "label": "red", "a": 0.9}, {"neuron": 2, "label": "grass", "a": 0.8},
            {"neuron": 0, "label": "sky", "a": 0.7}]
    e = Explanations.from_ranked(rows, ["a"])
    assert e.texts == {2: "red", 0: "sky"} and e.ranked(2) == ["red", "grass"]
    assert e.value("a", 2, 2) == 0.8 and e.value("a", 0, 2) == ""
    text = e.to_csv()
    assert text.splitlines()[0] == "neuron,rank,explanation,a"
    back = Explanations.from_csv(text)
    assert back.ranked(2) == ["red", "grass"] and back.value("a", 2, 2) == "0.8"
    one = Explanations({1: "dots"}, {"a": {1: 0.5}})
    assert one.to_csv() == "neuron,explanation,a\r\n1,dots,0.5\r\n"  # cache files unchanged
    assert one.to_csv(rank=True).splitlines()[1] == "1,1,dots,0.5"
    assert expand(e, [0, 2]) == ([0, 2, 2], [1, 1, 2], ["sky", "red", "grass"])


@pytest.mark.parametrize("make", [
    lambda **k: InvertExplainer(PROBE, **k),
    lambda **k: ClipDissectExplainer({"c": 1}, PROBE, ["a"], **k),
    lambda **k: MilanExplainer(PROBE, checkpoint="random", **k),
    lambda **k: NetDissectExplainer(PROBE, **k),
    lambda **k: CompExpExplainer(PROBE, **k),
    lambda **k: PrecomputedExplainer("/nonexistent.csv", **k),
    lambda **k: GroundTruthExplainer(**k),
])
def test_cache_key_changes_only_when_top_k_is_not_one(make):
    default, one, two = make(), make(top_k=1), make(top_k=2)
    assert default.cache_key() == one.cache_key() and "top_k" not in one.cache_key()
    # the IoU explainers' detector threshold matters (and is keyed) only beyond rank 1
    extra = {"min_iou": 0.04} if isinstance(one, NetDissectExplainer | CompExpExplainer) else {}
    assert two.cache_key() == {**one.cache_key(), "top_k": 2, **extra}


@pytest.mark.parametrize("bad", [0, -1, "2", True, 1.5])
def test_top_k_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match="explainer.top_k"):
        InvertExplainer(PROBE, top_k=bad)


def test_formula_explainers_need_a_beam_as_wide_as_top_k():
    with pytest.raises(ValueError, match="beam_size >= 6"):
        InvertExplainer(PROBE, top_k=6)
    with pytest.raises(ValueError, match="beam_size >= 3"):
        CompExpExplainer(PROBE, top_k=3, beam_size=2)


def test_invert_top_k_are_the_best_single_concepts_in_auroc_order():
    g = torch.Generator().manual_seed(0)
    labels = torch.rand(400, 4, generator=g) < 0.3
    # unit 0 fires for concept 1 strongly and concept 3 less; unit 1 for concept 2
    acts = torch.stack([2.0 * labels[:, 1] + labels[:, 3], labels[:, 2].float()], 1)
    acts = acts + 0.01 * torch.randn(400, 2, generator=g)
    names = ["a", "b", "c", "d"]
    top1 = invert(acts, labels, names)
    beam = invert(acts, labels, names, return_beam=True)
    assert [r["label"] for r in top1] == ["b", "c"]
    assert [b["label"] for b in beam[0]["beam"][:2]] == ["b", "d"]
    assert beam[0]["beam"][0]["auc"] >= beam[0]["beam"][1]["auc"]


def test_clip_dissect_top_k_starts_with_its_top1_label():
    sim = torch.tensor([[0.1, 0.9, 0.5, 0.5], [0.3, 0.3, 0.2, float("nan")],
                        [float("nan")] * 4])
    names = ["a", "b", "c", "d"]
    rows = label_top_k(sim, names, 3)
    assert [(r["neuron"], r["label"]) for r in rows] == [
        (0, "b"), (0, "c"), (0, "d"), (1, "a"), (1, "b"), (1, "c")]
    one = {r["neuron"]: r["label"] for r in label_neurons(sim, names) if r["label"]}
    assert {r["neuron"]: r["label"] for r in rows[::-1]} == one
    assert rows[0]["margin"] == pytest.approx(0.4) and math.isnan(rows[2]["margin"]) is False


def test_compexp_top_k_rows_start_with_the_top1_formula():
    g = torch.Generator().manual_seed(1)
    labels = torch.rand(500, 5, generator=g) < 0.3
    units = torch.stack([labels[:, 0] | labels[:, 2], labels[:, 4]], 1)
    names = list("abcde")
    one = compexp(units, labels, names, length=2, beam_size=4)
    three = compexp(units, labels, names, length=2, beam_size=4, top_k=3)
    # unit 1 is exactly concept e: its beam's other formulas are e with negated terms, the
    # same positive part, so CompExp offers one formula for it
    assert [(r["neuron"], r["label"]) for r in three] == [
        (0, "a OR c"), (0, "a"), (0, "a OR e"), (1, "e")]
    assert [three[0]["label"], three[3]["label"]] == [r["label"] for r in one]
    assert three[0]["iou"] >= three[1]["iou"] >= three[2]["iou"] > 0.04


def test_precomputed_rank_column_and_falcon_lists(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text("neuron,rank,concept\n0,2,grass\n0,1,red\n1,1,sky\n")
    assert read_ranked(path, top_k=2) == {0: ["red", "grass"], 1: ["sky"]}
    assert read_explanations(path) == {0: "red", 1: "sky"}
    path.write_text("neuron,rank,concept\n0,1,red\n0,1,grass\n")
    with pytest.raises(ValueError, match="duplicate neuron 0 at rank 1"):
        read_ranked(path, top_k=2)
    path.write_text("neuron,concept\n0,red\n0,grass\n")
    with pytest.raises(ValueError, match="duplicate neuron 0"):
        read_explanations(path)
    falcon = tmp_path / "f.csv"
    falcon.write_text('group,concept_set_noun_phrases\n3,"[(\'red\', 0.9), (\'sky\', 0.5)]"\n')
    assert read_ranked(falcon, top_k=2) == {3: ["red", "sky"]}
    assert read_explanations(falcon) == {3: "red"}


def test_polysemanticity_is_one_minus_mean_pairwise_cosine():
    space = {"a": [1.0, 0.0], "b": [0.0, 2.0], "c": [1.0, 1.0], "a2": [3.0, 0.0]}
    embed = lambda texts: torch.tensor([space[t] for t in texts])  # noqa: E731
    p = polysemanticity([0, 0, 1, 1, 2, 3, 3, 3], ["a", "a2", "a", "b", "c", "a", "b", "c"],
                        embed)
    c = 1 / math.sqrt(2)
    assert p[:2].tolist() == pytest.approx([0.0, 0.0])  # same direction
    assert p[2].item() == pytest.approx(1.0)  # orthogonal
    assert math.isnan(p[4].item())  # one explanation: undefined
    assert p[5].item() == pytest.approx(1 - (0 + c + c) / 3)


def test_summary_coverage_match_and_best_of_k():
    rows = [{"neuron": 0, "rank": 1, "explanation": "red", "ground_truth": "red|grass"},
            {"neuron": 0, "rank": 2, "explanation": "green grass", "ground_truth": "red|grass"},
            {"neuron": 1, "rank": 1, "explanation": "dots", "ground_truth": "sky|stripes"},
            {"neuron": 1, "rank": 2, "explanation": "stripes AND NOT sky", "ground_truth": "sky|stripes"},
            {"neuron": 2, "rank": 1, "explanation": "x", "ground_truth": ""}]
    auc = torch.tensor([0.9, 0.7, 0.6, 0.8, 0.5], dtype=torch.float64)
    for r, v in zip(rows, auc.tolist(), strict=True):
        r["auc"] = v
    out = rank_summary(rows, {"auc": auc}, True, summarize)
    assert out["ground_truth_match"] == 0.5  # unit 2 has no truth: left out
    assert out["ground_truth_coverage"] == pytest.approx((1.0 + 0.5) / 2)
    assert out["best_of_k"]["auc"]["mean"] == pytest.approx((0.9 + 0.8 + 0.5) / 3)
    one = rank_summary([rows[0], rows[2]], {"auc": auc[[0, 2]]}, True, summarize)
    assert "best_of_k" not in one and one["ground_truth_coverage"] == 0.25
    assert truth_concepts("red circle") == ["red circle"] and truth_concepts("") == []


def test_ground_truth_gives_each_planted_concept_a_rank():
    class Ctx:
        class model:  # noqa: N801
            layers = {}

            @staticmethod
            def ground_truth(_):
                return ["red|grass", "sky", "a|b|c"]
        layer = type("L", (), {"name": "mixed"})
        num_neurons = 3

    assert GroundTruthExplainer().explain(Ctx).texts == {0: "red|grass", 1: "sky", 2: "a|b|c"}
    two = GroundTruthExplainer(top_k=2).explain(Ctx)
    assert [two.ranked(k) for k in range(3)] == [["red", "grass"], ["sky"], ["a", "b"]]
