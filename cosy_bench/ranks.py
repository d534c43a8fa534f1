"""Several explanations per unit (``explainer.top_k``): the run's rows, their summary and the
units' polysemanticity.

A run scores one row per (unit, rank): :func:`expand` lays an explainer's table out in rows
(rank 1 first within a unit). :func:`rank_summary` adds to ``summary.json``:

* ``ground_truth_match``: fraction of the units with a known truth whose rank-1 explanation
  names one of the unit's planted concepts (:func:`truth_concepts` of its truth string;
  ``record.names_concept`` matching); a unit with an empty truth has none and is left out.
* ``ground_truth_coverage``: per unit with a truth, the fraction of its planted concepts
  named by any of its explanations, averaged over those units.
* ``best_of_k`` (``top_k > 1``): per score, the summary over units of the score of each
  unit's best explanation (highest ``auc``; without AUC the first score, lowest for p-values).
* ``polysemanticity``: the mean over units of :func:`polysemanticity` (``top_k > 1``; a unit
  for which the explainer offers one explanation scores 0, monosemantic; units without a
  value are left out; ``polysemanticity_n`` counts the units averaged).

The top-level score entries stay the rank-1 rows' (with ``top_k = 1``: every row, as before).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from cosy_bench.explainers.base import Explanations
from cosy_bench.explainers.ground_truth import TRUTH_SEP
from cosy_bench.scorers.label_similarity import names_concept, positive_text

__all__ = ["expand", "names_concept", "polysemanticity", "positive_text", "rank_summary",
           "truth_concepts"]

def truth_concepts(truth) -> list[str]:
    """The planted concepts of a ground-truth string: ``"red|grass"`` -> ``["red",
    "grass"]``, ``"red circle"`` -> ``["red circle"]``, ``""`` -> ``[]`` (no truth)."""
    return [t.strip() for t in str(truth).split(TRUTH_SEP) if t.strip()]


def expand(explanations: Explanations, neurons: list[int]
           ) -> tuple[list[int], list[int], list[str]]:
    """The rows of ``neurons``' explanations: ``(units, ranks, texts)``, each neuron's rows
    rank 1 first, 1-based ranks. With one explanation per neuron: ``(neurons, [1, ...],
    texts)``."""
    units, ranks, texts = [], [], []
    for k in neurons:
        for r, text in enumerate(explanations.ranked(k), 1):
            units.append(k)
            ranks.append(r)
            texts.append(text)
    return units, ranks, texts


def polysemanticity(units: list[int], texts: list[str],
                    embed: Callable[[list[str]], torch.Tensor],
                    single: float = float("nan")) -> torch.Tensor:
    """Per row, its unit's polysemanticity: 1 minus the mean pairwise cosine similarity of
    the unit's explanations in a text-embedding space, over all pairs i < j of its (K >= 2)
    explanations; ``single`` for a unit with a single explanation (NaN: undefined; the run
    passes 0 when it asked for K >= 2: the explainer offers one, it calls the unit
    monosemantic).

    Args:
        units: [R] the unit of each row; texts: [R] its explanation.
        embed: texts [T] -> embeddings [T, D] (normalised here); not called when no unit
            has two explanations.
        single: the value of a unit with one explanation.

    Returns:
        float64 [R]: in [0, 2]; 0 when the explanations coincide in the space.
    """
    order = list(dict.fromkeys(units))
    slot = {u: i for i, u in enumerate(order)}
    counts = [0] * len(order)
    for u in units:
        counts[slot[u]] += 1
    if max(counts, default=0) < 2:
        return torch.full((len(units),), float(single), dtype=torch.float64)
    distinct = list(dict.fromkeys(texts))
    emb = torch.nn.functional.normalize(embed(distinct).double(), dim=-1)  # [T, D]
    row_of = {t: i for i, t in enumerate(distinct)}
    idx = torch.full((len(order), max(counts)), -1, dtype=torch.long)  # [U, K] text rows
    fill = [0] * len(order)
    for u, t in zip(units, texts, strict=True):
        idx[slot[u], fill[slot[u]]] = row_of[t]
        fill[slot[u]] += 1
    valid = idx >= 0
    g = emb[idx.clamp(min=0)] * valid[..., None]  # [U, K, D]
    sims = g @ g.transpose(1, 2)  # [U, K, K]
    pairs = (valid[:, :, None] & valid[:, None, :]).triu(diagonal=1)
    n_pairs = pairs.sum(dim=(1, 2))
    mean = (sims * pairs).sum(dim=(1, 2)) / n_pairs.clamp(min=1)
    per_unit = torch.where(n_pairs > 0, 1.0 - mean, torch.full_like(mean, float(single)))
    return per_unit[torch.tensor([slot[u] for u in units], dtype=torch.long)]


def _best_rows(rows: list[dict], scores: list[str]) -> list[int]:
    """Index of each unit's best row (highest ``auc``, else first score; p-values lowest)."""
    key = "auc" if "auc" in scores else scores[0]
    sign = -1.0 if key.endswith("_p") or key.endswith("pvalue") else 1.0
    best: dict[int, int] = {}
    for j, row in enumerate(rows):
        v = sign * float(row.get(key, float("nan")))
        i = best.get(row["neuron"])
        if i is None or v > sign * float(rows[i].get(key, float("nan"))):
            best[row["neuron"]] = j
    return list(best.values())


def rank_summary(rows: list[dict], scores: dict[str, torch.Tensor], has_truth: bool,
                 summarize: Callable[[torch.Tensor], dict], top_k: int | None = None) -> dict:
    """The summary entries described in the module docstring, from the run's ``rows``
    (``neuron``, ``rank``, ``explanation``, ``ground_truth``, ``polysemanticity``), its
    ``scores`` ({name: [R]}), ``summarize`` (values -> mean, std, ...) and the ``top_k`` the
    run asked for (None: the largest rank; ``best_of_k`` is written for K > 1 even where
    every unit got one explanation)."""
    out: dict = {}
    top_k = max([*(int(r["rank"]) for r in rows), top_k or 1])
    if has_truth:
        by_unit: dict[int, list[dict]] = {}
        for r in rows:
            by_unit.setdefault(r["neuron"], []).append(r)
        hits, cover = [], []
        for unit_rows in by_unit.values():
            planted = truth_concepts(unit_rows[0]["ground_truth"])
            if not planted:
                continue
            first = next(r for r in unit_rows if int(r["rank"]) == 1)
            hits.append(any(names_concept(first["explanation"], t) for t in planted))
            cover.append(sum(any(names_concept(r["explanation"], t) for r in unit_rows)
                             for t in planted) / len(planted))
        out["ground_truth_match"] = sum(hits) / len(hits) if hits else None
        out["ground_truth_coverage"] = sum(cover) / len(cover) if cover else None
    if top_k > 1 and scores:
        best = torch.tensor(_best_rows(rows, list(scores)), dtype=torch.long)
        out["best_of_k"] = {name: summarize(vals[best]) for name, vals in scores.items()}
    if any("polysemanticity" in r for r in rows):
        first = [r for r in rows if int(r["rank"]) == 1]
        poly = summarize(torch.tensor(
            [float("nan") if r["polysemanticity"] == "" else r["polysemanticity"]
             for r in first], dtype=torch.float64))
        out["polysemanticity"] = poly["mean"]  # a number, not a score of the explanations
        out["polysemanticity_n"] = poly["n"]
    return out
