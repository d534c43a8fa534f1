"""Synthetic PNGs carry their own checksum (cache/images.py)."""

from __future__ import annotations

import io
import logging

import numpy as np
from PIL import Image

from cosy_bench.cache.images import check_png, png_bytes, png_problem, save_png


def _image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), "RGB")


def test_written_image_verifies_and_decodes_to_its_pixels(tmp_path):
    path = tmp_path / "00000.png"
    save_png(_image(0), path, "key-0")
    assert check_png(path, "key-0")
    with Image.open(path) as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(_image(0)))
    assert png_bytes(_image(0), "key-0") == path.read_bytes()  # deterministic bytes


def test_damaged_truncated_replaced_or_swapped_images_do_not_verify(tmp_path, caplog):
    data = png_bytes(_image(0), "key-0")
    damaged = bytearray(data)
    damaged[-20] ^= 0x01
    plain = io.BytesIO()
    _image(0).save(plain, format="PNG")
    assert png_problem(bytes(damaged), "key-0") is not None
    assert png_problem(data[: len(data) // 2], "key-0") is not None
    assert "no checksum" in png_problem(plain.getvalue(), "key-0")  # replaced by a plain PNG
    assert png_problem(png_bytes(_image(1), "key-1"), "key-0") is not None  # another item's
    assert png_problem(b"GIF89a", "key-0") == "not a PNG file"
    path = tmp_path / "00003.png"
    path.write_bytes(bytes(damaged))
    with caplog.at_level(logging.WARNING, logger="cosy_bench"):
        assert not check_png(path, "key-0")
    assert not path.exists() and str(path) in caplog.text
    assert not check_png(tmp_path / "missing.png", "key-0")
