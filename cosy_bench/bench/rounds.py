"""Measure ``n_images=auto`` against fixed 50 images in the toy world.

``python -m cosy_bench.bench rounds [--layers output,concepts,conv4 --explainers
invert,clip_dissect,ground_truth,random]``

Runs the pipeline twice per (layer, explainer): ``n_images=auto`` first (rounds of 10, at
most 50, 95% DeLong CI narrower than 0.1 or excluding ``--threshold``), then fixed 50 (which
reuses the auto run's images: image i of a prompt is the same file). Prints per run the
images the auto run used and generated against the fixed 50, the Spearman correlation of
the per-neuron AUCs, the difference of the mean AUC, and whether the method ranking per
layer is the same; then the total saving. (ground_truth needs a layer with known concepts:
it is skipped on the others.) Everything runs in ``--cache`` (default: a fresh temp folder).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from cosy_bench.run import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            cfg.explainer_name = cfg.hydra.runtime.choices.explainer
            cfg.generator_name = cfg.hydra.runtime.choices.generator
            del cfg["hydra"]
    return cfg


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cosy_bench.bench rounds",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", default="output,concepts,conv4")
    ap.add_argument("--explainers", default="invert,clip_dissect,ground_truth,random")
    ap.add_argument("--threshold", type=float, default=None, help="decision_threshold")
    ap.add_argument("--ci-width", type=float, default=0.1)
    ap.add_argument("--max", type=int, default=50, help="n_images_max and the fixed size")
    ap.add_argument("--round", type=int, default=10, help="n_images_round")
    ap.add_argument("--cache", default=None)
    ap.add_argument("--extra", nargs="*", default=[], help="more Hydra overrides")
    args = ap.parse_args(list(argv) if argv is not None else None)

    from cosy_bench.pipeline import run

    cache = args.cache or tempfile.mkdtemp(prefix="cosy-rounds-")
    out = Path(tempfile.mkdtemp(prefix="cosy-rounds-runs-"))
    base = [f"paths.cache_dir={cache}", "logger=none", *args.extra]
    auto_opts = ["n_images=auto", f"n_images_max={args.max}", f"n_images_round={args.round}",
                 f"ci_width={args.ci_width}"]
    if args.threshold is not None:
        auto_opts.append(f"decision_threshold={args.threshold}")
    print(f"{'layer':<9} {'explainer':<13} {'neurons':>7} {'auto img':>8} {'fixed img':>9} "
          f"{'saving':>7} {'spearman':>8} {'mean AUC auto':>13} {'fixed':>7} {'diff':>7}")
    used = fixed = generated = 0
    ranks_same, worst_rho, worst_diff = True, 1.0, 0.0
    start = time.perf_counter()
    for layer in args.layers.split(","):
        means = {"auto": {}, "fixed": {}}
        for explainer in args.explainers.split(","):
            common = [*base, f"layer={layer}", f"explainer={explainer}"]
            try:
                a = run(_compose([*common, *auto_opts]), out / f"{layer}-{explainer}-auto")
            except ValueError as err:
                if explainer == "ground_truth":
                    print(f"{layer:<9} {explainer:<13} skipped ({str(err)[:60]})")
                    continue
                raise
            f = run(_compose([*common, f"n_images={args.max}"]), out / f"{layer}-{explainer}")
            auc_a = np.array([r["auc"] for r in a.rows])
            auc_f = np.array([r["auc"] for r in f.rows])
            n_used, n_fixed = a.meta["images_used"], a.meta["images_fixed"]
            used, fixed = used + n_used, fixed + n_fixed
            generated += a.meta["images_generated"]
            rho = _spearman(auc_a, auc_f)
            worst_rho = min(worst_rho, rho) if np.isfinite(rho) else worst_rho
            diff = float(auc_a.mean() - auc_f.mean())
            worst_diff = max(worst_diff, abs(diff))
            means["auto"][explainer], means["fixed"][explainer] = auc_a.mean(), auc_f.mean()
            print(f"{layer:<9} {explainer:<13} {len(auc_a):7d} {n_used:8d} {n_fixed:9d} "
                  f"{n_fixed / n_used:6.2f}x {rho:8.3f} {auc_a.mean():13.4f} "
                  f"{auc_f.mean():7.4f} {diff:+7.4f}")
        order = {k: sorted(v, key=v.get, reverse=True) for k, v in means.items()}
        same = order["auto"] == order["fixed"]
        ranks_same &= same
        print(f"{layer:<9} ranking auto {' > '.join(order['auto'])}; fixed "
              f"{' > '.join(order['fixed'])}: {'same' if same else 'DIFFERENT'}")
    print(f"total: {used} images with auto vs {fixed} fixed ({fixed / max(used, 1):.2f}x fewer; "
          f"{generated} generated by the auto runs); worst Spearman {worst_rho:.3f}; worst "
          f"|mean AUC diff| {worst_diff:.4f}; method rankings "
          f"{'identical' if ranks_same else 'NOT identical'} ({time.perf_counter() - start:.0f} s)")
    return 0
