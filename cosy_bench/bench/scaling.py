"""How cost grows with the probe/control size N and the neurons K: time and peak memory.

``python -m cosy_bench.bench scaling [--sizes 10000,50000,200000 --neurons 512,2048
--methods scoring,invert,clip_dissect --max-memory-gb 4]``

Each (method, N, K) runs in a child process (spawned: a fresh interpreter) on synthetic data of
:mod:`cosy_bench.bench.scorers` / :mod:`cosy_bench.bench.explainers`. The child measures its
resident memory in two parts: ``inputs GB``, what building the inputs left resident (the
activations ``[N, K]``, labels, embeddings: the pipeline holds them anyway), and ``work GB``,
the peak above that while the method runs (the kernel's high-water mark is reset after the
inputs are built, ``/proc/self/clear_refs``; where that is not allowed, the peak since the
child started, so ``work GB`` includes the building). Methods:

* ``scoring``: :func:`~cosy_bench.scorers.sorted.sort_control` and
  :func:`~cosy_bench.scorers.sorted.score_sorted` (AUC + MAD, M = 50), i.e. the cold path;
* ``invert``: :func:`cosy_bench.explainers.invert.invert` (length 1, ``--concepts`` labels),
  within ``--max-memory-gb`` if given;
* ``clip_dissect``: ``soft_wpmi`` over ``--clip-concepts`` concepts. Without
  ``--max-memory-gb``: the similarity matrix P ``[N, M]`` held whole
  (:func:`~cosy_bench.explainers.clip_dissect.products.image_text_similarity`), default
  blocks; with it: P in blocks (:class:`~cosy_bench.explainers.clip_dissect.products.ClipProducts`,
  as the explainer) sized by :func:`~cosy_bench.explainers.clip_dissect.plan.plan_blocks`.

Then, per method and K, the inputs and the work peak extrapolated linearly in N (from the two
largest N measured) to ImageNet-train size (``--target`` = 1,281,167 images), their sum
against ``--budget-gb`` (the machine), and the work peak against ``--max-memory-gb``.
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


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (``VmHWM``) of this process; False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_gb() -> float:
    """``VmHWM`` (peak resident memory since the last reset) in GB, else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return _rss_gb()


def _prepare(method: str, n: int, k: int, args: argparse.Namespace):
    """Build the inputs of ``method``; returns a function that runs it and the GB the inputs
    hold (resident memory after building them less that after the imports)."""
    run, base = _build(method, n, k, args)
    return run, _current_rss_gb() - base


def _build(method: str, n: int, k: int, args: argparse.Namespace):
    budget = args.max_memory_gb
    if method == "scoring":
        from cosy_bench.bench.scorers import make_activations
        from cosy_bench.scorers.sorted import score_sorted, sort_control

        base = _current_rss_gb()
        control, concept = make_activations(k, n, 50, seed=0)
        return lambda: score_sorted(["auc", "mad"], sort_control(control), concept), base
    if method == "invert":
        from cosy_bench.bench.explainers import make_invert_data
        from cosy_bench.explainers.invert import invert

        base = _current_rss_gb()
        acts, labels, _ = make_invert_data(n, args.concepts, k, seed=0)
        names = [f"c{j}" for j in range(args.concepts)]
        return lambda: invert(acts, labels, names, length=1, max_memory_gb=budget), base
    if method == "clip_dissect":
        from cosy_bench.bench.explainers import make_clip_data
        from cosy_bench.explainers.clip_dissect.plan import plan_blocks
        from cosy_bench.explainers.clip_dissect.products import (
            ClipProducts,
            image_text_similarity,
        )
        from cosy_bench.explainers.clip_dissect.similarities import soft_wpmi

        base = _current_rss_gb()
        img, txt, noise, _ = make_clip_data(n, args.clip_concepts, k, args.clip_dim, seed=0)
        target = noise.clamp_min(0)
        del noise
        if budget is None:
            return lambda: soft_wpmi(image_text_similarity(img, txt), target), base
        plan = plan_blocks("soft_wpmi", n, k, args.clip_concepts, args.clip_dim, budget)
        blocks = {key: plan[key] for key in ("chunk_size", "concept_chunk_size")}
        return lambda: soft_wpmi(ClipProducts(img, txt), target, **blocks), base
    raise ValueError(f"unknown method {method!r}: scoring, invert or clip_dissect")


