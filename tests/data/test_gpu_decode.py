"""``dataset.decode=gpu``: the tensor path on the CPU device equals the PIL path to one
0-255 level, non-JPEGs fall back to the CPU path, and the mode keys the cached activations."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision import transforms as T

from cosy_bench.data import ImageFolder
from cosy_bench.data.gpu_decode import (
    DevicePreprocess,
    EncodedJpeg,
    collate_encoded,
    read_jpeg,
    tensor_recipe,
)
from cosy_bench.models.preprocess import standard

WEIGHTS_TRANSFORM = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms()
CPU = torch.device("cpu")


def _photo(path, w, h, fmt="JPEG", mode="RGB", seed=0):
    rng = np.random.default_rng([w, h, seed])
    low = rng.uniform(0, 255, size=(7, 7, 3)).astype(np.uint8)
    img = np.asarray(Image.fromarray(low).resize((w, h), Image.BICUBIC), dtype=np.float32)
    img = img + rng.normal(0, 8, size=img.shape)  # sensor noise: high frequencies to resample
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).convert(mode).save(
        path, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return path


def _convert_to_rgb(image):  # open_clip's preprocess has this step
    return image.convert("RGB")


def test_tensor_recipe_of_known_transforms():
    r = tensor_recipe(WEIGHTS_TRANSFORM)
    assert (r.resize, r.crop, r.mean) == ((256,), (224,), (0.485, 0.456, 0.406))
    r = tensor_recipe(standard(72, 64, [0.5] * 3, [0.25] * 3, interpolation="bicubic"))
    assert (r.resize, r.crop, r.std, r.interpolation) == (
        (72,), (64, 64), (0.25,) * 3, T.InterpolationMode.BICUBIC)
    clip_like = T.Compose([T.Resize(64, interpolation=T.InterpolationMode.BICUBIC),
                           T.CenterCrop(64), _convert_to_rgb, T.ToTensor(),
                           T.Normalize([0.5] * 3, [0.5] * 3)])
    assert tensor_recipe(clip_like).crop == (64, 64)
    grey = T.Compose([T.Grayscale(3), T.Resize(64), T.CenterCrop(64), T.ToTensor(),
                      T.Normalize([0.5] * 3, [0.5] * 3)])
    no_crop = T.Compose([T.Resize(64), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])
    for other in (grey, no_crop, T.ToTensor()):  # a step it does not do; sizes that differ
        assert tensor_recipe(other) is None
        with pytest.raises(ValueError, match="dataset.decode=full"):
            DevicePreprocess(other)


@pytest.mark.parametrize("transform", [
    WEIGHTS_TRANSFORM, standard(232, 224, [0.5] * 3, [0.25] * 3, interpolation="bicubic")],
    ids=["resnet18-bilinear", "bicubic"])
def test_model_input_equals_the_pil_path(tmp_path, transform, caplog):
    files = [_photo(tmp_path / f"{i}.jpg", w, h, seed=i) for i, (w, h) in enumerate(
        [(500, 375), (1024, 768), (375, 500), (768, 1024)])]
    files.append(_photo(tmp_path / "grey.jpg", 500, 375, mode="L"))
    items = [(read_jpeg(f), i) for i, f in enumerate(files)]
    assert all(isinstance(x, EncodedJpeg) for x, _ in items)
    with caplog.at_level(logging.WARNING):
        x, index = DevicePreprocess(transform)(collate_encoded(items), CPU)
    assert "on the CPU" in caplog.text  # said where it runs
    ref = torch.stack([transform(Image.open(f).convert("RGB")) for f in files])
    assert index.tolist() == list(range(len(files))) and x.shape == ref.shape
    assert x.dtype == torch.float32 and x.device == CPU
    diff = (x - ref).abs() * torch.tensor(tensor_recipe(transform).std)[:, None, None] * 255
    # measured: max 1.00 (one level of a uint8 resize's rounding), mean 0.0016 (bilinear)
    # and 0.0042 (bicubic)
    assert float(diff.max()) <= 1.01 and float(diff.mean()) < 0.01


def test_non_jpegs_take_the_cpu_path(tmp_path):
    png = _photo(tmp_path / "a.png", 300, 200, fmt="PNG")
    cmyk = _photo(tmp_path / "b.jpg", 300, 200, mode="CMYK")
    wide = tmp_path / "c.png"  # a 16-bit grey PNG
    Image.fromarray((np.arange(200 * 300).reshape(200, 300) * 7 % 65536).astype(np.uint16)
                    ).save(wide)
    jpeg = _photo(tmp_path / "d.jpg", 300, 200)
    bad = tmp_path / "e.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    assert [read_jpeg(p) for p in (png, cmyk, wide, bad)] == [None] * 4
    folder = ImageFolder(str(tmp_path), decode="gpu")
    assert all(isinstance(folder[i], Image.Image) for i in range(4))  # PIL unless asked
    encoded = folder.with_encoded_jpegs()
    got = [encoded[i] for i in range(5)]
    assert [type(g).__name__ for g in got] == ["Image", "Image", "Image", "EncodedJpeg", "NoneType"]
    assert got[2].mode == "RGB" and got[1].mode == "RGB"  # load_image converted them

    # a batch mixing device JPEGs and CPU-transformed images keeps each image's index
    transform = standard(72, 64, [0.5] * 3, [0.25] * 3)
    items = [(transform(got[0]), 0), (got[3], 3), None, (transform(got[2]), 2)]
    x, index = DevicePreprocess(transform)(collate_encoded(items), CPU)
    assert sorted(index.tolist()) == [0, 2, 3]
    ref = {0: transform(got[0]), 2: transform(got[2]),
           3: transform(Image.open(jpeg).convert("RGB"))}
    for row, i in zip(x, index.tolist(), strict=True):
        assert (row - ref[i]).abs().max() <= 1.01 / 255 / 0.25


def test_a_jpeg_the_decoder_rejects_is_skipped_and_the_batch_goes_on(tmp_path, caplog):
    good = read_jpeg(_photo(tmp_path / "a.jpg", 300, 200))
    bad = EncodedJpeg(torch.frombuffer(bytearray(b"\xff\xd8\xff\xe0 broken"), dtype=torch.uint8))
    transform = standard(72, 64, [0.5] * 3, [0.25] * 3)
    pre = DevicePreprocess(transform)
    decoded = pre.decode([good.data, bad.data], CPU)  # the batch fails: each one alone
    assert decoded[0].shape == (3, 200, 300) and decoded[1] is None
    x, index = pre(collate_encoded([(bad, 0), (good, 1)]), CPU)
    assert index.tolist() == [1] and x.shape == (1, 3, 64, 64)
    assert "skipping unreadable JPEG" in caplog.text


def test_decode_mode_keys_the_cached_activations(compose, smoke, tmp_path):
    from hydra.utils import instantiate

    from cosy_bench.cache.store import Cache
    from cosy_bench.context import RunContext
    from cosy_bench.models import create_model
    from cosy_bench.schema import ConfigError, validate

    (tmp_path / "img").mkdir()
    _photo(tmp_path / "img" / "a.jpg", 120, 90)
    paths = {}
    for mode in ("full", "reduced", "gpu"):
        cfg = validate(compose(smoke(tmp_path / "cache", "dataset=image_folder",
                                     f"dataset.root={tmp_path / 'img'}", f"dataset.decode={mode}")))
        model = create_model(cfg.model, seed=0)
        ctx = RunContext(cfg, Cache(cfg.paths.cache_dir), model, model.layer(cfg.layer.name),
                         None, 0)
        dataset = instantiate(cfg.dataset)
        assert dataset.decode == mode
        paths[mode] = ctx.activations_path(dataset)
    assert len(set(paths.values())) == 3
    for precision in ("float32", "bfloat16"):  # autocast moves activations: a key of its own
        cfg = validate(compose(smoke(tmp_path / "cache", "dataset=image_folder",
                                     f"dataset.root={tmp_path / 'img'}",
                                     f"precision={precision}")))
        model = create_model(cfg.model, seed=0)
        ctx = RunContext(cfg, Cache(cfg.paths.cache_dir), model, model.layer(cfg.layer.name),
                         None, 0)
        paths[precision] = ctx.activations_path(instantiate(cfg.dataset))
    assert paths["float32"] == paths["full"]  # float32 = no autocast: the old keys hold
    assert paths["bfloat16"] not in {v for k, v in paths.items() if k != "bfloat16"}
    with pytest.raises(ConfigError, match=r"precision='int8': expected a string from"):
        validate(compose(smoke(tmp_path / "cache", "precision=int8")))
    with pytest.raises(ConfigError, match=r"dataset.decode='fast': expected a string from"):
        validate(compose(smoke(tmp_path / "cache", "dataset=image_folder",
                               f"dataset.root={tmp_path / 'img'}", "dataset.decode=fast")))
