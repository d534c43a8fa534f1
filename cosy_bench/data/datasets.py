"""Datasets yield PIL RGB images; every dataset has a ``name`` that keys its cached activations.

Unreadable images are skipped with a warning and counted (``ImageFolder.skipped``), not
fatal: a single corrupt JPEG in 50,000 should not end a paper-scale run.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from cosy_bench.data.decode import NOT_HANDLED, load_reduced
from cosy_bench.data.gpu_decode import EncodedJpeg, read_jpeg
from cosy_bench.data.modes import to_rgb

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
#: ``dataset.decode``: as the model's own preprocessing / at reduced size / on the device
DECODE_MODES = ("full", "reduced", "gpu")



def seeded_subset(n: int, limit: int | None, seed: int) -> list[int]:
    """Sorted indices of a seeded sample of ``limit`` of ``n`` items (all of them when
    ``limit`` is None or not smaller than ``n``)."""
    if limit is None or limit >= n:
        return list(range(n))
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False)).tolist()

class ImageFolder(Dataset):
    """All images under ``root`` (recursively, sorted), optionally a seeded subset of ``limit``."""

    #: short side the model's transform resizes to; set by :meth:`with_decode_size`
    decode_min_side: int | None = None
    #: yield the bytes of JPEGs for the device to decode; set by :meth:`with_encoded_jpegs`
    encoded: bool = False

    def __init__(self, root: str | None, name: str = "image_folder", limit: int | None = None,
                 seed: int = 0, config_key: str = "dataset.root", env: str | None = None,
                 decode: str = "full"):
        if env:
            config_key = f"{config_key} or the environment variable {env}"
        if root in (None, "", "???"):
            raise ValueError(f"no image folder given: set {config_key} to a folder of images "
                             f"(dataset {name!r})")
        self.root = Path(os.path.expanduser(str(root)))
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {str(self.root)!r} does not exist "
                                    f"(set {config_key}, dataset {name!r})")
        files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise ValueError(f"image folder {str(self.root)!r} holds no images "
                             f"({', '.join(IMAGE_EXTENSIONS)}) (set {config_key})")
        files = [files[i] for i in seeded_subset(len(files), limit, seed)]
        self.files = files
        if decode not in DECODE_MODES:
            raise ValueError(f"dataset.decode must be one of {', '.join(DECODE_MODES)}, got "
                             f"{decode!r}")
        # "reduced": JPEGs decoded at the size the transform needs; "gpu": on the model's device
        self.decode = decode
        self.name = (f"{name}:{self.root.resolve()}:n{len(files)}" + (f":s{seed}" if limit else "")
                     + (f":{decode}" if decode != "full" else ""))
        self.skipped: list[str] = []

    def with_decode_size(self, min_side: int | None) -> ImageFolder:
        """This folder, decoding JPEGs at the smallest scale with a short side of at least
        ``min_side`` (:func:`cosy_bench.data.decode.load_reduced`) when ``decode`` is
        ``"reduced"``; the same folder otherwise."""
        if self.decode != "reduced" or not min_side:
            return self
        other = copy.copy(self)
        other.decode_min_side = int(min_side)
        return other

    def with_encoded_jpegs(self) -> ImageFolder:
        """This folder yielding the bytes of its baseline RGB/grey JPEGs
        (:class:`~cosy_bench.data.gpu_decode.EncodedJpeg`, for
        :class:`~cosy_bench.data.gpu_decode.DevicePreprocess`) and PIL images of the other
        files; used by the activation pass when ``decode`` is ``"gpu"``."""
        other = copy.copy(self)
        other.encoded = True
        return other

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Image.Image | EncodedJpeg | None:
        if self.encoded and (jpeg := read_jpeg(self.files[i])) is not None:
            return jpeg
        if self.decode_min_side:
            image = load_reduced(self.files[i], self.decode_min_side)
            if image is not NOT_HANDLED:
                return image
        return load_image(self.files[i])


def load_image(path: str | Path) -> Image.Image | None:
    """An 8-bit RGB image (any mode converted correctly: :func:`~cosy_bench.data.modes.to_rgb`),
    or ``None`` (with a warning) where the file cannot be decoded."""
    try:
        with Image.open(path) as im:
            return to_rgb(im)
    except Exception as err:
        log.warning("skipping unreadable image %s (%s)", path, err)
        return None


class ImageFiles(Dataset):
    """An explicit list of image files (the synthetic images of a run)."""

    def __init__(self, files: list[Path]):
        self.files = list(files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Image.Image | None:
        return load_image(self.files[i])


class SyntheticControlSet(Dataset):
    """A deterministic control set of smooth random colour fields with random blobs.

    For smoke runs only: it lets any model/layer run offline; its scores mean nothing.
    """

    def __init__(self, n: int = 64, size: int = 224, seed: int = 0):
        if n < 2:
            raise ValueError(f"dataset.n must be at least 2, got {n}")
        self.n, self.size, self.seed = n, size, seed
        self.name = f"synthetic:n{n}:size{size}:s{seed}"

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Image.Image:
        rng = np.random.default_rng([self.seed, i])
        low = rng.uniform(0, 255, size=(4, 4, 3)).astype(np.float32)
        img = np.asarray(Image.fromarray(low.astype(np.uint8)).resize(
            (self.size, self.size), Image.BILINEAR), dtype=np.float32)
        yy, xx = np.mgrid[: self.size, : self.size] / self.size
        for _ in range(rng.integers(1, 4)):
            cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.25)
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
            img[inside] = rng.uniform(0, 255, size=3)
        img += rng.normal(0, 8, size=img.shape)
        return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
