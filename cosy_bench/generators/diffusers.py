"""Text-to-image generation with diffusers pipelines: any pretrained id or local path
(SDXL, Stable Cascade, ...) and a tiny pipeline built from configs with random weights."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import torch
from PIL import Image

from cosy_bench.cache.fingerprint import path_fingerprint
from cosy_bench.generators.base import Generator

log = logging.getLogger(__name__)

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


class DiffusersGenerator(Generator):
    """A diffusers text-to-image pipeline loaded with ``AutoPipelineForText2Image``.

    ``dtype`` applies on GPU; on CPU the pipeline runs in float32 (half precision is slow or
    unsupported there). Per-image ``torch.Generator`` objects make image i depend only on
    its own seed, whatever the batch. Speed (same images up to float rounding): the prompts
    of a batch go through one pipeline call, attention runs through PyTorch's SDPA
    (diffusers' default), ``channels_last`` lays the UNet's and VAE's convolutions out NHWC,
    ``compile`` wraps the UNet in ``torch.compile`` (a one-off compile per shape).
    """

    def __init__(self, model_id: str, num_inference_steps: int = 50,
                 guidance_scale: float | None = None, height: int | None = None,
                 width: int | None = None, dtype: str = "float16", variant: str | None = None,
                 extra_kwargs: dict | None = None, name: str | None = None,
                 channels_last: bool = True, compile: bool = False):
        self.model_id = model_id
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.height, self.width = height, width
        self.dtype = dtype
        self.variant = variant
        self.extra_kwargs = dict(extra_kwargs or {})
        self.name = name or model_id.replace("/", "--")
        self.channels_last, self.compile = channels_last, compile
        self.pipe = None
        self.device = "cpu"

    @property
    def cache_key(self) -> str:
        """The settings that determine the images; a local ``model_id`` folder (or file) also
        by its content (:func:`~cosy_bench.cache.fingerprint.path_fingerprint`, hashed once
        and remembered by each file's stat signature), so that weights replaced in place
        regenerate the images. ``variant`` (which weight files load) counts where set."""
        key = {"name": self.name, "model": self.model_id, "steps": self.num_inference_steps,
               "cfg": self.guidance_scale, "h": self.height, "w": self.width,
               "extra": self.extra_kwargs}
        if self.variant:
            key["variant"] = self.variant
        local = Path(self.model_id).expanduser()
        if local.exists():
            key["model_content"] = path_fingerprint(local)
        return json.dumps(key, sort_keys=True)

    def _load(self, dtype: torch.dtype):
        from diffusers import AutoPipelineForText2Image

        kwargs = {dtype_keyword(): dtype}
        if self.variant:
            kwargs["variant"] = self.variant
        local = Path(self.model_id).expanduser()
        if not local.is_dir() and (self.model_id.startswith(("/", "~", "."))
                                   or self.model_id.count("/") > 1):
            raise FileNotFoundError(
                f"generator.model_id={self.model_id}: no such folder (a local diffusers "
                "pipeline: the folder save_pretrained wrote, with model_index.json); "
                "give an existing folder or a hub id, or generator=tiny for an offline run")
        try:
            return AutoPipelineForText2Image.from_pretrained(self.model_id, **kwargs)
        except Exception as err:
            raise RuntimeError(
                f"could not load the diffusers pipeline {self.model_id!r} ({err}). Without "
                "network access use `generator=tiny` (random weights, for smoke runs) or the "
                "toy world's `generator=toyworld`; or set generator.model_id to a local folder."
            ) from err

    def setup(self, device: str = "cpu") -> None:
        if self.pipe is not None and self.device == device:
            return
        self.device = device
        dtype = _DTYPES[self.dtype] if str(device).startswith("cuda") else torch.float32
        if self.pipe is None:
            self.pipe = self._load(dtype)
            self.pipe.set_progress_bar_config(disable=True)
        self.pipe.to(device)
        speed_up(self.pipe, self.channels_last, self.compile)

    def generate(self, prompts: list[str], seeds: list[int]) -> list[Image.Image]:
        if self.pipe is None:
            self.setup(self.device)
        gens = [torch.Generator(device=self.device).manual_seed(int(s)) for s in seeds]
        kwargs = dict(self.extra_kwargs)
        if self.guidance_scale is not None:
            kwargs["guidance_scale"] = self.guidance_scale
        if self.height:
            kwargs["height"] = self.height
        if self.width:
            kwargs["width"] = self.width
        with torch.inference_mode():
            out = self.pipe(prompt=list(prompts), generator=gens,
                            num_inference_steps=self.num_inference_steps, **kwargs)
        return [im.convert("RGB") for im in out.images]


def dtype_keyword() -> str:
    """``dtype`` where the installed diffusers takes it (it deprecates ``torch_dtype``: the
    versions with ``diffusers.utils.deprecation_utils._resolve_dtype``), else ``torch_dtype``."""
    try:
        from diffusers.utils import deprecation_utils
    except ImportError:
        return "torch_dtype"
    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


def speed_up(pipe, channels_last: bool = True, compile: bool = False) -> None:
    """NHWC convolutions for the pipeline's UNet(s) and VAE; ``torch.compile`` of the UNet.

    A combined pipeline (Stable Cascade's) calls its stages' pipelines (``prior_pipe``,
    ``decoder_pipe``), which hold the modules it runs: those are the ones sped up."""
    stages = [getattr(pipe, n) for n in ("prior_pipe", "decoder_pipe")
              if getattr(pipe, n, None) is not None]
    if stages:
        for stage in stages:
            speed_up(stage, channels_last, compile)
        return
    for name in ("unet", "prior", "decoder", "vae", "vqgan"):
        module = getattr(pipe, name, None)
        if module is None:
            continue
        if channels_last:
            module.to(memory_format=torch.channels_last)
        if compile and name in ("unet", "prior", "decoder") and \
                not hasattr(module, "_orig_mod"):
            setattr(pipe, name, torch.compile(module, fullgraph=False))


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's byte-to-unicode table, in CLIP's order: the printable bytes map to
    themselves, then the others, in byte order, to the characters from 256 on."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
                 *range(ord("\u00ae"), ord("\u00ff") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable},
            **{b: chr(256 + i) for i, b in enumerate(others)}}


#: token ids of CLIP's BPE vocabulary (49,408 tokens: 256 bytes, their ``</w>`` forms,
#: 48,894 merges, then start and end of text), as in SD/SDXL's and open_clip's tokenizers
CLIP_VOCAB_SIZE, CLIP_BOS, CLIP_EOS = 49408, 49406, 49407


def _byte_level_tokenizer_files(folder: Path) -> None:
    """A CLIP BPE vocabulary with no merges: every byte is a token (plus ``</w>`` forms)."""
    table = _bytes_to_unicode()
    chars = [table[b] for b in range(256)]
    vocab = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")


def clip_bpe_tokenizer_files(folder: Path) -> None:
    """``vocab.json`` and ``merges.txt`` of CLIP's real BPE vocabulary in Hugging Face's
    ``CLIPTokenizer`` format, made offline from the merges file open_clip ships
    (``bpe_simple_vocab_16e6.txt.gz``): the tokenizer SD, SDXL and Stable Cascade load from
    the hub, so prompts split into the same ids as there."""
    import gzip

    import open_clip

    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(bpe, "rt", encoding="utf-8").read().split("\n")
    n_merges = CLIP_VOCAB_SIZE - 2 * 256 - 2
    merges = lines[1:1 + n_merges]  # line 0 is the file's version header
    chars = list(_bytes_to_unicode().values())
    vocab = [*chars, *(c + "</w>" for c in chars), *(m.replace(" ", "") for m in merges),
             "<|startoftext|>", "<|endoftext|>"]
    if len(vocab) != CLIP_VOCAB_SIZE or len(set(vocab)) != CLIP_VOCAB_SIZE:
        raise ValueError(f"{bpe}: expected CLIP's {CLIP_VOCAB_SIZE} distinct tokens, got "
                         f"{len(set(vocab))}; reinstall open_clip_torch")
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}),
                                       encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n",
                                       encoding="utf-8")


def clip_tokenizer(vocabulary: str = "clip", **kwargs):
    """A ``CLIPTokenizer`` (77 tokens) built offline: ``vocabulary="clip"`` holds CLIP's real
    BPE vocabulary (:func:`clip_bpe_tokenizer_files`), ``"bytes"`` 514 byte-level tokens;
    ``kwargs`` go to the tokenizer (e.g. ``pad_token="!"`` as SDXL's second one)."""
    from transformers import CLIPTokenizer

    write = {"clip": clip_bpe_tokenizer_files, "bytes": _byte_level_tokenizer_files}
    if vocabulary not in write:
        raise ValueError(f"vocabulary={vocabulary!r}: use 'bytes' or 'clip'")
    with tempfile.TemporaryDirectory() as tmp:
        write[vocabulary](Path(tmp))
        return CLIPTokenizer(str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"),
                             model_max_length=77, **kwargs)


def build_tiny_pipeline(seed: int = 0, sample_size: int = 32, vocabulary: str = "bytes"):
    """A complete StableDiffusionPipeline with tiny random components, built offline.

    UNet, VAE, CLIP text encoder and tokenizer come from configs; weights are random under
    ``seed``. Images are ``8 * sample_size / 4`` pixels wide (VAE with two down blocks).
    ``vocabulary``: ``"bytes"`` (514 byte-level tokens, ``generator=tiny``) or ``"clip"``
    (CLIP's real 49,408-token BPE vocabulary, :func:`clip_bpe_tokenizer_files`).
    """
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = clip_tokenizer(vocabulary)  # first: a wrong vocabulary fails before any model
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=sample_size,
        in_channels=4, out_channels=4, cross_attention_dim=32, norm_num_groups=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=4,
    )
    vae = AutoencoderKL(
        block_out_channels=(16, 32), in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=8,
        sample_size=sample_size * 2,
    )
    bos, eos, size = (512, 513, 514) if vocabulary == "bytes" else \
        (CLIP_BOS, CLIP_EOS, CLIP_VOCAB_SIZE)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=bos, eos_token_id=eos, pad_token_id=eos, hidden_size=32,
        intermediate_size=37, layer_norm_eps=1e-05, num_attention_heads=4,
        num_hidden_layers=2, vocab_size=size, max_position_embeddings=77,
    ))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False,
                              steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   unet=unet, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class TinyDiffusersGenerator(DiffusersGenerator):
    """The whole diffusers path (text encoder, UNet denoising loop, VAE decode) offline.

    Random weights: images are noise-like, so scores mean nothing; it exists so that
    every code path through diffusers runs in tests and smoke runs.
    """

    def __init__(self, seed: int = 0, num_inference_steps: int = 2, sample_size: int = 32,
                 guidance_scale: float = 1.0):
        super().__init__(model_id=f"tiny-random-sd-seed{seed}-s{sample_size}",
                         num_inference_steps=num_inference_steps,
                         guidance_scale=guidance_scale, dtype="float32",
                         name=f"tiny-seed{seed}", channels_last=False)
        self.seed = seed
        self.sample_size = sample_size

    def _load(self, dtype: torch.dtype):
        return build_tiny_pipeline(self.seed, self.sample_size)

    def generate(self, prompts: list[str], seeds: list[int]) -> list[Image.Image]:
        # one image per call: batched CPU kernels round differently with the batch size
        images = []
        for prompt, seed in zip(prompts, seeds, strict=True):
            images += super().generate([prompt], [seed])
        return images
