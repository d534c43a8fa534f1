"""Benchmark the vectorised CoSy scorers against per-neuron reference loops.

``python -m cosy_bench.bench scorers [--neurons 512 --control 50000 --concept 50 --repeats 3]``

Random post-ReLU-like activations rounded to a grid (many exact ties, zeros, and a few dead
neurons with a constant control column) are scored by :mod:`cosy_bench.scorers` and by the
references: a per-neuron ``sklearn.metrics.roc_auc_score`` loop for AUC and a per-neuron numpy
loop for MAD (``--utest`` adds the U test against scipy's own axis-vectorised
``mannwhitneyu``). Both sides get the same ``[N, K]`` arrays. Prints the best time over
``--repeats`` runs of each, the speed-up and the largest absolute difference of the values;
exits with status 1 if any difference exceeds ``--tol``.

The sorted-control path (:mod:`cosy_bench.scorers.sorted`) is timed on the same arrays:
``score_all`` (the public entry point: it sorts each control column once, then searches),
``cold`` sorts the control set and scores (what the first job on a control set pays),
``warm`` scores against the sorted control set a previous job cached; both are compared with
the per-neuron loops (AUC + MAD together) and must equal ``score_all`` to ``--fast-tol``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from cosy_bench.scorers import auc, mad, score_all, utest
from cosy_bench.scorers.sorted import score_sorted, sort_control


def make_activations(
    neurons: int, control: int, concept: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random float32 activations ``([control, neurons], [concept, neurons])`` with ties.

    Each neuron has its own scale and offset; concept activations are shifted by a per-neuron
    amount (some neurons are not shifted at all). Values are ReLU'd and rounded to 0.01, so
    about half are exact zeros and the rest repeat; every 64th neuron is dead on the control
    set (all zeros).
    """
    gen = torch.Generator().manual_seed(seed)
    scale = torch.rand(neurons, generator=gen) * 2 + 0.5
    offset = torch.randn(neurons, generator=gen) * 0.5
    shift = torch.rand(neurons, generator=gen) * 3 * (torch.rand(neurons, generator=gen) > 0.2)

    def draw(rows: int, extra: torch.Tensor) -> torch.Tensor:
        x = torch.randn(rows, neurons, generator=gen) * scale + offset + extra
        return (x.clamp_min(0) * 100).round() / 100

    ctrl = draw(control, torch.zeros(neurons))
    ctrl[:, ::64] = 0.0
    return ctrl, draw(concept, shift * scale)


def _best_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def _reference_auc(control: np.ndarray, concept: np.ndarray) -> np.ndarray:
    """Per-neuron ``roc_auc_score`` on ``control [N, K]`` and ``concept [M, K]``."""
    from sklearn.metrics import roc_auc_score

    n, m = control.shape[0], concept.shape[0]
    labels = np.r_[np.zeros(n), np.ones(m)]
    return np.array(
        [
            roc_auc_score(labels, np.concatenate([control[:, k], concept[:, k]]))
            for k in range(control.shape[1])
        ]
    )


def _reference_mad(control: np.ndarray, concept: np.ndarray) -> np.ndarray:
    """Per-neuron numpy MAD (float64, ``ddof=1``, 0 for a constant control column)."""
    out = np.empty(control.shape[1])
    for k in range(control.shape[1]):
        a0, a1 = control[:, k].astype(np.float64), concept[:, k].astype(np.float64)
        std = a0.std(ddof=1)
        out[k] = 0.0 if std == 0 else (a1.mean() - a0.mean()) / std
    return out


