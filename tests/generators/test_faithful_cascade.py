"""The shape-faithful Stable Cascade: the published shapes, FLOPs on meta tensors, a working
pipeline at reduced width, and ``generator=stable_cascade_random`` through a whole run."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from cosy_bench.generators.faithful_cascade import (
    CASCADE_DECODER,
    CASCADE_PRIOR,
    FaithfulCascadeGenerator,
    cascade_configs,
    cascade_flops,
    latent_sides,
)

TINY = ["generator.scale=16", "generator.height=128", "generator.width=128",
        "generator.num_inference_steps=1", "generator.extra_kwargs.prior_num_inference_steps=1"]


def test_configs_are_the_published_ones_at_scale_one():
    prior, decoder, vqgan, text = cascade_configs(1)
    assert prior == CASCADE_PRIOR and decoder == CASCADE_DECODER
    assert prior["block_out_channels"] == (2048, 2048)
    assert prior["down_num_layers_per_block"] == (8, 24)
    assert decoder["block_out_channels"] == (320, 640, 1280, 1280)
    assert decoder["effnet_in_channels"] == prior["out_channels"] == 16
    assert text["hidden_size"] == text["projection_dim"] == 1280  # CLIP ViT-bigG/14
    assert text["num_hidden_layers"] == 32
    assert vqgan["embed_dim"] == 384 and vqgan["scale_factor"] == 0.3764
    assert latent_sides(1024) == (24, 256)  # prior 24 x 24, decoder 256 x 256


def test_scale_divides_widths_keeping_heads_whole():
    prior, decoder, vqgan, text = cascade_configs(8)
    assert prior["block_out_channels"] == (256, 256)  # 32 heads of 8
    assert decoder["block_out_channels"] == (40, 80, 160, 160)  # 20 heads of 8 where attention
    assert prior["clip_text_in_channels"] == text["hidden_size"] == 160
    assert decoder["clip_text_pooled_in_channels"] == text["projection_dim"] == 160
    assert vqgan["embed_dim"] == 48
    with pytest.raises(ValueError, match="scale"):
        cascade_configs(0)


def test_parameters_and_flops_of_the_real_shape_without_memory():
    from diffusers import StableCascadeUNet

    prior_cfg, decoder_cfg, _, _ = cascade_configs(1)
    with torch.device("meta"):
        prior = sum(p.numel() for p in StableCascadeUNet(**prior_cfg).parameters())
        decoder = sum(p.numel() for p in StableCascadeUNet(**decoder_cfg).parameters())
    assert 3.5e9 < prior < 3.7e9  # the model card's 3.6 B (stage C)
    assert 1.5e9 < decoder < 1.6e9  # the model card's 1.5 B (stage B)
    prior_f, decoder_f = cascade_flops(1024, 1, scale=1)
    assert 3.5e12 < prior_f < 4.5e12  # per latent and step (multiply-add = 2)
    assert 5.5e12 < decoder_f < 7.0e12
    assert cascade_flops(1024, 2, scale=1)[0] == 2 * prior_f  # linear in the batch


def test_reduced_pipeline_generates_deterministic_images():
    gen = FaithfulCascadeGenerator(scale=16, num_inference_steps=1, height=128, width=128,
                                   extra_kwargs={"prior_num_inference_steps": 1})
    a = gen.generate(["stripes", "a red cat"], [1, 2])
    b = gen.generate(["a red cat"], [2])
    assert [im.size for im in a] == [(128, 128), (128, 128)] and a[0].mode == "RGB"
    diff = np.abs(np.asarray(a[1], dtype=np.float64) - np.asarray(b[0], dtype=np.float64))
    assert float(diff.max()) <= 2  # same seed, another batch: float rounding only
    other = np.asarray(a[0], dtype=np.float64)
    assert float(np.abs(other - np.asarray(a[1], dtype=np.float64)).mean()) > 1  # seeds count
    assert "x16" in gen.cache_key


def test_speed_up_reaches_the_modules_the_stages_run():
    from cosy_bench.generators.diffusers import speed_up
    from cosy_bench.generators.faithful_cascade import build_cascade

    pipe = build_cascade(scale=32)
    speed_up(pipe, channels_last=True, compile=True)  # compiling is lazy: nothing runs here
    prior, decoder = pipe.prior_pipe.prior, pipe.decoder_pipe.decoder
    assert prior._orig_mod is pipe.prior_prior and decoder._orig_mod is pipe.decoder
    weight = next(m.weight for m in pipe.decoder_pipe.vqgan.modules()
                  if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("option", ["stable_cascade", "stable_cascade_random"])
def test_configs_pass_only_what_the_combined_pipeline_takes(compose, option):
    from diffusers import StableCascadeCombinedPipeline

    gen = instantiate(compose([f"generator={option}"]).generator)
    takes = set(inspect.signature(StableCascadeCombinedPipeline.__call__).parameters)
    passed = set(gen.extra_kwargs) | {"num_inference_steps", "height", "width"}
    if gen.guidance_scale is not None:
        passed.add("guidance_scale")
    assert passed <= takes, passed - takes
    assert gen.extra_kwargs["prior_num_inference_steps"] == 20
    assert gen.num_inference_steps == 10


def test_stable_cascade_random_in_a_whole_run(compose, smoke, tmp_path):
    import json

    from PIL import Image

    from cosy_bench.pipeline import run

    cache = tmp_path / "cache"
    # debug=smoke (resnet18 with random weights, the synthetic control set) with this generator
    cfg = compose(smoke(cache, "generator=stable_cascade_random", *TINY, "neurons.sample=2",
                        "layer=output", "explainer=ground_truth"))
    assert cfg.generator_name == "stable_cascade_random"
    run(cfg, tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    meta = summary["run"]
    assert meta["generator"] == "stable_cascade_random"
    assert meta["images_generated"] == 2 * 2  # 2 distinct explanations, 2 images each
    assert summary["auc"]["n"] == 2 and 0.0 <= summary["auc"]["mean"] <= 1.0
    images = sorted((cache / "images").rglob("*.png"))
    assert len(images) == 4
    assert {Image.open(p).size for p in images} == {(128, 128)}
