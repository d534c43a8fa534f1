"""The Broden probe set (Bau et al., CVPR 2017) in its published layout, for NetDissect and
CompExp (``probe=broden``).

``broden1_224/`` (or ``broden1_227/``) holds ``index.csv`` (one row per image: ``image``,
``split``, ``ih``, ``iw``, ``sh``, ``sw`` and one column per category: ``color``, ``object``,
``part``, ``material`` list segmentation PNGs, ``scene`` and ``texture`` list label numbers,
several joined by ``;``), ``label.csv`` (``number``, ``name``, ``category`` such as
``object(2341);part(12)``, ...), ``c_<category>.csv`` files (``code``, ``number``, ``name``,
``frequency``, ``coverage``: a label's primary category is the dissected category where its
coverage is largest, as NetDissect-Lite) and ``images/`` with the JPEGs and PNGs. A segmentation PNG encodes the label number of each pixel as ``R + 256 * G``
(0 = unlabelled) at the segmentation resolution ``sh x sw`` (112 for 224-px images).

Download (about 1 GB, for users with a network)::

    python -m cosy_bench.data.broden --root ~/data [--sha256 HEX]

fetches ``broden1_224.zip`` from the authors' server, checks its MD5 against
:data:`BRODEN_MD5` (and its SHA-256 against ``--sha256`` where given) before unpacking, and
unpacks it under ``--root``; a mismatch raises and keeps nothing.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import logging
import re
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cosy_bench.data.datasets import load_image

__all__ = ["BRODEN_MD5", "BRODEN_URL", "BrodenProbeSet", "download", "primary_categories"]

log = logging.getLogger("cosy_bench")

BRODEN_URL = "http://netdissect.csail.mit.edu/data/broden1_224.zip"
#: MD5 of broden1_224.zip. The authors publish no digest; this one is published by a
#: third party (the datasets setup script of the "bisturi" project). We could not download
#: the archive here to confirm it: if a genuine download mismatches, tell us (and pass
#: ``--md5`` with the digest the command prints, after checking the file).
BRODEN_MD5 = "be13c292eaef3300da03f8d0e48eab1c"
PIXEL_CATEGORIES = ("color", "object", "part", "material")
IMAGE_CATEGORIES = ("scene", "texture")
_COUNT = re.compile(r"(\w+)\((\d+)\)")


def _split(cell: str) -> list[str]:
    return [v for v in (cell or "").split(";") if v]


def primary_categories(root: Path, labels: list[dict], cats: list[str], size: int
                       ) -> list[str]:
    """The primary category of every label number ``1..size`` (index ``number - 1``), as
    NetDissect-Lite: among the dissected categories ``cats``, the one where the label's
    ``coverage`` in ``c_<category>.csv`` is largest (a tie goes to the later category; a
    label in none of them gets the last). Without the ``c_*.csv`` files (a hand-made
    folder), by the largest count in ``label.csv``'s ``category`` column, with a warning."""
    missing = [f"c_{c}.csv" for c in cats if not (root / f"c_{c}.csv").is_file()]
    if missing:
        log.warning("Broden folder %s lacks %s: primary categories by the counts in "
                    "label.csv, not by coverage as NetDissect-Lite", root, missing)
        out = ["none"] * size
        for r in labels:
            counts = {m.group(1): int(m.group(2)) for m in _COUNT.finditer(r["category"])}
            out[int(r["number"]) - 1] = (max(counts, key=counts.get) if counts
                                         else r["category"].split("(")[0])
        return out
    coverage = np.zeros((size, len(cats)))
    for j, cat in enumerate(cats):
        with open(root / f"c_{cat}.csv", newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                number = int(r["number"])
                if 1 <= number <= size:
                    coverage[number - 1, j] = float(r["coverage"])
    # max over (coverage, category index): the later category wins a tie, as the authors'
    best = len(cats) - 1 - np.argmax(coverage[:, ::-1], axis=1)
    return [cats[j] for j in best]


class BrodenProbeSet(torch.utils.data.Dataset):
    """Broden images with their segmentations.

    Args:
        root: the ``broden1_224`` folder (``probe.root``).
        categories: the categories to dissect (NetDissect-Lite: object, part, scene,
            texture, color).
        limit, seed: a seeded subset of ``limit`` images (all by default).
    """

    fully_annotated = False

    def __init__(self, root: str | None, categories=("object", "part", "scene", "texture",
                                                     "color"),
                 limit: int | None = None, seed: int = 0):
        if root in (None, "", "???"):
            raise ValueError("no Broden folder given: set probe.root=/path/to/broden1_224 "
                             "(download: python -m cosy_bench.data.broden --root DIR)")
        self.root = Path(str(root)).expanduser()
        for need in ("index.csv", "label.csv"):
            if not (self.root / need).is_file():
                raise FileNotFoundError(f"{self.root / need} is missing: probe.root must be a "
                                        "broden1_224 folder (python -m cosy_bench.data.broden)")
        self.cats = [c for c in categories]
        with open(self.root / "index.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if limit is not None and limit < len(rows):
            keep = np.sort(np.random.default_rng(seed).choice(len(rows), limit, replace=False))
            rows = [rows[i] for i in keep]
        self.rows = rows
        with open(self.root / "label.csv", newline="", encoding="utf-8") as f:
            labels = list(csv.DictReader(f))
        size = max(int(r["number"]) for r in labels)
        self.concepts = [""] * size
        for r in labels:
            self.concepts[int(r["number"]) - 1] = r["name"]
        self.categories = primary_categories(self.root, labels, self.cats, size)
        self.mask_size = (int(rows[0]["sh"]), int(rows[0]["sw"])) if rows else (112, 112)
        self.name = f"broden:{self.root.resolve()}:n{len(rows)}:" + ",".join(self.cats) + (
            f":s{seed}" if limit else "")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        return load_image(self.root / "images" / self.rows[i]["image"])

    def segmentation(self, i: int, size) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pixels long [2, L] of (concept index, flat pixel), image_labels long [J])`` of
        image ``i`` at mask size ``size = (H, W)`` (nearest-neighbour resizing)."""
        row, (h, w) = self.rows[i], (int(size[0]), int(size[1]))
        pairs = []
        for cat in self.cats:
            if cat not in PIXEL_CATEGORIES:
                continue
            for png in _split(row.get(cat, "")):
                rgb = Image.open(self.root / "images" / png).convert("RGB")
                if rgb.size != (w, h):
                    rgb = rgb.resize((w, h), Image.NEAREST)
                arr = np.asarray(rgb).astype(np.int64)
                lab = torch.from_numpy(arr[..., 0] + 256 * arr[..., 1]).flatten()
                flat = (lab > 0).nonzero().flatten()
                pairs.append(torch.stack([lab[flat] - 1, flat]))
        image = [int(v) - 1 for cat in self.cats if cat in IMAGE_CATEGORIES
                 for v in _split(row.get(cat, ""))]
        pixels = torch.cat(pairs, dim=1) if pairs else torch.empty(2, 0, dtype=torch.long)
        return pixels, torch.tensor(image, dtype=torch.long)


def download(root: str | Path, sha256: str | None = None, url: str = BRODEN_URL,
             md5: str | None = BRODEN_MD5) -> Path:
    """Fetch ``url`` into ``root``, verify it and unpack it; returns the unpacked folder
    (``root/broden1_224``: the archive's name without ``.zip``).

    The MD5 (``md5``, default :data:`BRODEN_MD5`) and, where given, the SHA-256 (``sha256``)
    are checked after the download and before unpacking; a mismatch raises ``ValueError``
    naming the file, the expected and the got digest, and keeps nothing (the partial file is
    removed). ``md5=None`` and no ``sha256``: nothing to check, the digests are printed."""
    import urllib.request

    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    target = root / Path(url).name
    part = target.with_name(target.name + ".part")
    hashes = {"md5": hashlib.md5(), "sha256": hashlib.sha256()}  # noqa: S324 (a checksum)
    try:
        with urllib.request.urlopen(url) as resp, open(part, "wb") as out:  # noqa: S310
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                for h in hashes.values():
                    h.update(chunk)
        got = {name: h.hexdigest() for name, h in hashes.items()}
        for name, want in (("md5", md5), ("sha256", sha256)):
            if want and got[name] != want.strip().lower():
                raise ValueError(f"{target.name} (from {url}): {name.upper()} {got[name]} is "
                                 f"not the expected {want}; nothing kept (download again, or "
                                 f"check the file and pass --{name} with its digest)")
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    part.replace(target)
    checked = [n for n, w in (("md5", md5), ("sha256", sha256)) if w]
    print(f"{target.name}: md5 {got['md5']}, sha256 {got['sha256']} ("
          + (f"{' and '.join(checked)} verified)" if checked else "not verified)"))
    with zipfile.ZipFile(target) as z:
        z.extractall(root)
    return root / Path(url).stem


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Download the Broden probe set "
                                                 "(broden1_224, about 1 GB) and verify it.")
    parser.add_argument("--root", required=True, help="folder to unpack broden1_224/ into")
    parser.add_argument("--md5", default=BRODEN_MD5, help="expected MD5 (default: pinned)")
    parser.add_argument("--sha256", default=None, help="expected SHA-256, also checked")
    parser.add_argument("--url", default=BRODEN_URL)
    args = parser.parse_args(argv)
    print(download(args.root, args.sha256, url=args.url, md5=args.md5))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
