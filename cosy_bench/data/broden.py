"""The Broden probe set (Bau et al., CVPR 2017) in its published layout, for NetDissect and
CompExp (``probe=broden``).

``broden1_224/`` (or ``broden1_227/``) holds ``index.csv`` (one row per image: ``image``,
``split``, ``ih``, ``iw``, ``sh``, ``sw`` and one column per category: ``color``, ``object``,
``part``, ``material`` list segmentation PNGs, ``scene`` and ``texture`` list label numbers,
several joined by ``;``), ``label.csv`` (``number``, ``name``, ``category`` such as
``object(2341);part(12)``, ...), ``c_<category>.csv`` files and ``images/`` with the JPEGs
and PNGs. A segmentation PNG encodes the label number of each pixel as ``R + 256 * G``
(0 = unlabelled) at the segmentation resolution ``sh x sw`` (112 for 224-px images).

Download (about 1 GB, for users with a network)::

    python -m cosy_bench.data.broden --root ~/data [--sha256 HEX]

fetches ``broden1_224.zip`` from the authors' server, checks its SHA-256 (the given one, or
the one pinned in :data:`BRODEN_SHA256`; the authors publish none, so the command prints the
digest of what it fetched for you to pin), and unpacks it under ``--root``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import re
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cosy_bench.data.datasets import load_image

__all__ = ["BRODEN_SHA256", "BRODEN_URL", "BrodenProbeSet", "download"]

BRODEN_URL = "http://netdissect.csail.mit.edu/data/broden1_224.zip"
#: SHA-256 of broden1_224.zip, pinned once known (the authors publish none)
BRODEN_SHA256: str | None = None
PIXEL_CATEGORIES = ("color", "object", "part", "material")
IMAGE_CATEGORIES = ("scene", "texture")
_COUNT = re.compile(r"(\w+)\((\d+)\)")


def _split(cell: str) -> list[str]:
    return [v for v in (cell or "").split(";") if v]


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
        self.categories = ["none"] * size
        for r in labels:
            counts = {m.group(1): int(m.group(2)) for m in _COUNT.finditer(r["category"])}
            primary = max(counts, key=counts.get) if counts else r["category"].split("(")[0]
            self.concepts[int(r["number"]) - 1] = r["name"]
            self.categories[int(r["number"]) - 1] = primary
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


def download(root: str | Path, sha256: str | None = None, url: str = BRODEN_URL) -> Path:
    """Fetch, verify and unpack Broden under ``root``; returns the ``broden1_224`` folder."""
    import urllib.request

    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    target = root / Path(url).name
    part = target.with_suffix(".part")
    with urllib.request.urlopen(url) as resp, open(part, "wb") as out:  # noqa: S310
        while chunk := resp.read(1 << 20):
            out.write(chunk)
    digest = hashlib.sha256(part.read_bytes()).hexdigest()
    want = sha256 or BRODEN_SHA256
    if want and digest != want.lower():
        part.unlink()
        raise ValueError(f"{url}: SHA-256 {digest} is not the expected {want}; nothing kept")
    part.rename(target)
    print(f"{target.name}: sha256 {digest}" + ("" if want else " (pin it with --sha256)"))
    with zipfile.ZipFile(target) as z:
        z.extractall(root)
    return root / Path(url).stem


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Download the Broden probe set.")
    parser.add_argument("--root", required=True)
    parser.add_argument("--sha256", default=None)
    args = parser.parse_args(argv)
    print(download(args.root, args.sha256))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
