"""Shape-faithful Stable Cascade with random weights, built offline from its configuration.

Stable Cascade (Würstchen v3) makes an image in two denoising stages: the **prior** (stage C,
``stabilityai/stable-cascade-prior``, subfolder ``prior``) denoises a 16 x 24 x 24 image
embedding from the text (classifier-free guidance 4.0), the **decoder** (stage B,
``stabilityai/stable-cascade``, subfolder ``decoder``) denoises 4 x 256 x 256 latents
conditioned on it, and the **VQGAN** (``PaellaVQModel``, subfolder ``vqgan``) decodes them
to 1024 px. Both stages read the CLIP ViT-bigG/14 text tower (``text_encoder``:
``CLIPTextModelWithProjection``).

Where the numbers come from: the prior and decoder keyword arguments are those that diffusers'
``scripts/convert_stable_cascade.py`` passes to ``StableCascadeUNet`` when it writes the
published ``prior/config.json`` and ``decoder/config.json`` (the full, not the lite, stages);
the VQGAN's are ``PaellaVQModel``'s defaults, which are the config of the Würstchen v2 VQGAN
(``warp-ai/wuerstchen``, subfolder ``vqgan``) that the same script reuses as Stable Cascade's;
the text encoder's are those of ``laion/CLIP-ViT-bigG-14-laion2B-39B-b160k`` (the text tower
with its 1280-wide projection; the same tower is SDXL's second text encoder, so the values are
shared with :data:`~cosy_bench.generators.faithful.SDXL_TEXT_2`); the scheduler is
``DDPMWuerstchenScheduler()`` with its defaults, as in that script. The prior's CLIP image
encoder (ViT-L/14, used only for image variations) is left out: text-to-image feeds the prior
zeros in its place, which is what the pipeline does without input images.

The weights are random, so the images are noise. The tokenizer is the byte-level one of the
tiny pipeline. ``scale`` divides every width (block channels, conditioning and text widths,
the VQGAN's channels; the number of attention heads, layers, latent channels and the image
size keep their values) for tests on a CPU; ``scale=1`` is the real shape (prior about 3.6 B,
decoder about 1.6 B parameters).

:func:`build_cascade` gives a ``StableCascadeCombinedPipeline``; :func:`cascade_flops` counts
one prior and one decoder call's FLOPs without allocating them (meta tensors).
"""

from __future__ import annotations

import math

import torch

from cosy_bench.generators.diffusers import DiffusersGenerator, clip_tokenizer
from cosy_bench.generators.faithful import SDXL_TEXT_2, _text_config

_ATTN = ("SDCascadeResBlock", "SDCascadeTimestepBlock", "SDCascadeAttnBlock")
_NO_ATTN = ("SDCascadeResBlock", "SDCascadeTimestepBlock")

#: prior/config.json of stable-cascade-prior (stage C; 3.59 B parameters, the model card's 3.6 B)
CASCADE_PRIOR = dict(
    in_channels=16, out_channels=16, timestep_ratio_embedding_dim=64, patch_size=1,
    conditioning_dim=2048, block_out_channels=(2048, 2048), num_attention_heads=(32, 32),
    down_num_layers_per_block=(8, 24), up_num_layers_per_block=(24, 8),
    down_blocks_repeat_mappers=(1, 1), up_blocks_repeat_mappers=(1, 1),
    block_types_per_layer=(_ATTN, _ATTN), clip_text_in_channels=1280,
    clip_text_pooled_in_channels=1280, clip_image_in_channels=768, clip_seq=4, kernel_size=3,
    dropout=(0.1, 0.1), self_attn=True, timestep_conditioning_type=("sca", "crp"),
    switch_level=(False,),
)
#: decoder/config.json of stable-cascade (stage B; 1.56 B parameters, the model card's 1.5 B)
CASCADE_DECODER = dict(
    in_channels=4, out_channels=4, timestep_ratio_embedding_dim=64, patch_size=2,
    conditioning_dim=1280, block_out_channels=(320, 640, 1280, 1280),
    down_num_layers_per_block=(2, 6, 28, 6), up_num_layers_per_block=(6, 28, 6, 2),
    down_blocks_repeat_mappers=(1, 1, 1, 1), up_blocks_repeat_mappers=(3, 3, 2, 2),
    num_attention_heads=(0, 0, 20, 20), block_types_per_layer=(_NO_ATTN, _NO_ATTN, _ATTN, _ATTN),
    clip_text_pooled_in_channels=1280, clip_seq=4, effnet_in_channels=16,
    pixel_mapper_in_channels=3, kernel_size=3, dropout=(0, 0, 0.1, 0.1), self_attn=True,
    timestep_conditioning_type=("sca",),
)
#: vqgan/config.json (PaellaVQModel: 4x down by pixel-unshuffle and one strided conv)
CASCADE_VQGAN = dict(in_channels=3, out_channels=3, up_down_scale_factor=2, levels=2,
                     bottleneck_blocks=12, embed_dim=384, latent_channels=4,
                     num_vq_embeddings=8192, scale_factor=0.3764)
