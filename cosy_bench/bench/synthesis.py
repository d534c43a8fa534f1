"""Benchmark the synthesis pass on a shape-faithful SDXL or Stable Cascade (random weights,
no download).

``python -m cosy_bench.bench synthesis [--model sdxl|stable_cascade] [--size 1024 --steps 50
--images 8 --batch 8]`` (on a CPU: ``--size 256 --steps 2 --images 2 --batch 2``, and
``--scale 8`` to divide every width by 8 where the real shapes' memory is not at hand).

Times on whatever device is present, with the same pipeline (``sdxl``: SDXL-base-1.0's UNet,
VAE and both text encoders, :mod:`cosy_bench.generators.faithful`; ``stable_cascade``: its
prior, decoder, VQGAN and bigG text encoder, :mod:`cosy_bench.generators.faithful_cascade`),
in one run:

* **authors**: the CoSy authors' way: one prompt per pipeline call (SDXL: fp16, 50 steps;
  Stable Cascade: bf16, the model card's 20 prior steps at guidance 4 and 10 decoder steps at
  guidance 0, through ``StableCascadeCombinedPipeline``);
* **cosy_bench**: this suite's synthesis pass: the prompts of a batch in one call with one
  seeded generator per image (:class:`~cosy_bench.generators.diffusers.DiffusersGenerator`),
  ``channels_last``, SDPA attention, ``--compile`` for ``torch.compile`` of the UNet(s),
  ``--vae-fp16`` to decode SDXL without the fp32 round trip (only for a VAE that allows it,
  e.g. the fp16-fix VAE; SDXL's own overflows in fp16; Stable Cascade's VQGAN decodes in the
  pipeline's dtype already).

Prints images/s, seconds per image, peak GPU memory, and each denoiser's time and achieved
TFLOP/s (FLOPs of one step counted once with ``torch.utils.flop_counter`` on meta tensors,
times the steps; time measured by hooks around its calls) and the share of the device's peak
of all denoisers together (a table of known GPUs' dense fp16/bf16 tensor peak, or
``--peak-tflops``). The images of both ways are compared (same seeds): they differ by float
rounding only.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

#: dense fp16/bf16 tensor-core peak, TFLOP/s, by a substring of the device name
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L40": 181.0,
               "A10G": 70.0, "A10": 125.0, "L4": 121.0, "RTX 4090": 165.0, "RTX 3090": 71.0,
               "V100": 125.0, "T4": 65.0}

PROMPTS = ["realistic photo of a close up of pomegranate", "realistic photo of a close up of "
           "red objects", "realistic photo of a close up of stripes", "realistic photo of a "
           "close up of a golden retriever"]


class _UnetTimer:
    """Wall time spent inside the UNet's forward calls (synchronised on a GPU)."""

    def __init__(self, unet: torch.nn.Module, device: torch.device):
        self.seconds, self.calls, self._start = 0.0, 0, 0.0
        self.device = device
        self.handles = [unet.register_forward_pre_hook(self._pre),
                        unet.register_forward_hook(self._post)]

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _pre(self, *_):
        self._sync()
        self._start = time.perf_counter()

    def _post(self, *_):
        self._sync()
        self.seconds += time.perf_counter() - self._start
        self.calls += 1

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def device_peak(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


@dataclass
class _Bench:
    """A pipeline to time: its header line, the keyword arguments of a call, and per denoiser
    (label, the module as the pipeline calls it, FLOPs per image over the whole call)."""

    title: str
    pipe: object
    call: dict
    stages: list[tuple[str, Callable[[], torch.nn.Module], float]] = field(default_factory=list)
    speed_up: Callable[[bool], None] = lambda compile: None


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return getattr(module, "_orig_mod", module)


def _sdxl(args, dtype, device) -> _Bench:
    from cosy_bench.generators.diffusers import speed_up
    from cosy_bench.generators.faithful import build_sdxl, unet_flops

    steps = args.steps or 50
    flops_step = unet_flops(args.size, 2, args.scale) / 2  # per latent (guidance: 2 per image)
    pipe = build_sdxl(args.scale, args.seed, dtype, device)
    params = sum(p.numel() for p in pipe.unet.parameters())

    def fast(compile: bool) -> None:
        speed_up(pipe, channels_last=True, compile=compile)
        if args.vae_fp16:
            pipe.vae.config.force_upcast = False

    return _Bench(
        f"SDXL shape x1/{args.scale} (UNet {params / 1e9:.2f} B parameters, "
        f"{flops_step * 2 / 1e12:.2f} TFLOP per step with guidance), random weights, "
        f"{args.size} px, {steps} steps",
        pipe, dict(num_inference_steps=steps),
        [("UNet", lambda: pipe.unet, flops_step * 2 * steps)], fast)


def _cascade(args, dtype, device) -> _Bench:
    from cosy_bench.generators.diffusers import speed_up
    from cosy_bench.generators.faithful_cascade import (
        build_cascade,
        cascade_flops,
        latent_sides,
    )

    if args.vae_fp16:
        raise SystemExit("--vae-fp16 is for --model sdxl: Stable Cascade's VQGAN decodes in "
                         "the pipeline's dtype already; drop the flag")
    side = latent_sides(args.size)[1]
    if side % 2:
        ok = [s for s in range(64, 1025, 64) if not latent_sides(s)[1] % 2]
        raise SystemExit(f"--size {args.size}: Stable Cascade's decoder latents would be "
                         f"{side} wide, not a multiple of its patch size 2;"
                         f" pick a size such as {', '.join(map(str, ok[:6]))}")
    steps = args.steps or 10
    prior_steps = args.prior_steps or args.steps or 20
    prior_flops, decoder_flops = cascade_flops(args.size, 1, args.scale)  # per latent
    pipe = build_cascade(args.scale, args.seed, dtype, device)
    billions = [sum(p.numel() for p in m.parameters()) / 1e9 for m in (pipe.prior_prior,
                                                                        pipe.decoder)]

    def fast(compile: bool) -> None:  # prior, decoder and VQGAN of the stages' pipelines
        speed_up(pipe, channels_last=True, compile=compile)

    # guidance: the prior's 4.0 doubles its batch, the decoder's 0.0 does not
    return _Bench(
        f"Stable Cascade shape x1/{args.scale} (prior {billions[0]:.2f} B + decoder "
        f"{billions[1]:.2f} B parameters; per step {prior_flops * 2 / 1e12:.3g} TFLOP prior "
        f"with guidance, {decoder_flops / 1e12:.3g} TFLOP decoder), random weights, "
        f"{args.size} px, {prior_steps}+{steps} steps (prior+decoder)",
        pipe, dict(prior_num_inference_steps=prior_steps, prior_guidance_scale=4.0,
                   num_inference_steps=steps, decoder_guidance_scale=0.0),
        [("prior", lambda: pipe.prior_pipe.prior, prior_flops * 2 * prior_steps),
         ("decoder", lambda: pipe.decoder_pipe.decoder, decoder_flops * steps)], fast)


MODELS = {"sdxl": (_sdxl, "float16"), "stable_cascade": (_cascade, "bfloat16")}


def _run(bench: _Bench, prompts: list[str], seeds: list[int], batch: int, args,
         device) -> tuple:
    """Images, wall s and the seconds inside each denoiser over ``prompts`` in batches."""
    timers = [_UnetTimer(_unwrap(get()), device) for _, get, _ in bench.stages]
    images = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    try:
        for i in range(0, len(prompts), batch):
            gens = [torch.Generator(device=device).manual_seed(s) for s in seeds[i:i + batch]]
            with torch.inference_mode():
                out = bench.pipe(prompt=prompts[i:i + batch], generator=gens, height=args.size,
                                 width=args.size, output_type="np", **bench.call)
            images.append(out.images)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    finally:
        for t in timers:
            t.remove()
    return (np.concatenate(images), time.perf_counter() - start, [t.seconds for t in timers],
            _mem(device))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cosy_bench.bench synthesis",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="sdxl")
    ap.add_argument("--size", type=int, default=1024, help="image side in pixels")
    ap.add_argument("--steps", type=int, default=None,
                    help="denoising steps (default: SDXL 50; Stable Cascade's decoder 10, and "
                         "its prior the same as --steps when given, else 20)")
    ap.add_argument("--prior-steps", type=int, default=None, help="Stable Cascade's prior")
    ap.add_argument("--images", type=int, default=8, help="images per way")
    ap.add_argument("--batch", type=int, default=8, help="cosy_bench's prompts per call")
    ap.add_argument("--scale", type=int, default=1, help="divide every width (1 = real shape)")
    ap.add_argument("--dtype", default=None,
                    help="default on a GPU: float16 (SDXL) or bfloat16 (Stable Cascade); "
                         "float32 on CPU")
    ap.add_argument("--compile", action="store_true", help="torch.compile the UNet(s) (ours)")
    ap.add_argument("--vae-fp16", action="store_true",
                    help="SDXL: decode in the pipeline's dtype (no fp32 upcast; ours)")
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--skip-authors", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(list(argv) if argv is not None else None)

    make, gpu_dtype = MODELS[args.model]
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = getattr(torch, args.dtype or (gpu_dtype if device.type == "cuda" else "float32"))
    t0 = time.perf_counter()
    bench = make(args, dtype, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{bench.title}, {args.images} images, {dtype} on {name} "
          f"(built in {time.perf_counter() - t0:.0f} s)")
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.images)]
    seeds = [args.seed * 1000 + i for i in range(args.images)]
    peak = device_peak(device, args.peak_tflops)

    rows = []
    if not args.skip_authors:
        rows.append(("authors (1 prompt/call)", *_run(bench, prompts, seeds, 1, args, device)))
    bench.speed_up(args.compile)
    if args.compile:  # compile outside the timing: one warm-up call of the batch's shape
        _run(bench, prompts[: args.batch], seeds[: args.batch], args.batch, args, device)
    rows.append((f"cosy_bench (batch {args.batch})",
                 *_run(bench, prompts, seeds, args.batch, args, device)))
    _print(rows, bench, args.images, peak)
    if len(rows) == 2:
        diff = np.abs(rows[0][1].astype(np.float64) - rows[1][1].astype(np.float64))
        print(f"speed-up {rows[0][2] / rows[1][2]:.2f}x; images of the two ways differ by max "
              f"{diff.max() * 255:.2f}, mean {diff.mean() * 255:.3f} (0-255 pixel units)")
    return 0


