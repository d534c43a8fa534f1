"""Shape-faithful Stable Diffusion XL with random weights, built offline from its configuration.

The UNet, VAE and both text encoders take the published configuration of
``stabilityai/stable-diffusion-xl-base-1.0`` (model_index.json, unet/, vae/, text_encoder/,
text_encoder_2/ config files), so a pass over it costs what the real model costs (same
layers, widths, attention heads and FLOPs); the weights are random, so the images are noise.
The tokenizers hold CLIP's real BPE vocabulary (49,408 tokens, made offline from open_clip's
merges file), so prompts split into the ids the hub's tokenizers give. ``scale`` divides
every width (channels, hidden sizes, heads keep their size) for tests on a CPU; ``scale=1``
is the real shape (about 3.5 billion parameters: 14 GB in float32, 7 GB in float16).

:func:`build_sdxl` gives a ``StableDiffusionXLPipeline``; :func:`unet_flops` counts the
UNet's FLOPs of one denoising step without allocating it (meta tensors).
"""

from __future__ import annotations

import torch

from cosy_bench.generators.diffusers import (
    CLIP_BOS,
    CLIP_EOS,
    CLIP_VOCAB_SIZE,
    DiffusersGenerator,
    clip_tokenizer,
)

#: unet/config.json of SDXL-base-1.0 (the keys that shape the network)
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(320, 640, 1280), transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20), cross_attention_dim=2048, use_linear_projection=True,
    addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, norm_num_groups=32, act_fn="silu",
    flip_sin_to_cos=True, freq_shift=0,
)
#: vae/config.json (SDXL's VAE: four blocks, scaling factor 0.13025, upcast to fp32)
SDXL_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
    block_out_channels=(128, 256, 512, 512), norm_num_groups=32, sample_size=1024,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    scaling_factor=0.13025, force_upcast=True,
)
#: text_encoder/config.json (CLIP ViT-L/14 text tower) and text_encoder_2 (OpenCLIP bigG)
SDXL_TEXT = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                 num_hidden_layers=12, projection_dim=768, hidden_act="quick_gelu")
SDXL_TEXT_2 = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20,
                   num_hidden_layers=32, projection_dim=1280, hidden_act="gelu")


def _scaled(widths, scale: int, groups: int = 32):
    """Widths divided by ``scale``, each still a multiple of the group-norm groups."""
    return tuple(max(groups, (w // scale) // groups * groups) for w in widths)


def unet_config(scale: int = 1) -> dict:
    cfg = dict(SDXL_UNET)
    if scale > 1:
        channels = _scaled(cfg["block_out_channels"], scale)
        cfg.update(block_out_channels=channels,
                   attention_head_dim=tuple(max(1, h // scale) for h in cfg["attention_head_dim"]),
                   cross_attention_dim=cfg["cross_attention_dim"] // scale,
                   addition_time_embed_dim=cfg["addition_time_embed_dim"] // scale,
                   projection_class_embeddings_input_dim=(
                       SDXL_TEXT_2["projection_dim"] // scale
                       + 6 * (cfg["addition_time_embed_dim"] // scale)))
    return cfg


def _text_config(base: dict, scale: int) -> dict:
    cfg = dict(base, vocab_size=CLIP_VOCAB_SIZE, max_position_embeddings=77,
               bos_token_id=CLIP_BOS, eos_token_id=CLIP_EOS, pad_token_id=CLIP_EOS,
               layer_norm_eps=1e-5)
    if scale > 1:
        heads = cfg["num_attention_heads"]
        hidden = max(heads, cfg["hidden_size"] // scale // heads * heads)
        cfg.update(hidden_size=hidden, intermediate_size=4 * hidden,
                   projection_dim=cfg["projection_dim"] // scale)
    return cfg


def build_sdxl(scale: int = 1, seed: int = 0, dtype: torch.dtype = torch.float32,
               device: str | torch.device = "cpu"):
    """A ``StableDiffusionXLPipeline`` of SDXL-base-1.0's shapes (widths / ``scale``) with
    random weights under ``seed``, in ``dtype`` on ``device``; Euler scheduler as SDXL's."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    if scale < 1:
        raise ValueError(f"scale must be >= 1 (1 = the real SDXL shape), got {scale}")
    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet2DConditionModel(**unet_config(scale))
        vae_cfg = dict(SDXL_VAE)
        if scale > 1:
            vae_cfg["block_out_channels"] = _scaled(vae_cfg["block_out_channels"], scale)
        vae = AutoencoderKL(**vae_cfg)
        te1 = CLIPTextModel(CLIPTextConfig(**_text_config(SDXL_TEXT, scale)))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**_text_config(SDXL_TEXT_2, scale)))
    if dtype != torch.float32:
        for module in (unet, vae, te1, te2):
            module.to(dtype=dtype)
    tok = clip_tokenizer()
    tok_2 = clip_tokenizer(pad_token="!")  # as SDXL's second one
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012,
                                       beta_schedule="scaled_linear", steps_offset=1,
                                       timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2,
                                     tokenizer=tok, tokenizer_2=tok_2, unet=unet,
                                     scheduler=scheduler, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def unet_flops(size: int = 1024, batch: int = 2, scale: int = 1) -> int:
    """FLOPs of one UNet call on ``batch`` latents of a ``size``-px image (classifier-free
    guidance: 2 per image), counted by ``torch.utils.flop_counter`` on meta tensors (nothing
    is allocated; a multiply-add counts 2)."""
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    cfg = unet_config(scale)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**cfg)
        latent = torch.empty(batch, 4, size // 8, size // 8)
        text = torch.empty(batch, 77, cfg["cross_attention_dim"])
        pooled = torch.empty(batch, cfg["projection_class_embeddings_input_dim"]
                             - 6 * cfg["addition_time_embed_dim"])
        time_ids = torch.empty(batch, 6)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            unet(latent, torch.tensor([500] * batch), encoder_hidden_states=text,
                 added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids})
    return int(counter.get_total_flops())


class FaithfulSDXLGenerator(DiffusersGenerator):
    """``generator=sdxl_random``: the synthesis pass over SDXL's shapes with random weights
    (what a real SDXL run costs, offline). Images are noise; scores mean nothing."""

    def __init__(self, scale: int = 1, seed: int = 0, num_inference_steps: int = 50,
                 height: int = 1024, width: int = 1024, dtype: str = "float16", **kwargs):
        super().__init__(model_id=f"sdxl-shape-random-seed{seed}-x{scale}",
                         num_inference_steps=num_inference_steps, height=height, width=width,
                         dtype=dtype, name=f"sdxl-random-seed{seed}-x{scale}", **kwargs)
        self.scale, self.seed = scale, seed

    def _load(self, dtype: torch.dtype):
        return build_sdxl(self.scale, self.seed, dtype)