#: the pipelines' published settings: prior latents are ceil(px / 42.67) wide, decoder
#: latents 10.67 times the prior's (1024 px: 24 -> 256; the VQGAN makes 256 -> 1024)
RESOLUTION_MULTIPLE, LATENT_DIM_SCALE = 42.67, 10.67


def _widths(widths, heads, scale: int) -> tuple[int, ...]:
    """Widths divided by ``scale``, each a multiple of its attention heads (or of 8)."""
    out = []
    for w, h in zip(widths, heads, strict=True):
        step = h if h > 0 else 8
        out.append(max(step, (w // scale) // step * step))
    return tuple(out)


def cascade_configs(scale: int = 1) -> tuple[dict, dict, dict, dict]:
    """(prior, decoder, VQGAN, text encoder) keyword arguments, widths divided by ``scale``."""
    if scale < 1:
        raise ValueError(f"scale must be >= 1 (1 = the real Stable Cascade shape), got {scale}")
    text = _text_config(SDXL_TEXT_2, scale)
    prior, decoder, vqgan = dict(CASCADE_PRIOR), dict(CASCADE_DECODER), dict(CASCADE_VQGAN)
    if scale > 1:
        prior.update(block_out_channels=_widths(prior["block_out_channels"],
                                                prior["num_attention_heads"], scale),
                     conditioning_dim=prior["conditioning_dim"] // scale,
                     clip_image_in_channels=prior["clip_image_in_channels"] // scale)
        decoder.update(block_out_channels=_widths(decoder["block_out_channels"],
                                                  decoder["num_attention_heads"], scale),
                       conditioning_dim=decoder["conditioning_dim"] // scale)
        vqgan["embed_dim"] = max(8, vqgan["embed_dim"] // scale // 2 * 2)
    # the text tower's widths feed both stages (equal to the published 1280 at scale 1)
    prior.update(clip_text_in_channels=text["hidden_size"],
                 clip_text_pooled_in_channels=text["projection_dim"])
    decoder["clip_text_pooled_in_channels"] = text["projection_dim"]
    return prior, decoder, vqgan, text


def latent_sides(size: int) -> tuple[int, int]:
    """Side of the prior's and of the decoder's latents for a ``size``-px image."""
    prior = math.ceil(size / RESOLUTION_MULTIPLE)
    return prior, int(prior * LATENT_DIM_SCALE)


def build_cascade(scale: int = 1, seed: int = 0, dtype: torch.dtype = torch.float32,
                  device: str | torch.device = "cpu"):
    """A ``StableCascadeCombinedPipeline`` of Stable Cascade's shapes (widths / ``scale``) with
    random weights under ``seed``, in ``dtype`` on ``device``; prior and decoder share the text
    encoder, tokenizer and scheduler settings, as in diffusers' conversion script."""
    from diffusers import DDPMWuerstchenScheduler, StableCascadeCombinedPipeline, StableCascadeUNet
    from diffusers.pipelines.stable_cascade.pipeline_stable_cascade import PaellaVQModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    prior_cfg, decoder_cfg, vqgan_cfg, text_cfg = cascade_configs(scale)
    torch.manual_seed(seed)
    with torch.device(device):
        prior = StableCascadeUNet(**prior_cfg)
        decoder = StableCascadeUNet(**decoder_cfg)
        vqgan = PaellaVQModel(**vqgan_cfg)
        text_encoder = CLIPTextModelWithProjection(CLIPTextConfig(**text_cfg))
    for module in (prior, decoder, vqgan, text_encoder):
        module.eval()
        if dtype != torch.float32:
            module.to(dtype=dtype)
    tokenizer = clip_tokenizer(pad_token="!")  # as bigG's tokenizer
    pipe = StableCascadeCombinedPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, decoder=decoder,
        scheduler=DDPMWuerstchenScheduler(), vqgan=vqgan, prior_prior=prior,
        prior_text_encoder=text_encoder, prior_tokenizer=tokenizer,
        prior_scheduler=DDPMWuerstchenScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def cascade_flops(size: int = 1024, batch: int = 1, scale: int = 1) -> tuple[int, int]:
    """FLOPs of one prior call and of one decoder call on ``batch`` latents of a ``size``-px
    image, counted by ``torch.utils.flop_counter`` on meta tensors (nothing is allocated; a
    multiply-add counts 2). Classifier-free guidance doubles the batch of a call: the prior's
    (guidance 4.0) runs on 2 latents per image, the decoder's (guidance 0.0) on 1."""
    from diffusers import StableCascadeUNet
    from torch.utils.flop_counter import FlopCounterMode

    prior_cfg, decoder_cfg, _, text_cfg = cascade_configs(scale)
    p_side, d_side = latent_sides(size)
    pooled_w = text_cfg["projection_dim"]
    flops = []
    with torch.device("meta"), torch.no_grad():
        prior = StableCascadeUNet(**prior_cfg)
        decoder = StableCascadeUNet(**decoder_cfg)
        ratio = torch.empty(batch)
        pooled = torch.empty(batch, 1, pooled_w)
        calls = [
            (prior, dict(sample=torch.empty(batch, 16, p_side, p_side), timestep_ratio=ratio,
                         clip_text_pooled=pooled,
                         clip_text=torch.empty(batch, 77, text_cfg["hidden_size"]),
                         clip_img=torch.empty(batch, 1, prior_cfg["clip_image_in_channels"]))),
            (decoder, dict(sample=torch.empty(batch, 4, d_side, d_side), timestep_ratio=ratio,
                           clip_text_pooled=pooled,
                           effnet=torch.empty(batch, 16, p_side, p_side))),
        ]
        for model, kwargs in calls:
            counter = FlopCounterMode(display=False)
            with counter:
                model(**kwargs, return_dict=False)
            flops.append(int(counter.get_total_flops()))
    return flops[0], flops[1]


class FaithfulCascadeGenerator(DiffusersGenerator):
    """``generator=stable_cascade_random``: the synthesis pass over Stable Cascade's shapes
    with random weights (what a real Stable Cascade run costs, offline). Images are noise;
    scores mean nothing. ``num_inference_steps`` are the decoder's; the prior's and both
    guidance scales go in ``extra_kwargs`` (``prior_num_inference_steps``, ...)."""

    def __init__(self, scale: int = 1, seed: int = 0, num_inference_steps: int = 10,
                 height: int = 1024, width: int = 1024, dtype: str = "bfloat16", **kwargs):
        super().__init__(model_id=f"stable-cascade-shape-random-seed{seed}-x{scale}",
                         num_inference_steps=num_inference_steps, height=height, width=width,
                         dtype=dtype, name=f"stable-cascade-random-seed{seed}-x{scale}",
                         **kwargs)
        self.scale, self.seed = scale, seed

    def _load(self, dtype: torch.dtype):
        return build_cascade(self.scale, self.seed, dtype)
