"""What the IoU explainers offer beyond rank 1 (``explainer.top_k > 1``,
:mod:`cosy_bench.explainers.detectors`): NetDissect only concepts the unit detects
(IoU > ``min_iou``), CompExp the beam's formulas with distinct positive parts; a unit
left with one explanation is monosemantic (polysemanticity 0), not undefined."""

from __future__ import annotations

import math

import pytest
import torch

from cosy_bench.explainers.compexp import CompExpExplainer, compexp
from cosy_bench.explainers.detectors import (
    MIN_IOU,
    check_min_iou,
    distinct_positive,
    netdissect_rows,
    positive_part,
)
from cosy_bench.explainers.netdissect import NetDissectExplainer
from cosy_bench.ranks import polysemanticity, rank_summary
from cosy_bench.record import summarize

PROBE = {"_target_": "x.Probe", "n": 3}
NAMES = ["red", "grass", "sky", "dots"]
CATS = ["colour", "background", "background", "texture"]


def _labels(rows):
    out: dict[int, list[str]] = {}
    for r in rows:
        out.setdefault(r["neuron"], []).append(r["label"])
    return out


def test_netdissect_keeps_rank1_and_beyond_it_only_concepts_the_unit_detects():
    iou = torch.tensor([[0.10, 0.05, 0.04, 0.01],    # 0.04 is not above 0.04
                        [0.02, 0.01, 0.00, 0.00],    # no detector: its label all the same
                        [0.05, 0.30, 0.20, 0.10]], dtype=torch.float64)
    rows = netdissect_rows(iou, NAMES, CATS, top_k=3, min_iou=MIN_IOU)
    assert _labels(rows) == {0: ["red", "grass"], 1: ["red"], 2: ["grass", "sky", "dots"]}
    assert [r["netdissect_iou"] for r in rows if r["neuron"] == 2] == ["0.3000", "0.2000",
                                                                       "0.1000"]
    assert rows[0]["netdissect_category"] == "colour"
    assert rows[-1]["netdissect_category"] == "texture"
    # rank 1 is the top-1 label, whatever the threshold
    first = {r["neuron"]: r["label"] for r in rows[::-1]}
    assert first == {k: NAMES[c] for k, c in enumerate(iou.argmax(dim=1).tolist())}
    # no threshold: the top_k concepts by IoU, as before
    assert _labels(netdissect_rows(iou, NAMES, CATS, 2, 0.0))[1] == ["red", "grass"]
    assert _labels(netdissect_rows(iou, NAMES, CATS, 9, 0.5)) == {0: ["red"], 1: ["red"],
                                                                   2: ["grass"]}


def test_min_iou_is_keyed_only_beyond_rank_1_and_checked():
    for make in (NetDissectExplainer, CompExpExplainer):
        assert make(PROBE, min_iou=0.2).cache_key() == make(PROBE).cache_key()
        assert "min_iou" not in make(PROBE).cache_key()
        two, other = make(PROBE, top_k=2), make(PROBE, top_k=2, min_iou=0.2)
        assert two.cache_key()["min_iou"] == 0.04 and other.cache_key()["min_iou"] == 0.2
    for bad in (-0.1, 1.0, "x", None, True):
        with pytest.raises(ValueError, match=r"explainer.min_iou=.*0.04"):
            check_min_iou(bad)
    assert check_min_iou(0) == 0.0


def test_min_iou_composes_from_the_config(compose):
    from hydra.utils import instantiate

    nd = instantiate(compose(["explainer=netdissect", "explainer.top_k=2",
                              "explainer.min_iou=0.1"]).explainer)
    ce = instantiate(compose(["explainer=compexp"]).explainer)
    assert (nd.top_k, nd.min_iou, ce.min_iou) == (2, 0.1, MIN_IOU)


def _rec(label, terms, iou):
    return {"label": label, "terms": terms, "iou": iou}


