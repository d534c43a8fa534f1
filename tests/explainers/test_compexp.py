"""CompExp: the beam search against an exhaustive search, planted formulas, pixel samples."""

from __future__ import annotations

import itertools

import pytest
import torch

from cosy_bench.explainers.compexp import compexp, pixel_samples
from cosy_bench.explainers.formulas import formula_indicator
from cosy_bench.explainers.netdissect import Segmentation
from cosy_bench.record import names_concept, positive_text

C = 7
NAMES = [f"c{i}" for i in range(C)]


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return (a & b).sum().item() / union if union else 0.0


def exhaustive(unit: torch.Tensor, labels: torch.Tensor) -> float:
    """Best IoU over every formula ``c`` and ``c1 OR / AND / AND NOT c2`` (non-empty)."""
    best = max(iou(unit, labels[:, c]) for c in range(C) if labels[:, c].any())
    for c1, c2 in itertools.product(range(C), repeat=2):
        for op, neg in (("OR", False), ("AND", False), ("AND", True)):
            f = formula_indicator([(None, c1, False), (op, c2, neg)], labels)
            if f.any():
                best = max(best, iou(unit, f))
    return best


def case(seed: int):
    g = torch.Generator().manual_seed(seed)
    labels = torch.rand(300, C, generator=g) < torch.linspace(0.05, 0.5, C)
    planted = [labels[:, 0] | labels[:, 3], labels[:, 1] & ~labels[:, 2],
               labels[:, 4] & labels[:, 5]]
    noise = torch.rand(300, len(planted), generator=g) < 0.1
    units = torch.stack(planted, dim=1) ^ noise  # [N, K] noisy planted formulas
    units = torch.cat([units, torch.rand(300, 2, generator=g) < 0.2], dim=1)
    return units, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_best_formula_equals_an_exhaustive_search(seed):
    units, labels = case(seed)
    recs = compexp(units, labels, NAMES, length=2, beam_size=C)  # beam of every atom
    for k, rec in enumerate(recs):
        want = exhaustive(units[:, k], labels)
        assert rec["iou"] == pytest.approx(want, abs=1e-12)
        # the reported formula has the reported IoU
        assert iou(units[:, k], formula_indicator(rec["terms"], labels)) == pytest.approx(
            rec["iou"], abs=1e-12)
        assert rec["length"] <= 2


def test_planted_formulas_are_found_with_the_authors_defaults():
    _, labels = case(0)
    units = torch.stack([labels[:, 0] | labels[:, 3], labels[:, 1] & ~labels[:, 2],
                         (labels[:, 4] | labels[:, 6]) & ~labels[:, 5]], dim=1)
    recs = compexp(units, labels, NAMES)  # length 3, beam 5
    assert recs[0]["label"] in ("c0 OR c3", "c3 OR c0")
    assert recs[1]["label"] == "c1 AND NOT c2"
    assert recs[2]["iou"] == 1.0 and recs[2]["length"] == 3
    assert all(r["iou"] == 1.0 for r in recs)


def test_penalty_prefers_shorter_formulas():
    _, labels = case(0)
    unit = (labels[:, 0] | labels[:, 3])[:, None]
    plain = compexp(unit, labels, NAMES, length=2, beam_size=C)[0]
    harsh = compexp(unit, labels, NAMES, length=2, beam_size=C, penalty=0.01)[0]
    assert plain["length"] == 2 and harsh["length"] == 1
    assert harsh["iou"] < plain["iou"]


def test_not_counts_as_one_more_unit_of_length_in_the_penalty():
    # unit = c1 AND NOT c2 (IoU 1, authors' length 3: penalty 0.9^2 = 0.81) against c1 alone
    # (IoU 50/60 = 0.833, length 1): the authors' length prefers c1; counting concepts only
    # (length 2: 0.9 > 0.833) prefers the formula
    labels = torch.zeros(100, 3, dtype=torch.bool)
    labels[90:, 0], labels[:60, 1], labels[50:65, 2] = True, True, True
    unit = (labels[:, 1] & ~labels[:, 2])[:, None]
    names = ["c0", "c1", "c2"]
    authors = compexp(unit, labels, names, length=2, beam_size=3, penalty=0.9)[0]
    concepts_only = compexp(unit, labels, names, length=2, beam_size=3, penalty=0.9,
                            not_length=False)[0]
    assert authors["label"] == "c1" and authors["iou"] == pytest.approx(50 / 60)
    assert concepts_only["label"] == "c1 AND NOT c2" and concepts_only["iou"] == 1.0
    # without a penalty the rule cannot matter
    assert compexp(unit, labels, names, length=2, beam_size=3)[0]["label"] == "c1 AND NOT c2"


def test_only_the_authors_operators_and_no_negated_start():
    units, labels = case(1)
    for rec in compexp(units, labels, NAMES, length=3, beam_size=3):
        first, *rest = rec["terms"]
        assert not first[2]
        assert all(not (op == "OR" and neg) for op, _, neg in rest)


def test_pixel_samples_expand_image_labels_to_every_pixel():
    masks = torch.tensor([[[True, False, False, True]], [[False, True, False, False]]])
    segs = [Segmentation(torch.tensor([[0], [2]]), torch.tensor([1])),
            Segmentation(torch.empty(2, 0, dtype=torch.long), torch.empty(0, dtype=torch.long))]
    m, y = pixel_samples([(torch.tensor([0, 1]), masks, segs)], 2)
    assert m[:, 0].tolist() == [True, False, False, True, False, True, False, False]
    assert y[:, 0].tolist() == [False, False, True, False] + [False] * 4
    assert y[:, 1].tolist() == [True] * 4 + [False] * 4


def test_shape_errors_name_the_inputs():
    with pytest.raises(ValueError, match="unit masks"):
        compexp(torch.zeros(3, 2, dtype=torch.bool), torch.zeros(4, 2, dtype=torch.bool),
                ["a", "b"])


@pytest.fixture(scope="module")
def toy_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("compexp")


def test_compexp_names_the_toy_worlds_concept_units_with_short_formulas(compose, toy_cache,
                                                                         tmp_path):
    from cosy_bench.pipeline import run

    report = run(compose([f"paths.cache_dir={toy_cache}", "logger=none", "n_images=5",
                          "layer=concepts", "explainer=compexp"]), tmp_path)
    assert report.summary["ground_truth_match"] >= 0.9
    assert all(len(r["explanation"].split(" AND ")) + r["explanation"].count(" OR ") <= 3
               for r in report.rows)
    assert all(float(r["compexp_iou"]) > 0 for r in report.rows)
    # the true concept is a positive term of the formula, never (only) a negated one
    named = [r for r in report.rows if names_concept(r["explanation"], r["ground_truth"])]
    assert len(named) >= 0.9 * len(report.rows)
    for r in named:
        positive = positive_text(r["explanation"]).lower()
        assert r["ground_truth"].lower() in positive, r
        assert f"not {r['ground_truth'].lower()}" not in r["explanation"].lower(), r
