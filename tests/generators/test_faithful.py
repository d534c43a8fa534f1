"""The shape-faithful SDXL: the published shapes, a working pipeline at reduced width, FLOPs."""

from __future__ import annotations

import numpy as np
import pytest

from cosy_bench.generators.faithful import (
    SDXL_UNET,
    FaithfulSDXLGenerator,
    build_sdxl,
    unet_config,
    unet_flops,
)


def test_unet_config_is_sdxl_base_at_scale_one():
    cfg = unet_config(1)
    assert cfg == SDXL_UNET
    assert cfg["block_out_channels"] == (320, 640, 1280)
    assert cfg["transformer_layers_per_block"] == (1, 2, 10)
    assert cfg["cross_attention_dim"] == 2048 == 768 + 1280  # both text encoders
    assert cfg["projection_class_embeddings_input_dim"] == 1280 + 6 * 256


def test_unet_flops_of_the_real_shape_without_memory():
    # SDXL's UNet: about 6.7 TFLOP per latent and step at 1024 px (multiply-add = 2)
    per_latent = unet_flops(1024, 1, scale=1)
    assert 6.0e12 < per_latent < 7.5e12
    assert unet_flops(512, 1, scale=1) < per_latent / 3  # a quarter of the pixels


def test_reduced_pipeline_generates_deterministic_images():
    gen = FaithfulSDXLGenerator(scale=16, num_inference_steps=1, height=64, width=64)
    a = gen.generate(["stripes", "a red cat"], [1, 2])
    b = gen.generate(["a red cat"], [2])
    assert [im.size for im in a] == [(64, 64), (64, 64)] and a[0].mode == "RGB"
    diff = np.asarray(a[1], dtype=np.float64) - np.asarray(b[0], dtype=np.float64)
    assert float(np.abs(diff).max()) <= 2  # same seed, another batch: float rounding only
    assert "x16" in gen.cache_key


def test_bad_scale_is_an_error():
    with pytest.raises(ValueError, match="scale"):
        build_sdxl(scale=0)
