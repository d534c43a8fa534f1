"""Reduced-size JPEG decoding: the sizes it picks, what it leaves to the full decoder, and
how little the model input moves."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from cosy_bench.data import ImageFolder
from cosy_bench.data.decode import NOT_HANDLED, load_reduced, resize_short_side
from cosy_bench.models.preprocess import standard

WEIGHTS_TRANSFORM = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms()


def _photo(path, w, h, fmt="JPEG", mode="RGB"):
    rng = np.random.default_rng(w * h)
    low = rng.uniform(0, 255, size=(6, 6, 3)).astype(np.uint8)
    img = Image.fromarray(low).resize((w, h), Image.BICUBIC).convert(mode)
    img.save(path, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return path


def test_resize_short_side_of_known_transforms():
    assert resize_short_side(WEIGHTS_TRANSFORM) == 256
    assert resize_short_side(standard(232, 224, [0.5] * 3, [0.5] * 3)) == 232
    assert resize_short_side(torchvision.transforms.ToTensor()) is None
    odd = torchvision.transforms.Compose([torchvision.transforms.Grayscale(3),
                                          torchvision.transforms.Resize(256)])
    assert resize_short_side(odd) is None  # a step before the resize: decode in full


def test_large_jpeg_is_decoded_smaller_and_the_input_barely_moves(tmp_path):
    path = _photo(tmp_path / "a.jpg", 1024, 768)
    reduced = load_reduced(path, 256)
    assert reduced.size == (512, 384) and reduced.mode == "RGB"  # 1/2 scale keeps >= 256
    full = Image.open(path).convert("RGB")
    diff = (WEIGHTS_TRANSFORM(reduced) - WEIGHTS_TRANSFORM(full)).abs()
    diff = diff * 255 * torch.tensor(WEIGHTS_TRANSFORM.std)[:, None, None]
    assert diff.shape == (3, 224, 224)
    assert float(diff.mean()) < 2.0 and float(diff.max()) < 32  # pixel units (0-255)
    assert load_reduced(path, 256, oversample=2.0).size == (1024, 768)  # no room: full size


def test_small_jpegs_png_and_cmyk_are_left_alone(tmp_path):
    assert load_reduced(_photo(tmp_path / "s.jpg", 500, 375), 256).size == (500, 375)
    assert load_reduced(_photo(tmp_path / "p.png", 1024, 768, fmt="PNG"), 256) is NOT_HANDLED
    cmyk = _photo(tmp_path / "c.jpg", 1024, 768, mode="CMYK")
    assert load_reduced(cmyk, 256) is NOT_HANDLED


def test_unreadable_jpeg_is_none(tmp_path, caplog):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    assert load_reduced(bad, 256) is None
    assert "skipping unreadable image" in caplog.text


def test_image_folder_decodes_reduced_only_when_asked(tmp_path):
    _photo(tmp_path / "a.jpg", 1024, 768)
    _photo(tmp_path / "b.png", 1024, 768, fmt="PNG")
    assert ImageFolder(str(tmp_path)).decode == "full"  # faithful by default
    folder = ImageFolder(str(tmp_path), decode="reduced")
    assert folder.name.endswith(":reduced") and folder[0].size == (1024, 768)
    sized = folder.with_decode_size(256)
    assert sized[0].size == (512, 384) and sized[1].size == (1024, 768)  # PNG: full
    full = ImageFolder(str(tmp_path), decode="full")
    assert full.with_decode_size(256)[0].size == (1024, 768)
    assert full.name != folder.name  # cached activations are keyed by the decoding
    with pytest.raises(ValueError, match="dataset.decode"):
        ImageFolder(str(tmp_path), decode="fast")
