"""Boolean formulas of concepts, the labels of INVERT and of compositional explanations:
their text, their indicator over a probe set, and the beam search both run (one search, two
objectives: INVERT's image-level AUROC, CompExp's pixel-level IoU; :func:`beam_search`).

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
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

__all__ = [
    "KINDS",
    "OPS",
    "beam_search",
    "best_distinct",
    "coverage_ok",
    "format_formula",
    "formula_indicator",
]

#: the binary operators, in the order a beam step tries them
OPS = ("AND", "OR")
#: the kinds of beam-step candidates, in the order a step tries them
KINDS = ("AND", "AND NOT", "OR", "OR NOT")


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


class Beam(NamedTuple):
    """The final beam of each of ``c`` neurons, best first (``B' = min(beam, 2C)`` slots).

    value: float64 ``[c, B']``, the metric (NaN in unused slots). size: ``[c, B']``, samples
    the formula covers. valid: bool ``[c, B']``, the slot holds a formula. literals, operators:
    long ``[c, B', length]`` (literal ``l`` = concept ``l % C``, negated if ``l >= C``;
    operator 0 AND, 1 OR, -1 none). length: long ``[c, B']``, terms of each formula.
    """

    value: torch.Tensor
    size: torch.Tensor
    valid: torch.Tensor
    literals: torch.Tensor
    operators: torch.Tensor
    length: torch.Tensor

    @classmethod
    def cat(cls, parts: Sequence[Beam]) -> Beam:
        """The beams of neuron chunks, concatenated over neurons."""
        return cls(*(torch.cat(field) for field in zip(*parts, strict=True)))


def beam_search(
    values: torch.Tensor,
    lab,
    labels_t: torch.Tensor,
    weights: torch.Tensor,
    length: int,
    beam: int,
    metric: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    allowed: Callable[[torch.Tensor], torch.Tensor],
    sign: float = 1.0,
    kinds: Sequence[str] = KINDS,
    negated_atoms: bool = True,
    penalty: float = 1.0,
    not_length: bool = True,
) -> Beam:
    """Beam search over left-deep formulas for a chunk of neurons, for any objective that is
    a function of the formula's *weighted size* ``s = sum_i v_i f_i`` and its size
    ``z = sum_i f_i`` (``f`` the formula's indicator over the ``N`` samples, ``v`` the
    neuron's sample values).

    INVERT: ``v`` = mid-ranks, ``metric`` = AUROC from the rank sum. CompExp: samples are
    pixels, ``v`` = the unit's binary mask, ``metric`` = IoU ``s / (|v| + z - s)``.
    A beam step needs no candidate indicators: with ``T = (v * b) @ Y`` and ``m = b @ Y``
    (one matrix product for all neurons of the chunk and all their beam formulas), ``s``
    and ``z`` of ``b AND y``, ``b AND NOT y``, ``b OR y``, ``b OR NOT y`` for every concept
    follow by inclusion-exclusion. A third row, ``(w * b) @ Y`` with fixed random integer
    weights ``w``, fingerprints each candidate's indicator to drop duplicates.

    Args:
        values: float64 ``[c, N]`` sample values of ``c`` neurons.
        lab: the label operand (``LabelProducts`` of ``Y [N, C]``); ``labels_t``: bool
            ``[C, N]`` (``Y.T``).
        weights: float64 ``[N]`` integer fingerprint weights.
        length, beam: maximal formula length and beam width.
        metric: ``(s, z, v_tot) -> value`` (broadcasting, float64; ``v_tot = sum_i v_i``
            of each neuron, shaped to broadcast with ``s``); the reported value.
        allowed: ``z -> bool``: which formula sizes may enter the beam.
        sign: +1 maximises ``metric``, -1 minimises it.
        kinds: the candidate kinds a step may add (a subset of :data:`KINDS`).
        negated_atoms: whether ``NOT c`` may start a formula (length 1).
        penalty: the score is ``sign * metric * penalty ** (length - 1)`` (CompExp's
            complexity penalty; 1 = none).
        not_length: the penalty's length counts each ``NOT`` as one more unit (CompExp's
            authors: ``len(A AND NOT B) = 3``); False: the number of concepts.

    Returns:
        the final :class:`Beam` of each neuron, best first.
    """
    c_neur, n = values.shape
    n_con = lab.c
    u = lab.rmatmul(values)  # [c, C] weighted sizes of the concepts
    cnt, fp_con = lab.counts, lab.rmatmul(weights[None])[0]  # [C], [C]
    v_tot = values.sum(dim=1, keepdim=True)  # [c, 1]
    w_tot = float(weights.sum())
    kind_ok = torch.tensor([k in kinds for k in KINDS])

    # length-1 candidates: C concepts, then C negations
    size = torch.cat([cnt, n - cnt]).expand(c_neur, -1)
    val = metric(torch.cat([u, v_tot - u], dim=1), size, v_tot)  # [c, 2C]
    fp = torch.cat([fp_con, w_tot - fp_con]).expand(c_neur, -1)
    ok = allowed(size)
    if not negated_atoms:
        ok = ok & (torch.arange(2 * n_con) < n_con)
    score = sign * val
    if penalty != 1.0 and not_length:  # NOT c: length 2
        score = score * penalty ** (torch.arange(2 * n_con) >= n_con).to(torch.float64)
    score = torch.where(ok, score, -math.inf)
    idx, valid = best_distinct(score, size, fp, beam)
    b_val, b_size, b_fp = val.gather(1, idx), size.gather(1, idx), fp.gather(1, idx)
    b_score = torch.where(valid, score.gather(1, idx), -math.inf)
    nb = idx.shape[1]
    lits = torch.full((c_neur, nb, length), -1, dtype=torch.long)
    ops = torch.full((c_neur, nb, length), -1, dtype=torch.long)
    lits[:, :, 0] = idx
    blen = torch.ones(c_neur, nb, dtype=torch.long)
    bnot = (idx >= n_con).long() if not_length else torch.zeros_like(blen)  # NOTs in each
    if length > 1:  # [c, B, N] indicators of the beam formulas
        ind = labels_t[idx % n_con] ^ (idx >= n_con)[:, :, None]

    for _ in range(1, length):
        bf = ind.to(torch.float64)
        rows = torch.stack([values[:, None, :] * bf, bf, weights * bf], dim=1)  # [c, 3, B, N]
        prod = lab.rmatmul(rows.reshape(-1, n)).view(c_neur, 3, nb, n_con)
        t, m, h = prod[:, 0], prod[:, 1], prod[:, 2]  # [c, B, C]
        sb = (values[:, None, :] * bf).sum(-1)[..., None]  # [c, B, 1]
        uu = u[:, None, :]
        # candidate kinds: b AND y, b AND NOT y, b OR y, b OR NOT y
        s_c = torch.stack([t, sb - t, sb + uu - t, v_tot[..., None] - uu + t], dim=2)
        z_b = b_size[..., None, None]
        z_c = torch.stack([m, z_b[..., 0] - m, z_b[..., 0] + cnt - m, n - cnt + m], dim=2)
        h_b = b_fp[..., None]
        f_c = torch.stack([h, h_b - h, h_b + fp_con - h, w_tot - fp_con + h], dim=2)
        v_c = metric(s_c, z_c, v_tot[..., None, None])  # [c, B, 4, C]
        ok = allowed(z_c) & (z_c != z_b) & valid[..., None, None] & kind_ok[:, None]
        sc_c = sign * v_c
        if penalty != 1.0:  # a candidate's length: its parent's plus one (two with NOT)
            extra = (torch.arange(4) % 2 == 1).to(torch.float64)[:, None] if not_length else 0.0
            sc_c = sc_c * penalty ** ((blen + bnot).to(torch.float64)[..., None, None] + extra)
        sc_c = torch.where(ok, sc_c, -math.inf)
        all_score = torch.cat([b_score, sc_c.reshape(c_neur, -1)], dim=1)
        all_size = torch.cat([b_size, z_c.reshape(c_neur, -1)], dim=1)
        all_fp = torch.cat([b_fp, f_c.reshape(c_neur, -1)], dim=1)
        all_val = torch.cat([b_val, v_c.reshape(c_neur, -1)], dim=1)
        sel, valid = best_distinct(all_score, all_size, all_fp, nb)

        new = sel >= nb  # a new formula (else a kept beam formula)
        j = (sel - nb).clamp_min(0)
        parent = torch.where(new, j // (4 * n_con), sel)
        kind = (j // n_con) % 4
        con = j % n_con
        is_and, neg = kind < 2, kind % 2 == 1
        # formula bookkeeping
        lits = lits.gather(1, parent[..., None].expand(-1, -1, length)).clone()
        ops = ops.gather(1, parent[..., None].expand(-1, -1, length)).clone()
        plen = blen.gather(1, parent)
        pos = plen.clamp_max(length - 1)[..., None]
        lit_new = torch.where(new, con + n_con * neg, lits.gather(2, pos)[..., 0])
        op_new = torch.where(new, (~is_and).long(), ops.gather(2, pos)[..., 0])
        lits.scatter_(2, pos, lit_new[..., None])
        ops.scatter_(2, pos, op_new[..., None])
        blen = plen + new.long()
        bnot = bnot.gather(1, parent) + (new & neg).long() * int(not_length)
        # indicators of the new beam
        pind = ind.gather(1, parent[..., None].expand(-1, -1, n))
        lit_ind = labels_t[con] ^ neg[..., None]
        combined = torch.where(is_and[..., None], pind & lit_ind, pind | lit_ind)
        ind = torch.where(new[..., None], combined, pind)
        b_score = torch.where(valid, all_score.gather(1, sel), -math.inf)
        b_size, b_fp, b_val = (x.gather(1, sel) for x in (all_size, all_fp, all_val))

    return Beam(value=torch.where(valid, b_val, math.nan), size=b_size, valid=valid,
                literals=lits, operators=ops, length=blen)
