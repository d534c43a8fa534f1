"""Benchmark rows of ``python -m cosy_bench.bench explainers`` for NetDissect and CompExp
(Broden-like synthetic probe: ``--dissect-images`` images, ``--dissect-neurons`` units,
``--dissect-concepts`` labels, 7 x 7 unit maps).

NetDissect: the vectorised tally (upsampling, thresholding, sparse mask products) timed on
``--dissect-timed-images`` images and EXTRAPOLATED linearly to the probe size (the tally is a
sum over images); the baseline is NetDissect-Lite's per-image, per-unit loop (PIL resize and
``bincount`` of the labels under the unit's mask), timed on a few units and images,
extrapolated to images x units, and checked against ours on that subset.

CompExp: the shared beam search (length 3, beam 5) at mask size 16 over every probe pixel,
timed on ``--compexp-units`` units of ``--compexp-images`` images and EXTRAPOLATED (linear
in pixels and units) to the probe and all units; the baseline is the
authors' per-candidate evaluation (one mask formula and IoU per candidate, numpy over all
pixels), timed per candidate and extrapolated to ``K * (C + (L - 1) * B * 3C)`` candidates.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image

from cosy_bench.explainers.compexp import compexp
from cosy_bench.explainers.netdissect import Segmentation, Tally, unit_masks


def _segmentations(n: int, c: int, side: int, gen: torch.Generator) -> list[Segmentation]:
    """Per image: an object label on every pixel (4 blocks), a part on a quarter of the
    pixels and a colour on half; the three categories draw from disjoint ranges of the ``c``
    labels (as Broden's categories do), so no pixel holds one label twice."""
    segs, p = [], side * side
    grid = torch.arange(p)
    row, col = grid // side, grid % side
    block = (row >= side // 2).long() * 2 + (col >= side // 2).long()
    for _ in range(n):
        objs = torch.randint(0, c // 2, (4,), generator=gen)
        part = torch.randint(c // 2, 3 * c // 4, (1,), generator=gen)
        colour = torch.randint(3 * c // 4, c, (1,), generator=gen)
        pix = [torch.stack([objs[block], grid]),
               torch.stack([part.expand(p // 4), grid[: p // 4]]),
               torch.stack([colour.expand(p // 2), grid[::2]])]
        segs.append(Segmentation(torch.cat(pix, 1), torch.empty(0, dtype=torch.long)))
    return segs


def _check_labels(c: int, units: int = 0) -> None:
    if c < 4 or units > c:
        raise ValueError(f"--dissect-concepts must be at least 4 (three label categories) and "
                         f"at least --compexp-units; got {c} labels for {units} units")


def bench_netdissect(args: argparse.Namespace) -> bool:
    n, k, c, s = args.dissect_images, args.dissect_neurons, args.dissect_concepts, args.mask_size
    _check_labels(c)
    t = min(args.dissect_timed_images, n)
    gen = torch.Generator().manual_seed(args.seed)
    maps = torch.randn(t, k, 7, 7, generator=gen)
    thr = torch.quantile(maps[: min(t, 64)].transpose(0, 1).reshape(k, -1), 0.995, dim=1)
    segs = _segmentations(t, c, s, gen)
    labelcat = torch.ones(c, 1, dtype=torch.float64)
    print(f"NetDissect: probe {n} images, K={k} units, C={c} labels, masks {s}x{s}")
    tally = Tally.zeros(k, c, 1)
    start = time.perf_counter()
    for b in range(0, t, 16):
        masks = unit_masks(maps[b:b + 16], thr, (s, s))
        tally.add(masks, segs[b:b + 16], labelcat, fully_annotated=True)
    ours = (time.perf_counter() - start) / t * n
    print(f"  vectorised tally: {ours / n * 1e3:.1f} ms/image on {t} images; EXTRAPOLATED to "
          f"{n} images: {ours:,.0f} s")
    units, imgs = min(8, k), min(8, t)
    ref = np.zeros((units, c))
    start = time.perf_counter()
    for i in range(imgs):
        lab = np.zeros((3, s * s), dtype=np.int64)
        pix = segs[i].pixels.numpy()
        for j, layer in enumerate((slice(0, s * s), slice(s * s, s * s + s * s // 4),
                                   slice(s * s + s * s // 4, None))):
            lab[j, pix[1, layer]] = pix[0, layer] + 1
        for u in range(units):
            up = np.asarray(Image.fromarray(maps[i, u].numpy(), mode="F")
                            .resize((s, s), Image.BILINEAR)).reshape(-1)
            hit = np.flatnonzero(up > float(thr[u]))
            counts = np.bincount(lab[:, hit].ravel(), minlength=c + 1)[1:]
            ref[u] += counts
    per = (time.perf_counter() - start) / (units * imgs)
    base = per * n * k
    check = Tally.zeros(k, c, 1)
    for b in range(0, imgs, 16):
        check.add(unit_masks(maps[b:min(b + 16, imgs)], thr, (s, s)), segs[b:min(b + 16, imgs)],
                  labelcat, fully_annotated=True)
    diff = float(np.abs(check.both[:units].numpy() - ref).max())
    print(f"  NetDissect-Lite per-unit loop: {per * 1e3:.2f} ms per image and unit; "
          f"EXTRAPOLATED to {n} x {k}: {base:,.0f} s ({base / ours:,.0f}x); max |count diff| "
          f"on the subset: {diff:g}")
    return diff == 0


def bench_compexp(args: argparse.Namespace) -> bool:
    n_all, k, c = args.dissect_images, args.dissect_neurons, args.dissect_concepts
    n = min(args.compexp_images, n_all)  # the search is linear in the pixels: scaled below
    side, units = 16, min(args.compexp_units, k)
    _check_labels(c, units)
    gen = torch.Generator().manual_seed(args.seed)
    n_pix = n * side * side
    labels = torch.zeros(n_pix, c, dtype=torch.bool)
    segs = _segmentations(n, c, side, gen)
    for i, seg in enumerate(segs):
        labels[i * side * side + seg.pixels[1], seg.pixels[0]] = True
    # units planted on one label each, with noise, at about 0.5% of the pixels
    masks = torch.rand(n_pix, units, generator=gen) < 0.003
    for u in range(units):
        masks[:, u] |= labels[:, u] & (torch.rand(n_pix, generator=gen) < 0.5)
    names = [f"c{j}" for j in range(c)]
    print(f"CompExp: {n} images x {side}x{side} = {n_pix:,} pixels, C={c} labels, length 3, "
          f"beam 5")
    start = time.perf_counter()
    recs = compexp(masks, labels, names, length=3, beam_size=5)
    per_unit = (time.perf_counter() - start) / units * n_all / n
    found = sum(names[u] in (r["label"] or "") for u, r in enumerate(recs))
    print(f"  shared beam search: {per_unit:.2f} s/unit ({units} units on {n} images, scaled "
          f"to {n_all}); EXTRAPOLATED to K={k}: {per_unit * k:,.0f} s (planted label in the "
          f"formula: {found}/{units})")
    a, y = masks[:, 0].numpy(), labels.numpy()
    start = time.perf_counter()
    reps = 20
    for j in range(reps):
        j %= c - 2  # any three labels: the cost does not depend on which
        f = y[:, j] & ~y[:, j + 1] | y[:, j + 2]
        _ = (f & a).sum() / max(1, (f | a).sum())
    per_cand = (time.perf_counter() - start) / reps * n_all / n
    cands = k * (c + 2 * 5 * 3 * c)
    print(f"  per-candidate formula + IoU (numpy): {per_cand * 1e3:.1f} ms; EXTRAPOLATED to "
          f"K*(C + 2*B*3C) = {cands:,} candidates: {per_cand * cands:,.0f} s "
          f"({per_cand * cands / (per_unit * k):,.0f}x)")
    return found == units


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--dissect-images", type=int, default=10_000)
    ap.add_argument("--dissect-neurons", type=int, default=512)
    ap.add_argument("--dissect-concepts", type=int, default=1_198, help="Broden: 1,198")
    ap.add_argument("--dissect-timed-images", type=int, default=64)
    ap.add_argument("--mask-size", type=int, default=112, help="NetDissect masks (Broden)")
    ap.add_argument("--compexp-units", type=int, default=2)
    ap.add_argument("--compexp-images", type=int, default=1_000,
                    help="images of the timed CompExp search (dense pixel labels: "
                         "images x 256 x C bytes)")
    ap.add_argument("--skip-netdissect", action="store_true")
    ap.add_argument("--skip-compexp", action="store_true")