def _print(rows: list, bench: _Bench, images: int, peak: float | None) -> None:
    """One line per way: images/s, s/image, per denoiser its seconds and TFLOP/s, the share
    of the device's peak of all denoisers together, peak GPU memory."""
    labels = [label for label, _, _ in bench.stages]
    head = f"{'way':<26} {'images/s':>9} {'s/image':>9}"
    for label in labels:
        head += f" {label + ' s':>{max(8, len(label) + 2)}} {label + ' TFLOP/s':>{_tf(label)}}"
    print(head + f" {'of peak':>8} {'peak GPU mem':>13}")
    for label, _, wall, seconds, mem in rows:
        line = f"{label:<26} {images / wall:9.3f} {wall / images:9.3g}"
        for (name, _, flops), secs in zip(bench.stages, seconds, strict=True):
            achieved = flops * images / secs / 1e12 if secs else 0.0
            line += f" {secs:{max(8, len(name) + 2)}.1f} {achieved:{_tf(name)}.3g}"
        total = sum(f for _, _, f in bench.stages) * images / max(sum(seconds), 1e-12) / 1e12
        share = f"{total / peak:7.1%}" if peak else f"{'n/a':>7}"
        print(line + f" {share:>8} {mem:>13}")


def _tf(label: str) -> int:
    return max(13, len(label) + 8)


def _mem(device: torch.device) -> str:
    if device.type != "cuda":
        return "n/a (cpu)"
    return f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB"
