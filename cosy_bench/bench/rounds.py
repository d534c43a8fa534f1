"""Measure ``n_images=auto`` against fixed 50 images in the toy world.

``python -m cosy_bench.bench rounds [--layers output,concepts,conv4 --explainers
invert,clip_dissect,milan,netdissect,compexp,ground_truth,random]``

Runs the pipeline per (layer, explainer): ``n_images=auto`` first (rounds of 10, at most 50,
95% DeLong CI narrower than 0.1 or excluding ``--threshold``), then fixed 50 (which reuses the
auto run's images: image i of a prompt is the same file), then, as the reference of how far
fixed 50 agrees with itself, fixed 100 (``--no-retest`` skips it). AUC is a mean over the
concept images, so the AUC on images 50-99 alone is ``2 AUC_100 - AUC_50``: the retest
column is the Spearman correlation of fixed 50 on images 0-49 with fixed 50 on images 50-99.

Prints per run the images the auto run used against the fixed 50, the Spearman correlation
of the per-neuron AUCs (auto vs fixed, and the retest), the difference of the mean AUC;
per layer the method ranking and the Spearman over all its (explainer, neuron) scores; then
the total saving and agreement. (ground_truth needs a layer with known concepts: it is
skipped on the others.) Everything runs in ``--cache`` (default: a fresh temp folder).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

EXPLAINERS = "invert,clip_dissect,milan,netdissect,compexp,ground_truth,random"


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

    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def _aucs(record) -> dict[int, float]:
    return {int(r["neuron"]): float(r["auc"]) for r in record.rows}


def _flipped_pairs(auto: dict[str, np.ndarray], fixed: dict[str, np.ndarray]
                   ) -> list[tuple[str, str, float, float, float]]:
    """Pairs of methods whose mean AUCs are ordered differently by ``auto`` and ``fixed``
    (per method, its per-neuron AUCs over the same neurons), each with the fixed-size mean
    paired difference and its 95% t-interval: (a, b, diff, low, high)."""
    from scipy.stats import t

    out = []
    names = list(fixed)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            sa = np.sign(auto[a].mean() - auto[b].mean())
            sf = np.sign(fixed[a].mean() - fixed[b].mean())
            if sa == sf:
                continue
            paired = len(fixed[a]) == len(fixed[b]) > 1  # the same neurons of the layer
            d = fixed[a] - fixed[b] if paired else np.array([fixed[a].mean() - fixed[b].mean()])
            half = t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)) if paired \
                else np.inf
            out.append((a, b, float(d.mean()), float(d.mean() - half), float(d.mean() + half)))
    return out


def _ranking(auto: dict[str, np.ndarray], fixed: dict[str, np.ndarray]) -> tuple[str, bool]:
    """(text, True when no pair is ordered differently unless fixed's difference is within
    its 95% interval of 0)."""
    flips = _flipped_pairs(auto, fixed)
    if not flips:
        return "same", True
    significant = [f for f in flips if f[3] > 0 or f[4] < 0]
    pairs = "; ".join(f"{a} vs {b}: fixed diff {d:+.4f}, 95% CI [{lo:+.4f}, {hi:+.4f}]"
                      for a, b, d, lo, hi in flips)
    verdict = (f"{len(significant)} of them significant" if significant else
               "none significant at the fixed size")
    return f"{len(flips)} pair(s) ordered differently, {verdict} ({pairs})", not significant


def _fmt(x: float) -> str:
    return "     n/a" if not np.isfinite(x) else f"{x:8.3f}"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cosy_bench.bench rounds",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", default="output,concepts,conv4")
    ap.add_argument("--explainers", default=EXPLAINERS)
    ap.add_argument("--threshold", type=float, default=None, help="decision_threshold")
    ap.add_argument("--ci-width", type=float, default=0.1)
    ap.add_argument("--max", type=int, default=50, help="n_images_max and the fixed size")
    ap.add_argument("--round", type=int, default=10, help="n_images_round")
    ap.add_argument("--no-retest", dest="retest", action="store_false",
                    help="skip the fixed-100 run that gives fixed 50's agreement with itself")
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
          f"{'saving':>7} {'spearman':>8} {'retest':>8} {'mean AUC auto':>13} {'fixed':>7} "
          f"{'diff':>7}")
    used = fixed = generated = 0
    ranks_same, worst_diff = True, 0.0
    pooled: dict[str, list[np.ndarray]] = {"auto": [], "fixed": [], "retest": []}
    start = time.perf_counter()
    for layer in args.layers.split(","):
        means: dict[str, dict[str, float]] = {"auto": {}, "fixed": {}}
        per_method: dict[str, dict[str, np.ndarray]] = {"auto": {}, "fixed": {}, "retest": {}}
        layer_scores: dict[str, list[np.ndarray]] = {"auto": [], "fixed": [], "retest": []}
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
            by_a, by_f = _aucs(a), _aucs(f)
            neurons = sorted(by_f)
            auc_a = np.array([by_a[k] for k in neurons])
            auc_f = np.array([by_f[k] for k in neurons])
            auc_r = np.full_like(auc_f, np.nan)
            if args.retest:
                d = run(_compose([*common, f"n_images={2 * args.max}"]),
                        out / f"{layer}-{explainer}-double")
                by_d = _aucs(d)
                auc_r = np.array([2 * by_d[k] - by_f[k] for k in neurons])  # images max..2max-1
            for name, x in (("auto", auc_a), ("fixed", auc_f), ("retest", auc_r)):
                layer_scores[name].append(x)
                per_method[name][explainer] = x
            n_used, n_fixed = a.meta["images_used"], a.meta["images_fixed"]
            used, fixed = used + n_used, fixed + n_fixed
            generated += a.meta["images_generated"]
            diff = float(auc_a.mean() - auc_f.mean())
            worst_diff = max(worst_diff, abs(diff))
            means["auto"][explainer], means["fixed"][explainer] = auc_a.mean(), auc_f.mean()
            print(f"{layer:<9} {explainer:<13} {len(auc_a):7d} {n_used:8d} {n_fixed:9d} "
                  f"{n_fixed / n_used:6.2f}x {_fmt(_spearman(auc_a, auc_f))} "
                  f"{_fmt(_spearman(auc_f, auc_r))} {auc_a.mean():13.4f} "
                  f"{auc_f.mean():7.4f} {diff:+7.4f}")
        order = {k: sorted(v, key=v.get, reverse=True) for k, v in means.items()}
        text, same = _ranking(per_method["auto"], per_method["fixed"])
        ranks_same &= same
        cat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in layer_scores.items()}
        for k, v in cat.items():
            pooled[k].append(v)
        retest = _ranking(per_method["retest"], per_method["fixed"])[0] if args.retest \
            else "not run"
        print(f"{layer:<9} all {len(cat['auto'])} scores: spearman auto vs fixed "
              f"{_spearman(cat['auto'], cat['fixed']):.3f}, retest "
              f"{_fmt(_spearman(cat['fixed'], cat['retest'])).strip()}")
        print(f"{layer:<9} ranking auto {' > '.join(order['auto'])}; fixed "
              f"{' > '.join(order['fixed'])}: {text}; retest vs fixed: {retest}")
    allv = {k: np.concatenate(v) if v else np.zeros(0) for k, v in pooled.items()}
    print(f"total: {used} images with auto vs {fixed} fixed ({fixed / max(used, 1):.2f}x fewer; "
          f"{generated} generated by the auto runs); spearman of all {len(allv['auto'])} "
          f"per-neuron AUCs auto vs fixed {_spearman(allv['auto'], allv['fixed']):.3f} (retest "
          f"{_fmt(_spearman(allv['fixed'], allv['retest'])).strip()}); worst |mean AUC diff| "
          f"{worst_diff:.4f}; method rankings "
          f"{'identical up to differences not significant at the fixed size' if ranks_same else 'NOT identical'} "
          f"({time.perf_counter() - start:.0f} s)")
    return 0
