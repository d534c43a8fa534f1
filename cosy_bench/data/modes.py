"""Any PIL image to 8-bit RGB, correctly for every mode (``Image.convert("RGB")`` is not:
it clips 16-bit and 32-bit values to 255, so a 16-bit PNG turns white, and drops
transparency, showing whatever colour the transparent pixels happen to hold).

* ``I;16``, ``I;16L``, ``I;16B``, ``I;16N`` (16-bit grey): ``v * 255 / 65535``.
* ``I`` (32-bit integer grey, what Pillow gives for some 16-bit files): values within
  0..255 are kept, within 0..65535 scaled as 16-bit, any other range is scaled from its
  min..max.
* ``F`` (32-bit float grey): values within 0..1 are scaled by 255, within 0..255 kept, any
  other range scaled from its min..max.
* ``CMYK``: through the image's ICC profile when it has one, else
  ``R = (255 - C)(255 - K) / 255`` (likewise G, B).
* with transparency (``RGBA``, ``LA``, ``La``, ``RGBa``, ``PA``, ``P`` or ``L``/``RGB`` with a
  ``transparency`` entry): composited over white (:data:`BACKGROUND`), what a viewer shows.
* every other mode (``1``, ``L``, ``P``, ``RGB``, ``YCbCr``, ``LAB``, ``HSV``): Pillow's
  conversion, which is exact for them.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: what transparent pixels are composited over
BACKGROUND = (255, 255, 255)

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def _grey_to_rgb(values: np.ndarray, top: float) -> Image.Image:
    """Grey ``values`` scaled so that ``top`` maps to 255, as RGB."""
    grey = np.clip(np.rint(values.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, "L").convert("RGB")


def _stretch(values: np.ndarray) -> Image.Image:
    lo, hi = float(values.min()), float(values.max())
    return _grey_to_rgb(values - lo, hi - lo) if hi > lo else _grey_to_rgb(values * 0, 1.0)


def _integer_grey(im: Image.Image) -> Image.Image:
    values = np.asarray(im).astype(np.int64)
    if im.mode in _SIXTEEN_BIT:
        return _grey_to_rgb(values, 65535.0)
    lo, hi = int(values.min()), int(values.max())
    if lo >= 0 and hi <= 255:
        return _grey_to_rgb(values, 255.0)
    if lo >= 0 and hi <= 65535:
        return _grey_to_rgb(values, 65535.0)
    return _stretch(values)


def _float_grey(im: Image.Image) -> Image.Image:
    values = np.nan_to_num(np.asarray(im, dtype=np.float64))
    lo, hi = float(values.min()), float(values.max())
    if lo >= 0 and hi <= 1.0:
        return _grey_to_rgb(values, 1.0)
    if lo >= 0 and hi <= 255.0:
        return _grey_to_rgb(values, 255.0)
    return _stretch(values)


def _cmyk(im: Image.Image) -> Image.Image:
    profile = im.info.get("icc_profile")
    if profile:
        try:
            import io

            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            return ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"),
                                             outputMode="RGB")
        except Exception:  # noqa: BLE001 - a broken profile: the formula below
            pass
    c = np.asarray(im, dtype=np.float64)
    white = 255.0 - c[..., 3:4]
    rgb = (255.0 - c[..., :3]) * white / 255.0
    return Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), "RGB")


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in im.info


def _over_background(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    base = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
    return Image.alpha_composite(base, rgba).convert("RGB")


def to_rgb(im: Image.Image) -> Image.Image:
    """``im`` as an 8-bit RGB image (see the module docstring for each mode)."""
    if im.mode in _SIXTEEN_BIT or im.mode == "I":
        return _integer_grey(im)
    if im.mode == "F":
        return _float_grey(im)
    if im.mode == "CMYK":
        return _cmyk(im)
    if _has_alpha(im):
        return _over_background(im)
    return im.convert("RGB")
