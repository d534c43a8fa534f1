"""Boolean formulas of concepts, the labels of INVERT (and of compositional explanations):
their text, their indicator over a probe set, and the beam's keep-the-best-distinct step.

Formula syntax (``label`` of a record)
--------------------------------------
* an atomic concept is its name, ``dog``; its negation is ``NOT dog`` (``NOT`` applies to
  atomic concepts only);
* formulas grow left to right with ``AND`` / ``OR`` and one (possibly negated) atomic concept
  at a time; a compound left operand is wrapped in parentheses, the outermost level is not:
  ``dog AND NOT cat``, ``(dog OR cat) AND grass``, ``((dog OR cat) AND grass) OR NOT sky``.
  Concept names containing `` AND ``, `` OR ``, ``NOT `` or parentheses make labels ambiguous
  to read back; the structured ``terms`` of a record are always unambiguous.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["OPS", "best_distinct", "coverage_ok", "format_formula", "formula_indicator"]

#: the binary operators, in the order a beam step tries them
OPS = ("AND", "OR")


def format_formula(terms: Sequence[tuple[str | None, int, bool]], concepts: Sequence[str]) -> str:
    """Text of a left-deep formula.

    Args:
        terms: ``[(None, c0, neg0), (op1, c1, neg1), ...]`` with ``op`` ``"AND"`` / ``"OR"``,
            concept indices ``c`` and negation flags.
        concepts: the ``C`` concept names.

    Returns:
        e.g. ``"(dog OR cat) AND NOT grass"`` (see the module docstring for the syntax).
    """
    text = ""
    for i, (op, c, neg) in enumerate(terms):
        lit = ("NOT " if neg else "") + str(concepts[c])
        if i == 0:
            text = lit
        else:
            left = f"({text})" if i >= 2 else text
            text = f"{left} {op} {lit}"
    return text


def formula_indicator(
    terms: Sequence[tuple[str | None, int, bool]], labels: torch.Tensor
) -> torch.Tensor:
    """Indicator of a left-deep formula (``terms`` as in :func:`format_formula`).

    Args:
        terms: the formula's terms.
        labels: bool ``[N, C]``.

    Returns:
        bool ``[N]``.
    """
    y = torch.as_tensor(labels).to(torch.bool)
    out = None
    for op, c, neg in terms:
        lit = ~y[:, c] if neg else y[:, c]
        if out is None:
            out = lit.clone()
        elif op == "AND":
            out &= lit
        elif op == "OR":
            out |= lit
        else:
            raise ValueError(f"unknown operator {op!r}")
    if out is None:
        raise ValueError("empty formula")
    return out


def best_distinct(
    score: torch.Tensor, size: torch.Tensor, fingerprint: torch.Tensor, beam: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best ``beam`` candidates per row with distinct indicators.

    Args:
        score: float64 ``[R, Q]``, ``-inf`` for invalid candidates.
        size: float64 ``[R, Q]`` indicator sizes; ``fingerprint``: float64 ``[R, Q]``
            weighted indicator sums. Equal (score, size, fingerprint) = same indicator.
        beam: number to keep.

    Returns:
        ``(index [R, B'], valid [R, B'])`` with ``B' = min(beam, Q)``, sorted by score
        (descending; ties by candidate index); the first of identical candidates is kept.
    """
    q = score.shape[1]
    by_fp = torch.argsort(fingerprint, dim=1, stable=True)
    order = by_fp.gather(1, torch.argsort(-score.gather(1, by_fp), dim=1, stable=True))
    s, z, f = (t.gather(1, order) for t in (score, size, fingerprint))
    dup = torch.zeros_like(s, dtype=torch.bool)
    dup[:, 1:] = (s[:, 1:] == s[:, :-1]) & (z[:, 1:] == z[:, :-1]) & (f[:, 1:] == f[:, :-1])
    keep = torch.empty_like(dup).scatter_(1, order, ~dup)
    masked = torch.where(keep, score, -math.inf)
    idx = torch.argsort(-masked, dim=1, stable=True)[:, : min(beam, q)]
    return idx, torch.isfinite(masked.gather(1, idx))


def coverage_ok(size: torch.Tensor, n: int, lo: float, hi: float) -> torch.Tensor:
    frac = size / n
    return (size > 0) & (size < n) & (frac >= lo) & (frac <= hi)