def _reference_utest(control: np.ndarray, concept: np.ndarray) -> tuple[np.ndarray, ...]:
    """scipy's own vectorised U test (``axis=0``), in float64."""
    from scipy.stats import mannwhitneyu

    res = mannwhitneyu(
        concept.astype(np.float64), control.astype(np.float64), axis=0, method="asymptotic"
    )
    return res.statistic, res.pvalue


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cosy_bench.bench scorers", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--neurons", type=int, default=512, help="K (default 512)")
    parser.add_argument("--control", type=int, default=50_000, help="N (default 50000)")
    parser.add_argument("--concept", type=int, default=50, help="M (default 50)")
    parser.add_argument("--repeats", type=int, default=3, help="best of R runs (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--utest", action="store_true", help="also time utest vs scipy")
    parser.add_argument("--tol", type=float, default=1e-9, help="max allowed |difference|")
    parser.add_argument("--fast-tol", type=float, default=1e-12,
                        help="max |sorted path - score_all| (default 1e-12)")
    args = parser.parse_args(argv)
    if min(args.neurons, args.control, args.concept, args.repeats) < 1 or args.control < 2:
        parser.error("--neurons, --concept and --repeats must be >= 1, --control >= 2")

    ctrl, conc = make_activations(args.neurons, args.control, args.concept, args.seed)
    # Both sides get the same [N, K] / [M, K] arrays (numpy views of the same memory).
    ctrl_np, conc_np = ctrl.numpy(), conc.numpy()
    distinct = [len(np.unique(ctrl_np[:, k])) for k in range(min(32, args.neurons))]
    ties = 1 - np.mean(distinct) / args.control
    print(
        f"K={args.neurons} neurons, N={args.control} control, M={args.concept} concept "
        f"activations (float32, {ties:.1%} of control values repeat), best of {args.repeats}, "
        f"torch threads={torch.get_num_threads()}"
    )

    rows = []
    t_ref, ref = _best_time(lambda: _reference_auc(ctrl_np, conc_np), args.repeats)
    t_ours, ours = _best_time(lambda: auc(ctrl, conc), args.repeats)
    rows.append(("auc", "sklearn roc_auc_score loop", t_ref, t_ours, ours.numpy() - ref))
    t_ref, ref = _best_time(lambda: _reference_mad(ctrl_np, conc_np), args.repeats)
    t_ours, ours = _best_time(lambda: mad(ctrl, conc), args.repeats)
    rows.append(("mad", "numpy loop", t_ref, t_ours, ours.numpy() - ref))
    if args.utest:
        t_ref, ref = _best_time(lambda: _reference_utest(ctrl_np, conc_np), args.repeats)
        t_ours, ours = _best_time(lambda: utest(ctrl, conc), args.repeats)
        rows.append(
            ("utest_u", "scipy mannwhitneyu(axis=0)", t_ref, t_ours, ours.u.numpy() - ref[0])
        )
        rows.append(("utest_p", "(same call)", float("nan"), float("nan"), ours.p.numpy() - ref[1]))

    print(
        f"{'score':<8} {'reference':<28} {'ref s':>9} {'ours s':>9} {'speed-up':>9} "
        f"{'max|diff|':>10}"
    )
    worst = 0.0
    for name, reference, t_ref, t_ours, diff in rows:
        err = float(np.abs(diff).max())
        worst = max(worst, err)
        speed = f"{t_ref / t_ours:8.1f}x" if np.isfinite(t_ref) else f"{'':>9}"
        times = f"{t_ref:9.3f} {t_ours:9.3f}" if np.isfinite(t_ref) else f"{'':>9} {'':>9}"
        print(f"{name:<8} {reference:<28} {times} {speed} {err:10.2e}")
    fast_ok = _bench_sorted(ctrl, conc, rows[0][2] + rows[1][2], args)
    if worst > args.tol:
        print(f"MISMATCH: max |difference| {worst:.3e} > tol {args.tol:.1e}")
        return 1
    return 0 if fast_ok else 1


def _bench_sorted(ctrl: torch.Tensor, conc: torch.Tensor, t_loop: float,
                  args: argparse.Namespace) -> bool:
    """Time the sorted-control path (cold and warm) against the loops' total ``t_loop``."""
    names = ["auc", "mad"]  # what the reference loops compute
    t_today, today = _best_time(lambda: score_all(names, ctrl, conc), args.repeats)
    t_cold, cold = _best_time(lambda: score_sorted(names, sort_control(ctrl), conc),
                              args.repeats)
    sorted_ctrl = sort_control(ctrl)
    t_warm, warm = _best_time(lambda: score_sorted(names, sorted_ctrl, conc),
                              max(args.repeats, 5))
    print(f"\nsorted control (scores {'+'.join(names)}; loop = the reference loops above, "
          f"{t_loop:.3f} s)")
    print(f"{'path':<38} {'s':>9} {'vs loop':>9} {'max|diff| vs score_all':>23}")
    worst = 0.0
    for label, t, out in (("score_all (cold: sorts, then searches)", t_today, today),
                          ("cold: sort_control + score_sorted", t_cold, cold),
                          ("warm: score_sorted (sort cached)", t_warm, warm)):
        err = max(float((out[c] - today[c]).abs().max()) for c in today)
        worst = max(worst, err)
        print(f"{label:<38} {t:9.4f} {t_loop / t:8.1f}x {err:23.2e}")
    if worst > args.fast_tol:
        print(f"MISMATCH: sorted path differs by {worst:.3e} > --fast-tol {args.fast_tol:.1e}")
        return False
    return True


if __name__ == "__main__":
    raise SystemExit(main())
