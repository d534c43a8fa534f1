"""Every image mode to 8-bit RGB, each against an 8-bit reference (data/modes.py through
load_image of data/datasets.py)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cosy_bench.data.datasets import load_image
from cosy_bench.data.modes import BACKGROUND, to_rgb


def _reference() -> np.ndarray:
    """An 8-bit RGB reference: gradients and a few flat patches, 32x48."""
    y, x = np.mgrid[:32, :48]
    img = np.stack([x * 5, y * 7, (x + y) * 3], axis=-1) % 256
    img[4:10, 4:10] = (255, 255, 255)
    img[12:16, 20:30] = (0, 0, 0)
    return img.astype(np.uint8)


def _grey_reference() -> np.ndarray:
    return np.asarray(Image.fromarray(_reference(), "RGB").convert("L"))


def _as_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=-1)


def _load(tmp_path, im: Image.Image, fmt: str) -> np.ndarray:
    path = tmp_path / f"img.{fmt.lower()}"
    im.save(path, format=fmt)
    out = load_image(path)
    assert out is not None and out.mode == "RGB"
    return np.asarray(out).astype(int)


def test_sixteen_bit_png_is_scaled_not_clipped_to_white(tmp_path):
    grey = _grey_reference()
    g16 = (grey.astype(np.uint16) * 257).astype("<u2")  # 16-bit: 255 -> 65535
    im = Image.frombytes("I;16", (grey.shape[1], grey.shape[0]), g16.tobytes())
    path = tmp_path / "g16.png"
    im.save(path)
    with Image.open(path) as opened:
        assert opened.mode.startswith("I")  # Pillow reads it as I;16 (or I)
    out = np.asarray(load_image(path)).astype(int)
    assert np.abs(out - _as_rgb(grey)).max() == 0
    assert np.asarray(Image.open(path).convert("RGB")).mean() > 240 > grey.mean() + 50  # Pillow alone: white


@pytest.mark.parametrize("scale,fmt", [(1, "TIFF"), (257, "TIFF")])
def test_thirty_two_bit_integer_grey(tmp_path, scale, fmt):
    grey = _grey_reference()
    im = Image.fromarray(grey.astype(np.int32) * scale, "I")
    assert np.abs(_load(tmp_path, im, fmt) - _as_rgb(grey)).max() <= 1


@pytest.mark.parametrize("scale", [1 / 255, 1.0])
def test_float_grey_in_unit_or_byte_range(tmp_path, scale):
    grey = _grey_reference()
    im = Image.fromarray(grey.astype(np.float32) * scale, "F")
    assert np.abs(_load(tmp_path, im, "TIFF") - _as_rgb(grey)).max() <= 1


def test_cmyk(tmp_path):
    ref = _reference()
    cmyk = Image.fromarray(ref, "RGB").convert("CMYK")
    assert np.abs(_load(tmp_path, cmyk, "TIFF") - ref).max() <= 1
    c = np.zeros((4, 4, 4), np.uint8)
    c[..., 3] = 128  # half black ink only: grey, not white as Pillow's subtractive formula
    assert np.abs(np.asarray(to_rgb(Image.fromarray(c, "CMYK"))).astype(int) - 127).max() <= 1


def _alpha_mask() -> np.ndarray:
    mask = np.full(_reference().shape[:2], 255, np.uint8)
    mask[:, :16] = 0  # transparent left third
    mask[:, 16:24] = 128
    return mask


def _composited(ref: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None].astype(float) / 255
    return np.rint(ref * a + np.array(BACKGROUND) * (1 - a))


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparency_is_composited_over_white(tmp_path, mode):
    ref = _reference() if mode == "RGBA" else _as_rgb(_grey_reference())
    alpha = _alpha_mask()
    base = Image.fromarray(ref, "RGB") if mode == "RGBA" else Image.fromarray(ref[..., 0], "L")
    im = base.convert(mode)
    im.putalpha(Image.fromarray(alpha, "L"))
    assert np.abs(_load(tmp_path, im, "PNG") - _composited(ref, alpha)).max() <= 1


def test_palette_with_a_transparent_index(tmp_path):
    ref = np.zeros((8, 8, 3), np.uint8)
    ref[:, 4:] = (200, 30, 60)
    p = Image.fromarray(ref, "RGB").quantize(colors=2)
    black = p.getpixel((0, 0))
    p.info["transparency"] = black  # the black half is transparent
    want = ref.copy()
    want[:, :4] = BACKGROUND
    assert np.abs(_load(tmp_path, p, "PNG") - want).max() <= 1
    assert np.asarray(p.convert("RGB"))[0, 0].tolist() == [0, 0, 0]  # what Pillow alone gives


@pytest.mark.parametrize("mode", ["L", "1", "P", "RGB"])
def test_plain_modes_are_unchanged(tmp_path, mode):
    im = Image.fromarray(_reference(), "RGB").convert(mode)
    assert np.array_equal(_load(tmp_path, im, "PNG"), np.asarray(im.convert("RGB")).astype(int))
