"""Measured effects of the authors' semantics on the toy world (docs/departures.md):
``python -m cosy_bench.bench departures [--layers concepts conv4] [--cache-dir DIR]``.

NetDissect, per layer of the toy CNN: the labels under the authors' union rule
(``union=overlap``, the default) and the suite's former one (``union=annotated``), each with
the exact 0.995 threshold and the authors' 994/999 mid-rank readout: how many labels differ
from the default, how much the label's IoU moves, the ground-truth match where the layer has
planted concepts, and the thresholds' largest relative difference. CompExp: how many formulas change when ``NOT``
counts as one more unit of length, at the authors' default penalty (1.0: none can) and at
0.9. Prints one table; nothing is timed.
"""

from __future__ import annotations

import argparse
import tempfile

import torch


def _context(overrides: list[str]):
    from cosy_bench.bench.rounds import _compose
    from cosy_bench.cache.store import RankAgreedCache
    from cosy_bench.context import RunContext, count_neurons
    from cosy_bench.models import create_model
    from cosy_bench.models.layers import LayerExtractor

    cfg = _compose(overrides)
    model = create_model(cfg.model, seed=cfg.seed)
    layer = model.layer(cfg.layer.name)
    extractor = LayerExtractor(model.module, layer)
    ctx = RunContext(cfg, RankAgreedCache(cfg.paths.cache_dir), model, layer, extractor,
                     count_neurons(extractor, model.transform))
    return cfg, ctx, model.ground_truth(layer)


def netdissect_rows(layer: str, cache_dir: str) -> list[str]:
    """One line per (threshold, union) of ``layer``: labels differing from the default."""
    from hydra.utils import instantiate

    from cosy_bench.explainers.netdissect import dissect, thresholds_of

    cfg, ctx, truths = _context([f"layer={layer}", "explainer=netdissect",
                                 f"paths.cache_dir={cache_dir}", "logger=none"])
    probe = instantiate(cfg.probe)
    size = tuple(torch.as_tensor(probe.masks(0)).shape[-2:])
    thr = {rule: thresholds_of(ctx, probe, 0.005, cfg.explainer.quantile_samples, 0, rule)
           for rule in ("exact", "authors")}
    rel = ((thr["authors"] - thr["exact"]).abs() / thr["exact"].abs().clamp_min(1e-12)).max()
    labels = {}
    for rule in ("exact", "authors"):
        for union in ("overlap", "annotated"):
            tally, labelcat, _ = dissect(ctx.model.spatial_extractor(ctx.layer.name), probe,
                                         ctx.model.transform, ctx.trainer(), thr[rule], size,
                                         batch_size=cfg.batch_size, union=union)
            labels[rule, union] = tally.iou(labelcat).max(dim=1)
    best, base = labels["exact", "overlap"]
    out = [f"netdissect {layer}: {base.numel()} units, thresholds authors vs exact: largest "
           f"relative difference {float(rel):.2e}"]
    for (rule, union), (iou, lab) in labels.items():
        change = ((iou - best).abs() / best.clamp_min(1e-12)).max()
        line = (f"  threshold={rule:7s} union={union:9s} labels differing from the default: "
                f"{int((lab != base).sum())}/{lab.numel()}, label IoU largest relative "
                f"change {float(change):.2e}")
        if truths is not None:
            match = sum(probe.concepts[c] == t for c, t in zip(lab.tolist(), truths,
                                                                strict=True))
            line += f", ground_truth_match {match / len(truths):.4f}"
        out.append(line)
    return out


def milan_rows(layer: str, cache_dir: str) -> list[str]:
    """MILAN's 0.99 levels from the default sample of 16,384 positions per unit against the
    exact ones (every position)."""
    from hydra.utils import instantiate

    cfg, ctx, _ = _context([f"layer={layer}", "explainer=milan", "explainer.checkpoint=random",
                            f"paths.cache_dir={cache_dir}", "logger=none"])
    probe = instantiate(cfg.explainer.probe)
    every = len(probe) * 64 * 64  # at least every position of the toy CNN's unit maps
    levels = {n: ctx.exemplars(probe, k=cfg.explainer.k, quantile=cfg.explainer.quantile,
                               quantile_samples=n, seed=cfg.explainer.seed).levels
              for n in (int(cfg.explainer.quantile_samples), every)}
    sampled, exact = levels[int(cfg.explainer.quantile_samples)], levels[every]
    rel = ((sampled - exact).abs() / exact.abs().clamp_min(1e-12))
    return [f"milan {layer}: 0.99 levels from {cfg.explainer.quantile_samples} sampled "
            f"positions vs every position: relative difference median {float(rel.median()):.2e}"
            f", largest {float(rel.max()):.2e}"]


def compexp_rows(layer: str, cache_dir: str) -> list[str]:
    """Formulas changed by counting NOT in the length, at penalty 1.0 and 0.9."""
    from hydra.utils import instantiate

    from cosy_bench.explainers.compexp import compexp, pixel_samples
    from cosy_bench.explainers.netdissect import dissect, mask_size, thresholds_of

    cfg, ctx, _ = _context([f"layer={layer}", "explainer=compexp",
                            f"paths.cache_dir={cache_dir}", "logger=none"])
    probe = instantiate(cfg.probe)
    size = mask_size(probe, cfg.explainer.mask_size)
    thr = thresholds_of(ctx, probe, 0.005, cfg.explainer.quantile_samples, 0)
    _, _, kept = dissect(ctx.model.spatial_extractor(ctx.layer.name), probe,
                         ctx.model.transform, ctx.trainer(), thr, size, keep=True,
                         batch_size=cfg.batch_size)
    masks, labels = pixel_samples(kept, len(probe.concepts))
    out = []
    for penalty in (1.0, 0.9):
        got = {not_cost: [r["label"] for r in compexp(masks, labels, probe.concepts,
                                                      penalty=penalty, not_length=not_cost)]
               for not_cost in (True, False)}
        changed = sum(a != b for a, b in zip(got[True], got[False], strict=True))
        out.append(f"compexp {layer} penalty={penalty}: formulas changed by counting NOT in "
                   f"the length: {changed}/{len(got[True])}")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", nargs="+", default=["concepts", "conv4"])
    parser.add_argument("--cache-dir", default=None, help="default: a temporary folder")
    parser.add_argument("--skip-compexp", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir or tmp
        for layer in args.layers:
            print("\n".join(netdissect_rows(layer, cache)), flush=True)
        for layer in args.layers:
            print("\n".join(milan_rows(layer, cache)), flush=True)
        if not args.skip_compexp:
            for layer in args.layers:
                print("\n".join(compexp_rows(layer, cache)), flush=True)
    return 0