def _child(conn, method: str, n: int, k: int, args: argparse.Namespace) -> None:
    try:
        base = _current_rss_gb()
        run, inputs = _prepare(method, n, k, args)
        start_rss = _current_rss_gb() if _reset_peak() else base
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
        conn.send((seconds, inputs, _peak_gb() - start_rss, None))
    except Exception as err:  # reported in the table
        conn.send((float("nan"), float("nan"), float("nan"), f"{type(err).__name__}: {err}"[:160]))
    finally:
        conn.close()


def measure(method: str, n: int, k: int,
            args: argparse.Namespace) -> tuple[float, float, float, str | None]:
    """(seconds, inputs GB, work peak GB, error or None) of one run in a fresh child."""
    ctx = mp.get_context("spawn")  # a forked child would hang in OpenMP the parent used
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, method, n, k, args))
    proc.start()
    child.close()
    try:
        result = parent.recv()
    except EOFError:
        nan = float("nan")
        result = (nan, nan, nan, f"child died (exit code {proc.exitcode}; out of memory?)")
    proc.join()
    return result


def _extrapolate(points: list[tuple[int, float]], target: int) -> tuple[float, float]:
    """(value at ``target``, slope per sample) through the two largest N."""
    (n0, p0), (n1, p1) = points[-2], points[-1]
    slope = (p1 - p0) / (n1 - n0)
    return p1 + slope * (target - n1), slope


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
    ap.add_argument("--budget-gb", type=float, default=24.0, help="the machine's memory, GB")
    ap.add_argument("--max-memory-gb", type=float, default=None,
                    help="explainer.max_memory_gb for invert and clip_dissect (default: "
                         "INVERT's default budget, CLIP-Dissect's P held whole)")
    args = ap.parse_args(list(argv) if argv is not None else None)

    sizes = [int(s) for s in args.sizes.split(",")]
    neurons = [int(s) for s in args.neurons.split(",")]
    budget = "none" if args.max_memory_gb is None else f"{args.max_memory_gb:g} GiB"
    print(f"torch threads {torch.get_num_threads()}; INVERT C={args.concepts}; CLIP-Dissect "
          f"M={args.clip_concepts}, D={args.clip_dim}; scoring M=50; max_memory_gb {budget}")
    print(f"{'method':<13} {'N':>8} {'K':>5} {'s':>9} {'inputs GB':>10} {'work GB':>8}")
    rows: dict[tuple[str, int], list[tuple[int, float, float]]] = {}
    for method in args.methods.split(","):
        for k in neurons:
            for n in sizes:
                seconds, inputs, work, err = measure(method, n, k, args)
                rows.setdefault((method, k), []).append((n, inputs, work))
                note = f"  ({err})" if err else ""
                print(f"{method:<13} {n:8d} {k:5d} {seconds:9.2f} {inputs:10.2f} {work:8.2f}{note}",
                      flush=True)
    print(f"extrapolated linearly in N to N={args.target:,} (machine {args.budget_gb:g} GB; "
          f"work against max_memory_gb {budget}):")
    for (method, k), points in rows.items():
        points = [p for p in points if p[2] == p[2]]  # measured ones
        if len(points) < 2:
            continue
        inputs, _ = _extrapolate([(n, i) for n, i, _ in points], args.target)
        work, slope = _extrapolate([(n, w) for n, _, w in points], args.target)
        total = inputs + work
        verdict = "fits" if total <= args.budget_gb else "OVER"
        within = ""
        if args.max_memory_gb is not None and method != "scoring":
            peak = max(w for _, _, w in points)
            within = (f"; measured work peak {peak:.2f} "
                      f"{'<=' if peak <= args.max_memory_gb else '>'} {args.max_memory_gb:g}")
        print(f"  {method:<13} K={k:<5} inputs {inputs:6.1f} + work {work:6.1f} = {total:6.1f} GB"
              f" ({slope * 1e6:+.2f} GB work per million images) {verdict}{within}")
    return 0
