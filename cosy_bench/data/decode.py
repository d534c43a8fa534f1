"""Reduced-size JPEG decoding: decode only as many pixels as the model's transform keeps.

A transform that resizes the short side to ``s`` (ImageNet: 256, then a 224 crop) throws
away most pixels of a 1024 x 768 photo. libjpeg can decode at 1/2, 1/4 or 1/8 scale directly
from the DCT coefficients (PIL's ``Image.draft``), several times faster; :func:`load_reduced`
asks for the smallest such scale whose short side is still at least ``oversample * s``, so
the transform still downsizes (with its own antialiasing) from a larger image. How far the
model input moves from full decoding is measured by ``python -m cosy_bench.bench
activations`` (README, "Performance"). Images that are not JPEG, or that are not RGB or
grey, are left to :func:`cosy_bench.data.datasets.load_image`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from PIL import Image

log = logging.getLogger(__name__)

#: returned by :func:`load_reduced` for a file it leaves to the full decoder
NOT_HANDLED = object()


def resize_short_side(transform) -> int | None:
    """The short side a model's transform resizes images to, or None where unknown.

    Understands torchvision's weights transforms (``ImageClassification.resize_size``) and a
    ``Compose`` whose first resizing step is ``Resize(int)`` or ``Resize([int])``.
    """
    size = getattr(transform, "resize_size", None)
    if size is None:
        for step in getattr(transform, "transforms", ()):
            if type(step).__name__ == "Resize":
                size = step.size
                break
            if type(step).__name__ not in ("ToTensor", "PILToTensor", "ConvertImageDtype"):
                return None  # a step before the resize that may need every pixel
    if isinstance(size, (list, tuple)):
        size = size[0] if len(size) == 1 else None
    return int(size) if isinstance(size, int) and size > 0 else None


def load_reduced(path: str | Path, min_side: int, oversample: float = 1.0):
    """A JPEG decoded at the smallest 1/2, 1/4, 1/8 scale with a short side of at least
    ``oversample * min_side`` pixels, as an RGB PIL image.

    Returns :data:`NOT_HANDLED` for a file that is not a baseline RGB/grey JPEG (decode it in
    full), ``None`` (with a warning) for a JPEG that cannot be decoded.
    """
    try:
        with Image.open(path) as im:
            if im.format != "JPEG" or im.mode not in ("RGB", "L"):
                return NOT_HANDLED
            w, h = im.size
            need = oversample * min_side / min(w, h)  # fraction of the size to keep
            if need < 0.5:  # at least a 1/2-scale decode fits
                im.draft("RGB", (math.ceil(w * need), math.ceil(h * need)))
            return im.convert("RGB")
    except Exception as err:
        log.warning("skipping unreadable image %s (%s)", path, err)
        return None
