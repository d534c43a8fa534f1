"""INVERT (Bykov et al., NeurIPS 2023): label neurons with boolean formulas of concepts.

A neuron ``k`` is labelled with the formula ``phi`` (over the concept labels of a probe set)
whose indicator best separates the neuron's activations, measured by the AUROC of the
activations for the indicator (mode ``"positive"``: highest AUROC; ``"negative"``: lowest
AUROC, i.e. highest ``1 - AUROC``).

Formulas and their text are those of :mod:`cosy_bench.explainers.formulas`.

Search (as the authors' ``Invert.explain_representation``)
----------------------------------------------------------
Atomic formulas are the ``C`` concepts and their ``C`` negations. The beam of length 1 holds
the ``beam_size`` best atomic formulas whose coverage ``n1 / N`` lies in
``[min_fraction, max_fraction]`` and strictly inside ``(0, 1)``. Each further step (up to
``length``) adds to the beam every ``b AND a`` / ``b OR a`` of a beam formula ``b`` and an
atomic formula ``a`` (all ``2C`` of them, whatever their coverage) that passes the same
coverage rule and changes ``b``'s indicator, then keeps the ``beam_size`` best; formulas of
earlier steps stay candidates, so the result has length ``<= length``.
Differences from the authors' code (documented, deliberate): formulas with identical
indicators (``a AND b`` reached from ``a`` and from ``b``) are kept once (the authors' beam can
hold duplicates); formulas are not simplified with sympy; ties in the score are broken by
candidate order (beam slot, then ``AND a``, ``AND NOT a``, ``OR a``, ``OR NOT a``, then
concept index), not by Python's sort of the authors' list.

Computation
-----------
All AUROCs come from one ranking of each neuron's activations (mid-ranks for ties, float64)
and label matrix products (Mann-Whitney form, equal to ``sklearn.metrics.roc_auc_score``):
``AUC[k, c] = (sum_{i: y_ic} R[i, k] - n1_c (n1_c + 1) / 2) / (n1_c n0_c)``, i.e. ``R.T @ Y``.
A beam step needs no candidate indicators: with ``T = (R_k * b) @ Y`` and ``m = b @ Y``
(one matrix product for all neurons of a chunk and all their beam formulas), the rank sums
and sizes of ``b AND y``, ``b AND NOT y``, ``b OR y``, ``b OR NOT y`` for every concept follow
by inclusion-exclusion from ``T``, ``m``, ``R_k @ Y`` and the column counts. A third row,
``(w * b) @ Y`` with fixed random integer weights ``w``, fingerprints each candidate's
indicator (float64 sums of integers below 2**52, so exact; two different indicators of equal
size and AUROC collide with probability about ``N / 2**52``) to drop duplicates. Sparse labels
(density <= 5%) use a sparse CSR product.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cosy_bench.explainers.auroc import LabelProducts, auc_from_ranksum, check_inputs, midranks
from cosy_bench.explainers.base import Explainer, Explanations
from cosy_bench.explainers.budget import budget_bytes, too_small
from cosy_bench.explainers.formulas import OPS, Beam, beam_search, coverage_ok, format_formula

__all__ = ["InvertExplainer", "invert"]

_CHUNK_BYTES = 256 * 2**20  # per-chunk working set aimed at (speed); the budget may lower it
_HASH_SEED = 0x1A2B3C


def _search_chunk(
    acts: torch.Tensor,
    lab: LabelProducts,
    labels_t: torch.Tensor,
    weights: torch.Tensor,
    length: int,
    beam: int,
    lo: float,
    hi: float,
    sign: float,
) -> tuple[Beam, torch.Tensor]:
    """INVERT's beam search (:func:`~cosy_bench.explainers.formulas.beam_search` with the
    neurons' mid-ranks as sample values and AUROC from the rank sum as the metric) for a
    chunk of neurons ``acts`` ``[c, N]``: its :class:`~cosy_bench.explainers.formulas.Beam`
    (``value`` = the AUROC) and the rank tie term ``[c]``."""
    n = acts.shape[1]
    ranks, tie = midranks(acts)
    beam_ = beam_search(ranks, lab, labels_t, weights, length, beam,
                        metric=lambda s, z, _: auc_from_ranksum(s, z, n),
                        allowed=lambda z: coverage_ok(z, n, lo, hi), sign=sign)
    return beam_, tie


def _mwu_pvalue(auc: torch.Tensor, n1: torch.Tensor, n: int, tie: torch.Tensor) -> torch.Tensor:
    """Two-sided Mann-Whitney U p-value, normal approximation with tie and continuity
    correction (``scipy.stats.mannwhitneyu(..., method="asymptotic")``). All ``[K]``."""
    n0 = n - n1
    u1 = auc * n1 * n0
    u = torch.maximum(u1, n1 * n0 - u1)
    sd = torch.sqrt(n1 * n0 / 12 * ((n + 1) - tie / (n * (n - 1))))
    z = (u - n1 * n0 / 2 - 0.5) / sd
    p = torch.special.erfc(z / math.sqrt(2.0))  # = 2 * norm.sf(z)
    return p.clamp(0.0, 1.0)


def working_set(n: int, c: int, nnz: int, length: int, beam_size: int) -> tuple[int, int]:
    """Bytes of INVERT's working set beyond its inputs: ``(fixed, per_neuron)``.

    ``fixed``: the transposed labels (``N * C`` bools), the hash weights (16 bytes a sample) and
    the sparse label product (about 56 bytes per non-zero label while it is built);
    ``per_neuron``: a chunk's neuron's share (its activations' copy and mid-ranking, 72 bytes a
    sample; with ``length > 1`` a beam step, ``8 * N * (3 * B + 9)``)."""
    fixed = n * c + 16 * n + 56 * nnz
    per_neuron = 8 * n * (3 * beam_size + 9) if length > 1 else 8 * n * 9
    return fixed, per_neuron


def chunk_for_budget(n: int, c: int, nnz: int, length: int, beam_size: int,
                     max_memory_gb: float | None) -> int:
    """Neurons per chunk: about 256 MiB of working set, fewer if that would not stay within
    ``max_memory_gb`` (:mod:`cosy_bench.explainers.budget`); a ValueError naming the option
    if one neuron cannot."""
    budget = budget_bytes(max_memory_gb)
    fixed, per_neuron = working_set(n, c, nnz, length, beam_size)
    if fixed + per_neuron > budget:
        raise too_small("INVERT", budget, fixed + per_neuron,
                        f"one neuron at N={n} probe samples, C={c} concepts, "
                        f"length={length}, beam_size={beam_size}",
                        "use fewer probe samples or concepts (or a smaller beam_size)")
    return max(1, min(budget - fixed, _CHUNK_BYTES) // per_neuron)


def invert(
    activations: torch.Tensor,
    labels: torch.Tensor,
    concepts: Sequence[str],
    length: int = 1,
    beam_size: int = 5,
    min_fraction: float = 0.0,
    max_fraction: float = 0.5,
    mode: str = "positive",
    pvalue: bool = False,
    chunk_size: int | None = None,
    return_beam: bool = False,
    max_memory_gb: float | None = None,
) -> list[dict]:
    """Label every neuron with its INVERT formula.

    Args:
        activations: float ``[N, K]``: K neurons on N concept-labelled probe samples (finite).
        labels: bool (or 0/1) ``[N, C]``: concept presence per sample.
        concepts: the C concept names.
        length: maximal formula length ``L`` (1: atomic concepts and their negations).
        beam_size: beam width ``B`` (5 as in the authors' ``example.py``, ``L = 5, B = 5``;
            their ``explain_representation`` has no default).
        min_fraction, max_fraction: allowed coverage ``n1 / N`` of a formula (also strictly
            inside ``(0, 1)``), defaults 0 and 0.5 as in the authors' code.
        mode: ``"positive"`` maximises AUROC; ``"negative"`` minimises it (concepts whose
            presence lowers the activation); the reported ``auc`` is always the AUROC itself.
        pvalue: add the two-sided Mann-Whitney U p-value (normal approximation with tie and
            continuity correction, as ``scipy.stats.mannwhitneyu(method="asymptotic")``; the
            authors call ``mannwhitneyu`` with its default method, which is exact only for
            samples of at most 8 on both sides).
        chunk_size: neurons per chunk (``None``: as many as fit in ``max_memory_gb``, see
            :func:`working_set`). Chunks change no result (each neuron is searched alone).
        return_beam: add ``beam``: the final beam (best first, distinct indicators), a list
            of dicts with the keys below except ``neuron``.
        max_memory_gb: working-set budget in GiB beyond the inputs (``None``:
            :func:`cosy_bench.explainers.budget.budget_bytes`' default); a ValueError if one
            neuron does not fit.

    Returns:
        one dict per neuron (in order): ``neuron`` (int), ``label`` (str, see the module
        docstring for the syntax; ``None`` if no formula passes the coverage rule), ``auc``
        (float, NaN if none), ``fraction`` (coverage of the formula), ``length`` (number of
        atomic terms), ``terms`` (``[(op, concept_index, negated), ...]``, op ``None`` for the
        first term), ``pvalue`` if requested, ``beam`` if requested. The search is
        memory-bounded (chunks of neurons); only building these records loops over neurons.
    """
    if mode not in ("positive", "negative"):
        raise ValueError(f"mode must be 'positive' or 'negative', got {mode!r}")
    if length < 1 or beam_size < 1:
        raise ValueError("length and beam_size must be >= 1")
    a, y = check_inputs(activations, labels)
    n, k = a.shape
    if len(concepts) != y.shape[1]:
        raise ValueError(f"{len(concepts)} concept names for {y.shape[1]} label columns")
    step = chunk_size or chunk_for_budget(n, y.shape[1], int(y.count_nonzero()), length, beam_size,
                                          max_memory_gb)
    lab = LabelProducts(y)
    labels_t = y.T.contiguous()
    gen = torch.Generator().manual_seed(_HASH_SEED)
    hi_w = max(2, 2**52 // max(n, 1))
    weights = torch.randint(0, hi_w, (n,), generator=gen, dtype=torch.int64).to(torch.float64)
    sign = 1.0 if mode == "positive" else -1.0

    parts: list[tuple[Beam, torch.Tensor]] = []
    for k0 in range(0, k, step):
        acts = a[:, k0 : k0 + step].T.contiguous()
        parts.append(
            _search_chunk(acts, lab, labels_t, weights, length, beam_size,
                          min_fraction, max_fraction, sign)
        )
    if not parts:
        return []
    res = Beam.cat([b for b, _ in parts])
    tie = torch.cat([t for _, t in parts])
    pvals = None
    if pvalue:
        pvals = _mwu_pvalue(res.value, res.size, n, tie[:, None]).tolist()

    c_tot = y.shape[1]
    lits, ops, lens = res.literals.tolist(), res.operators.tolist(), res.length.tolist()
    aucs, sizes, valid = res.value.tolist(), res.size.tolist(), res.valid.tolist()

    def entry(i: int, s: int) -> dict:
        rec: dict = {"label": None, "auc": math.nan, "fraction": math.nan, "length": 0,
                     "terms": []}
        if valid[i][s]:
            terms = [
                (None if j == 0 else OPS[ops[i][s][j]], lits[i][s][j] % c_tot,
                 lits[i][s][j] >= c_tot)
                for j in range(lens[i][s])
            ]
            rec.update(label=format_formula(terms, concepts), auc=aucs[i][s],
                       fraction=sizes[i][s] / n, length=lens[i][s], terms=terms)
        if pvals is not None:
            rec["pvalue"] = pvals[i][s] if valid[i][s] else math.nan
        return rec

    out = []
    for i in range(k):
        rec = {"neuron": i, **entry(i, 0)}
        if return_beam:
            rec["beam"] = [entry(i, s) for s in range(len(valid[i])) if valid[i][s]]
        out.append(rec)
    return out


class InvertExplainer(Explainer):
    """``explainer=invert``: INVERT formulas from the layer's activations on a labelled probe
    set (the pipeline's activation pass, cached by model, layer and probe set)."""

    name = "invert"

    def __init__(self, probe, length: int = 1, beam_size: int = 5, min_fraction: float = 0.0,
                 max_fraction: float = 0.5, mode: str = "positive", pvalue: bool = False,
                 max_memory_gb: float | None = None, top_k: int = 1):
        self.probe = probe
        self.set_top_k(top_k)  # the top_k formulas of the final beam, best first
        if top_k > beam_size:
            raise ValueError(f"explainer.top_k={top_k} needs explainer.beam_size >= {top_k} "
                             f"(the top-K formulas come from the final beam; it is {beam_size})")
        self._max_memory_gb = max_memory_gb  # not in the cache key: chunks change no result
        self.length, self.beam_size = length, beam_size
        self.min_fraction, self.max_fraction = min_fraction, max_fraction
        self.mode, self.pvalue = mode, pvalue

    def cache_key(self) -> dict:
        return {**super().cache_key(), "probe": OmegaConf.to_container(self.probe, resolve=True)
                if isinstance(self.probe, DictConfig) else self.probe}

    def explain(self, ctx) -> Explanations:
        from cosy_bench.data.probe import probe_concepts

        probe = instantiate(self.probe)
        if not hasattr(probe, "labels"):
            raise ValueError(f"explainer=invert needs a labelled probe set; {probe.name} has no "
                             "labels (choose probe=toyworld, imagenet_train or image_folder)")
        acts, index = ctx.activations(probe, "probe", with_index=True)
        records = invert(acts, probe.labels[index], probe_concepts(probe, ctx.model),
                         length=self.length, beam_size=self.beam_size,
                         min_fraction=self.min_fraction, max_fraction=self.max_fraction,
                         mode=self.mode, pvalue=self.pvalue,
                         max_memory_gb=self._max_memory_gb, return_beam=self.top_k > 1)
        if self.top_k > 1:  # the beam's best top_k formulas of each neuron, best first
            records = [{"neuron": r["neuron"], **b} for r in records
                       for b in r["beam"][:self.top_k]]
        kept = [{**r, "invert_auc": r["auc"], "invert_fraction": r["fraction"],
                 "invert_pvalue": r.get("pvalue")} for r in records if r["label"] is not None]
        return Explanations.from_ranked(kept, ["invert_auc", "invert_fraction",
                                               *(["invert_pvalue"] if self.pvalue else [])])