def test_compexp_top_k_names_distinct_positive_parts():
    red_tri = (None, 0, False), ("AND", 5, True)
    beam = [_rec("red AND NOT triangle", red_tri, 0.14),
            _rec("(red AND NOT triangle) AND NOT cross", (*red_tri, ("AND", 6, True)), 0.138),
            _rec("stripes AND red", ((None, 3, False), ("AND", 0, False)), 0.09),
            _rec("red AND stripes", ((None, 0, False), ("AND", 3, False)), 0.085),
            _rec("stripes", ((None, 3, False),), 0.08),
            _rec("grass", ((None, 1, False),), 0.03)]
    assert positive_part(beam[1]["terms"]) == frozenset({0})
    assert [r["label"] for r in distinct_positive(beam, 5, MIN_IOU)] == [
        "red AND NOT triangle", "stripes AND red", "stripes"]  # grass: IoU below 0.04
    assert [r["label"] for r in distinct_positive(beam, 2, MIN_IOU)] == [
        "red AND NOT triangle", "stripes AND red"]
    assert len(distinct_positive(beam, 5, 0.0)) == 4
    low = [_rec("sky", ((None, 2, False),), 0.01), beam[-1]]  # rank 1 whatever its IoU
    assert [r["label"] for r in distinct_positive(low, 2, MIN_IOU)] == ["sky"]


def test_compexp_search_top_k_has_distinct_positive_parts_above_min_iou():
    g = torch.Generator().manual_seed(2)
    labels = torch.rand(800, 6, generator=g) < 0.25
    # unit 0: a OR d (polysemantic); unit 1: b AND NOT c; unit 2: e
    units = torch.stack([labels[:, 0] | labels[:, 3], labels[:, 1] & ~labels[:, 2],
                         labels[:, 4]], 1)
    names = list("abcdef")
    one = compexp(units, labels, names, length=3, beam_size=5)
    top = compexp(units, labels, names, length=3, beam_size=5, top_k=3)
    by_unit: dict[int, list[dict]] = {}
    for r in top:
        by_unit.setdefault(r["neuron"], []).append(r)
    assert [rs[0]["label"] for rs in by_unit.values()] == [r["label"] for r in one]
    for rs in by_unit.values():
        parts = [positive_part(r["terms"]) for r in rs]
        assert len(set(parts)) == len(parts)
        assert all(r["iou"] > MIN_IOU for r in rs[1:])
    assert len(by_unit[0]) == 3 and one[0]["label"] == "a OR d"
    strict = compexp(units, labels, names, length=3, beam_size=5, top_k=3, min_iou=0.99)
    assert [r["label"] for r in strict] == [r["label"] for r in one]


def test_a_unit_with_one_explanation_at_k2_is_monosemantic():
    space = {"red": [1.0, 0.0], "grass": [0.0, 1.0], "sky": [1.0, 1.0]}
    embed = lambda texts: torch.tensor([space[t] for t in texts])  # noqa: E731
    p = polysemanticity([0, 0, 1, 2], ["red", "grass", "sky", "red"], embed, single=0.0)
    assert p.tolist() == pytest.approx([1.0, 1.0, 0.0, 0.0])
    assert math.isnan(polysemanticity([1], ["sky"], embed)[0].item())  # default: undefined

    def no_embedding(texts):
        raise AssertionError("no unit has two explanations: nothing to embed")

    assert polysemanticity([0, 1], ["red", "sky"], no_embedding, single=0.0).tolist() == [0, 0]
    rows = [{"neuron": 0, "rank": 1, "explanation": "red", "polysemanticity": 1.0},
            {"neuron": 0, "rank": 2, "explanation": "grass", "polysemanticity": 1.0},
            {"neuron": 1, "rank": 1, "explanation": "sky", "polysemanticity": 0.0}]
    out = rank_summary(rows, {}, False, lambda v: summarize(v, 0.95))
    assert out["polysemanticity"] == pytest.approx(0.5) and out["polysemanticity_n"] == 2
    # a K = 2 run whose units all got one explanation still reports best-of-K (= rank 1)
    ones = [{"neuron": k, "rank": 1, "explanation": t, "polysemanticity": 0.0}
            for k, t in enumerate(["red", "sky"])]
    auc = {"auc": torch.tensor([0.9, 0.7], dtype=torch.float64)}
    two = rank_summary(ones, auc, False, lambda v: summarize(v, 0.95), top_k=2)
    assert two["best_of_k"]["auc"]["mean"] == pytest.approx(0.8)
    assert two["polysemanticity"] == 0.0 and two["polysemanticity_n"] == 2
    assert "best_of_k" not in rank_summary(ones, auc, False, lambda v: summarize(v, 0.95))
