"""How cost grows with the probe/control size N and the neurons K: time and peak memory.

``python -m cosy_bench.bench scaling [--sizes 10000,50000,200000 --neurons 512,2048
--methods scoring,invert,clip_dissect]``

Each (method, N, K) runs in a child process (spawned: a fresh interpreter) on synthetic data of
:mod:`cosy_bench.bench.scorers` / :mod:`cosy_bench.bench.explainers` (data building included in
memory, not in time), so its peak resident memory is its own (``ru_maxrss`` of the child, less
what it held when it started). Methods:

* ``scoring``: :func:`~cosy_bench.scorers.sorted.sort_control` and
  :func:`~cosy_bench.scorers.sorted.score_sorted` (AUC + MAD, M = 50), i.e. the cold path;
* ``invert``: :func:`cosy_bench.explainers.invert.invert` (length 1, ``--concepts`` labels);
* ``clip_dissect``: the similarity matrix P ``[N, --clip-concepts]`` and ``soft_wpmi``.

Then, per method and K, the peak memory extrapolated linearly in N (from the two largest N
measured) to ImageNet-train size (``--target`` = 1,281,167 images), against ``--budget-gb``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time
from collections.abc import Sequence

import torch


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _current_rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**30


def _work(method: str, n: int, k: int, args: argparse.Namespace) -> float:
    """Build the data and time ``method``; returns seconds."""
    if method == "scoring":
        from cosy_bench.bench.scorers import make_activations
        from cosy_bench.scorers.sorted import score_sorted, sort_control

        control, concept = make_activations(k, n, 50, seed=0)
        start = time.perf_counter()
        score_sorted(["auc", "mad"], sort_control(control), concept)
        return time.perf_counter() - start
    if method == "invert":
        from cosy_bench.bench.explainers import make_invert_data
        from cosy_bench.explainers.invert import invert

        acts, labels, _ = make_invert_data(n, args.concepts, k, seed=0)
        names = [f"c{j}" for j in range(args.concepts)]
        start = time.perf_counter()
        invert(acts, labels, names, length=1)
        return time.perf_counter() - start
    if method == "clip_dissect":
        from cosy_bench.bench.explainers import make_clip_data
        from cosy_bench.explainers.clip_dissect.similarities import (
            image_text_similarity,
            soft_wpmi,
        )

        img, txt, noise, _ = make_clip_data(n, args.clip_concepts, k, args.clip_dim, seed=0)
        target = noise.clamp_min(0)
        del noise
        start = time.perf_counter()
        soft_wpmi(image_text_similarity(img, txt), target)
        return time.perf_counter() - start
    raise ValueError(f"unknown method {method!r}: scoring, invert or clip_dissect")


def _child(conn, method: str, n: int, k: int, args: argparse.Namespace) -> None:
    try:
        base = _current_rss_gb()
        seconds = _work(method, n, k, args)
        conn.send((seconds, _rss_gb() - base, None))
    except Exception as err:  # reported in the table
        conn.send((float("nan"), _rss_gb(), f"{type(err).__name__}: {err}"[:80]))
    finally:
        conn.close()


def measure(method: str, n: int, k: int, args: argparse.Namespace) -> tuple[float, float, str | None]:
    """(seconds, peak GB above the child's start, error or None) of one run in a fresh child."""
    ctx = mp.get_context("spawn")  # a forked child would hang in OpenMP the parent used
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, method, n, k, args))
    proc.start()
    child.close()
    try:
        result = parent.recv()
    except EOFError:
        result = (float("nan"), float("nan"), f"child died (exit code {proc.exitcode}; out of memory?)")
    proc.join()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cosy_bench.bench scaling",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,50000,200000", help="N, comma-separated")
    ap.add_argument("--neurons", default="512,2048", help="K, comma-separated")
    ap.add_argument("--methods", default="scoring,invert,clip_dissect")
    ap.add_argument("--concepts", type=int, default=1000, help="INVERT's labels C")
    ap.add_argument("--clip-concepts", type=int, default=5000, help="CLIP-Dissect's concepts M")
    ap.add_argument("--clip-dim", type=int, default=512)
    ap.add_argument("--target", type=int, default=1_281_167, help="N to extrapolate to")
    ap.add_argument("--budget-gb", type=float, default=24.0)
    args = ap.parse_args(list(argv) if argv is not None else None)

    sizes = [int(s) for s in args.sizes.split(",")]
    neurons = [int(s) for s in args.neurons.split(",")]
    print(f"torch threads {torch.get_num_threads()}; INVERT C={args.concepts}; CLIP-Dissect "
          f"M={args.clip_concepts}, D={args.clip_dim}; scoring M=50")
    print(f"{'method':<13} {'N':>8} {'K':>5} {'s':>9} {'peak GB':>8}")
    peaks: dict[tuple[str, int], list[tuple[int, float]]] = {}
    for method in args.methods.split(","):
        for k in neurons:
            for n in sizes:
                seconds, peak, err = measure(method, n, k, args)
                peaks.setdefault((method, k), []).append((n, peak))
                note = f"  ({err})" if err else ""
                print(f"{method:<13} {n:8d} {k:5d} {seconds:9.2f} {peak:8.2f}{note}", flush=True)
    print(f"peak memory extrapolated linearly in N to N={args.target:,} "
          f"(budget {args.budget_gb:g} GB):")
    for (method, k), points in peaks.items():
        points = [(n, p) for n, p in points if p == p]  # measured ones
        if len(points) < 2:
            continue
        (n0, p0), (n1, p1) = points[-2], points[-1]
        slope = (p1 - p0) / (n1 - n0)
        at = p1 + slope * (args.target - n1)
        verdict = "fits" if at <= args.budget_gb else "OVER"
        print(f"  {method:<13} K={k:<5} {at:7.1f} GB ({slope * 1e6:.1f} GB per million images)"
              f" {verdict}")
    return 0
