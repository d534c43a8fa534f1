"""Benchmark the vectorised INVERT, CLIP-Dissect, NetDissect and CompExp cores against
per-neuron baselines (NetDissect and CompExp: :mod:`cosy_bench.bench.dissection`).

``python -m cosy_bench.bench explainers [--invert-samples 50000 --invert-concepts 1000
--invert-neurons 512 --length 1 --clip-images 20000 --clip-concepts 20000 --clip-neurons 512]``

INVERT: ImageNet-val-like synthetic data (every sample has one of C classes, N / C each;
float32 activations, half of the neurons planted on a class). Times :func:`invert` (all
neurons, all concepts and negations) and :func:`auroc_matrix`; the baseline is the authors'
way, one ``sklearn.metrics.roc_auc_score`` call per neuron per formula. That loop is timed on a
subset (``--sklearn-neurons`` x ``--sklearn-concepts`` calls) and EXTRAPOLATED to the
``K * 2C`` calls of a length-1 search (every concept and its negation; for ``--length L > 1``
``K * (2C + (L - 1) * B * 2C * 2)``, the authors' AND / OR of every beam formula with every
atomic formula); its values are compared with ours on the subset.

CLIP-Dissect: ``P`` from random image / text embeddings with a shared direction (cosines
around 0.2, like CLIP's), computed by :func:`image_text_similarity`; target activations with
half of the neurons planted on a concept. Times :func:`soft_wpmi` against a re-implementation
of the authors' per-neuron formulation (softmax of the whole ``P``, then one gather / log /
sum per neuron, float32), on the same inputs, and compares the values and the labels.

Timings are wall-clock, best of ``--repeats`` (the two soft_wpmi versions interleaved), on
whatever else the machine runs; ``--threads`` sets torch's CPU threads. Exits with status 1
if a value difference exceeds its tolerance.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from cosy_bench.bench import dissection
from cosy_bench.explainers.auroc import auroc_matrix
from cosy_bench.explainers.clip_dissect.similarities import image_text_similarity, soft_wpmi
from cosy_bench.explainers.invert import invert


def _timed(fn: Callable[[], object], repeats: int = 1) -> tuple[float, object]:
    """Best wall time of ``repeats`` calls and the last result."""
    best, out = math.inf, None
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


# ---------------------------------------------------------------------------------------------
# INVERT
# ---------------------------------------------------------------------------------------------


def make_invert_data(
    samples: int, concepts: int, neurons: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Activations float32 ``[N, K]``, one-hot labels bool ``[N, C]``, planted class ``[K]``
    (-1 for unplanted neurons)."""
    gen = torch.Generator().manual_seed(seed)
    cls = torch.arange(samples) % concepts
    cls = cls[torch.randperm(samples, generator=gen)]
    labels = torch.zeros(samples, concepts, dtype=torch.bool)
    labels[torch.arange(samples), cls] = True
    acts = torch.randn(samples, neurons, generator=gen)
    planted = torch.randint(0, concepts, (neurons,), generator=gen)
    planted[neurons // 2 :] = -1
    rows = torch.arange(neurons // 2)
    acts[:, rows] += 2.5 * labels[:, planted[rows]]
    return acts.clamp_min(0), labels, planted  # ReLU: many tied zeros


def bench_invert(args: argparse.Namespace) -> bool:
    from sklearn.metrics import roc_auc_score

    n, c, k = args.invert_samples, args.invert_concepts, args.invert_neurons
    acts, labels, planted = make_invert_data(n, c, k, args.seed)
    names = [f"class{j}" for j in range(c)]
    print(f"INVERT: N={n} samples, C={c} concepts, K={k} neurons, length={args.length}, "
          f"beam={args.beam_size}, threads={torch.get_num_threads()}")

    t_inv, recs = _timed(lambda: invert(acts, labels, names, length=args.length,
                                        beam_size=args.beam_size), args.repeats)
    t_mat, aucs = _timed(lambda: auroc_matrix(acts, labels), args.repeats)
    hit = [r["label"] == names[int(p)] for r, p in zip(recs, planted.tolist(), strict=True)
           if p >= 0]
    print(f"  invert(length={args.length}): {t_inv:8.2f} s  (planted neurons labelled with "
          f"their class: {sum(hit)}/{len(hit)})")
    print(f"  auroc_matrix [K, C]:  {t_mat:8.2f} s")

    kk = min(args.sklearn_neurons, k)
    cc = min(args.sklearn_concepts, c)
    a_np, y_np = acts.numpy(), labels.numpy()
    ref = np.empty((kk, cc))
    start = time.perf_counter()
    for i in range(kk):
        for j in range(cc):
            ref[i, j] = roc_auc_score(y_np[:, j], a_np[:, i])
    per_call = (time.perf_counter() - start) / (kk * cc)
    # the authors' search scores 2C atomic formulas, then per step B * 2C * (AND, OR)
    per_neuron = 2 * c + (args.length - 1) * args.beam_size * 2 * c * 2
    calls = k * per_neuron
    extrapolated = per_call * calls
    diff = float(np.abs(aucs[:kk, :cc].numpy() - ref).max())
    formula = "K*2C" if args.length == 1 else "K*(2C + (L-1)*B*4C)"
    print(f"  sklearn roc_auc_score loop: {per_call * 1e3:.2f} ms/call measured on {kk}x{cc} "
          f"calls; EXTRAPOLATED to {formula} = {calls:,} calls: {extrapolated:,.0f} s")
    print(f"  speed-up of invert over the extrapolated loop: {extrapolated / t_inv:,.0f}x; "
          f"max |AUC diff| on the subset: {diff:.2e}")
    ok = diff <= 1e-9
    if not ok:
        print(f"  FAIL: AUC difference {diff:.2e} > 1e-9")
    return ok


# ---------------------------------------------------------------------------------------------
# CLIP-Dissect
# ---------------------------------------------------------------------------------------------


def make_clip_data(
    images: int, concepts: int, neurons: int, dim: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Image and text embeddings ``[N, D]``, ``[M, D]``, target activations ``[N, K]`` (filled
    once ``P`` is known, see :func:`plant_neurons`) and the planted concept per neuron."""
    gen = torch.Generator().manual_seed(seed)
    shared = torch.zeros(dim)
    shared[0] = 1.0
    img = 0.45 * shared + torch.randn(images, dim, generator=gen) / math.sqrt(dim)
    txt = 0.45 * shared + torch.randn(concepts, dim, generator=gen) / math.sqrt(dim)
    planted = torch.randint(0, concepts, (neurons,), generator=gen)
    planted[neurons // 2 :] = -1
    noise = torch.randn(images, neurons, generator=gen)
    return img, txt, noise, planted


def plant_neurons(p: torch.Tensor, noise: torch.Tensor, planted: torch.Tensor) -> torch.Tensor:
    """ReLU activations ``[N, K]``; planted neuron ``k`` follows ``P[:, planted[k]]``."""
    acts = noise.clone()
    rows = torch.nonzero(planted >= 0).flatten()
    col = p[:, planted[rows]]
    acts[:, rows] = 0.3 * noise[:, rows] + (col - col.mean(0)) / col.std(0)
    return acts.clamp_min(0)


def authors_soft_wpmi(
    clip_feats: torch.Tensor,
    target_feats: torch.Tensor,
    top_k: int = 100,
    a: float = 10.0,
    lam: float = 1.0,
    min_prob: float = 1e-7,
    p_start: float = 0.998,
    p_end: float = 0.97,
) -> torch.Tensor:
    """SoftWPMI as the authors' ``similarity.soft_wpmi`` computes it, re-implemented from
    reading: softmax over concepts of the whole ``a * P``, top images per neuron, then per
    neuron one gather of its top rows, ``sum log(1 + p_r (p - 1) + min_prob)``; finally the
    prior by a logsumexp over neurons. ``[N, M]``, ``[N, K]`` -> ``[K, M]``."""
    probs = torch.softmax(a * clip_feats, dim=1)
    top = torch.topk(target_feats, k=top_k, dim=0).indices
    member = (p_start - torch.arange(top_k) / top_k * (p_start - p_end))[:, None]
    rows = []
    for k in range(target_feats.shape[1]):
        g = probs[top[:, k]]
        rows.append(torch.log(1 + member * (g - 1) + min_prob).sum(dim=0))
    log_e = torch.stack(rows)
    log_prior = torch.logsumexp(log_e, dim=0, keepdim=True) - math.log(log_e.shape[0])
    return log_e - lam * log_prior


def bench_clip(args: argparse.Namespace) -> bool:
    n, m, k, d = args.clip_images, args.clip_concepts, args.clip_neurons, args.clip_dim
    print(f"CLIP-Dissect soft_wpmi: N={n} images, M={m} concepts, K={k} neurons, "
          f"D={d}, threads={torch.get_num_threads()}")
    img, txt, noise, planted = make_clip_data(n, m, k, d, args.seed)
    t_p, p = _timed(lambda: image_text_similarity(img, txt))
    print(f"  image_text_similarity P [N, M]: {t_p:8.2f} s")
    target = plant_neurons(p, noise, planted)
    del noise

    t_ours, t_base = math.inf, math.inf
    for _ in range(max(1, args.repeats)):  # interleaved: both see the same machine load
        t, ours = _timed(lambda: soft_wpmi(p, target))
        t_ours = min(t_ours, t)
        t, base = _timed(lambda: authors_soft_wpmi(p, target))
        t_base = min(t_base, t)
    print(f"  soft_wpmi (vectorised, chunked):   {t_ours:8.2f} s")
    print(f"  authors' per-neuron formulation:   {t_base:8.2f} s  -> speed-up "
          f"{t_base / t_ours:.2f}x")

    diff = (ours.double() - base.double()).abs()
    scale = float(base.abs().max())
    same = (ours.argmax(1) == base.argmax(1)).float().mean().item()
    rows = torch.nonzero(planted >= 0).flatten()
    hit = (ours.argmax(1)[rows] == planted[rows]).float().mean().item()
    print(f"  values: max |diff| {float(diff.max()):.2e} (max |value| {scale:.1f}); "
          f"same label for {same:.1%} of neurons; planted neurons recovered {hit:.1%}")
    ok = float(diff.max()) <= args.tol
    if not ok:
        print(f"  FAIL: value difference {float(diff.max()):.2e} > --tol {args.tol}")
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks; returns 0 if all value checks pass, else 1."""
    ap = argparse.ArgumentParser(prog="python -m cosy_bench.bench explainers",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--invert-samples", type=int, default=50_000)
    ap.add_argument("--invert-concepts", type=int, default=1_000)
    ap.add_argument("--invert-neurons", type=int, default=512)
    ap.add_argument("--length", type=int, default=1, help="INVERT formula length")
    ap.add_argument("--beam-size", type=int, default=5)
    ap.add_argument("--sklearn-neurons", type=int, default=2,
                    help="neurons of the timed sklearn subset")
    ap.add_argument("--sklearn-concepts", type=int, default=50,
                    help="concepts of the timed sklearn subset")
    ap.add_argument("--clip-images", type=int, default=20_000)
    ap.add_argument("--clip-concepts", type=int, default=20_000)
    ap.add_argument("--clip-neurons", type=int, default=512)
    ap.add_argument("--clip-dim", type=int, default=64, help="embedding dimension")
    ap.add_argument("--tol", type=float, default=1e-3,
                    help="max |soft_wpmi - baseline| allowed (float32 sums of ~100 logs)")
    ap.add_argument("--repeats", type=int, default=1, help="best of this many timed runs")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--skip-invert", action="store_true")
    ap.add_argument("--skip-clip", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    dissection.add_arguments(ap)  # NetDissect and CompExp rows (cosy_bench/bench/dissection.py)
    args = ap.parse_args(list(argv) if argv is not None else None)
    if args.threads:
        torch.set_num_threads(args.threads)

    ok = True
    if not args.skip_invert:
        ok &= bench_invert(args)
    if not args.skip_clip:
        ok &= bench_clip(args)
    if not args.skip_netdissect:
        ok &= dissection.bench_netdissect(args)
    if not args.skip_compexp:
        ok &= dissection.bench_compexp(args)
    return 0 if ok else 1
