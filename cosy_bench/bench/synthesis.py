"""Benchmark the synthesis pass on a shape-faithful SDXL (random weights, no download).

``python -m cosy_bench.bench synthesis [--size 1024 --steps 50 --images 8 --batch 8]``
(on a CPU: ``--size 256 --steps 2 --images 2 --batch 2``, and ``--scale 8`` to divide every
width by 8 where 14 GB of memory for the real shape are not at hand).

Times on whatever device is present, with the same pipeline (SDXL-base-1.0's UNet, VAE and
both text encoders, :mod:`cosy_bench.generators.faithful`), in one run:

* **authors**: the CoSy authors' way: one prompt per pipeline call (fp16 on a GPU);
* **cosy_bench**: this suite's synthesis pass: the prompts of a batch in one call with one
  seeded generator per image (:class:`~cosy_bench.generators.diffusers.DiffusersGenerator`),
  ``channels_last``, SDPA attention, ``--compile`` for ``torch.compile``, ``--vae-fp16`` to
  decode without the fp32 round trip (only for a VAE that allows it, e.g. the fp16-fix VAE;
  SDXL's own overflows in fp16).

Prints images/s, seconds per image, peak GPU memory, and the UNet's achieved TFLOP/s (FLOPs of
one step counted once with ``torch.utils.flop_counter`` on meta tensors, times the UNet calls;
UNet time measured by hooks around its calls) against the device's peak (a table of known
GPUs' dense fp16/bf16 tensor peak, or ``--peak-tflops``). The images of both ways are
compared (same seeds): they differ by float rounding only.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

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


def _run(pipe, prompts: list[str], seeds: list[int], batch: int, args, device) -> tuple:
    """Images and (wall s, UNet s, UNet calls) of ``pipe`` over ``prompts`` in batches."""
    timer = _UnetTimer(pipe.unet if not hasattr(pipe.unet, "_orig_mod") else
                       pipe.unet._orig_mod, device)
    images = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    try:
        for i in range(0, len(prompts), batch):
            gens = [torch.Generator(device=device).manual_seed(s) for s in seeds[i:i + batch]]
            with torch.inference_mode():
                out = pipe(prompt=prompts[i:i + batch], generator=gens, height=args.size,
                           width=args.size, num_inference_steps=args.steps, output_type="np")
            images.append(out.images)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    finally:
        timer.remove()
    return np.concatenate(images), time.perf_counter() - start, timer.seconds, timer.calls


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cosy_bench.bench synthesis",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=1024, help="image side in pixels")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--images", type=int, default=8, help="images per way")
    ap.add_argument("--batch", type=int, default=8, help="cosy_bench's prompts per call")
    ap.add_argument("--scale", type=int, default=1, help="divide every width (1 = real SDXL)")
    ap.add_argument("--dtype", default=None, help="default: float16 on a GPU, float32 on CPU")
    ap.add_argument("--compile", action="store_true", help="torch.compile the UNet (ours)")
    ap.add_argument("--vae-fp16", action="store_true",
                    help="decode in the pipeline's dtype (no fp32 upcast; ours)")
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--skip-authors", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(list(argv) if argv is not None else None)

    from cosy_bench.generators.diffusers import speed_up
    from cosy_bench.generators.faithful import build_sdxl, unet_flops

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = getattr(torch, args.dtype or ("float16" if device.type == "cuda" else "float32"))
    t0 = time.perf_counter()
    flops_step = unet_flops(args.size, 2, args.scale) / 2  # per image and step (CFG: x2 below)
    pipe = build_sdxl(args.scale, args.seed, dtype, device)
    params = sum(p.numel() for p in pipe.unet.parameters())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"SDXL shape x1/{args.scale} (UNet {params / 1e9:.2f} B parameters, "
          f"{flops_step * 2 / 1e12:.2f} TFLOP per step with guidance), random weights, "
          f"{args.size} px, {args.steps} steps, {args.images} images, {dtype} on {name} "
          f"(built in {time.perf_counter() - t0:.0f} s)")
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.images)]
    seeds = [args.seed * 1000 + i for i in range(args.images)]
    peak = device_peak(device, args.peak_tflops)

    rows = []
    if not args.skip_authors:
        rows.append(("authors (1 prompt/call)", *_run(pipe, prompts, seeds, 1, args, device),
                     _mem(device)))
    speed_up(pipe, channels_last=True, compile=args.compile)
    if args.vae_fp16:
        pipe.vae.config.force_upcast = False
    if args.compile:  # compile outside the timing: one warm-up call of the batch's shape
        _run(pipe, prompts[: args.batch], seeds[: args.batch], args.batch, args, device)
    rows.append((f"cosy_bench (batch {args.batch})", *_run(pipe, prompts, seeds, args.batch,
                                                           args, device), _mem(device)))

    print(f"{'way':<26} {'images/s':>9} {'s/image':>9} {'UNet s':>8} {'UNet TFLOP/s':>13} "
          f"{'of peak':>8} {'peak GPU mem':>13}")
    for label, _, wall, unet_s, _calls, mem in rows:
        achieved = flops_step * 2 * args.steps * args.images / unet_s / 1e12 if unet_s else 0
        share = f"{achieved / peak:7.1%}" if peak else f"{'n/a':>7}"
        print(f"{label:<26} {args.images / wall:9.3f} {wall / args.images:9.2f} {unet_s:8.1f} "
              f"{achieved:13.3g} {share:>8} {mem:>13}")
    if len(rows) == 2:
        diff = np.abs(rows[0][1].astype(np.float64) - rows[1][1].astype(np.float64))
        print(f"speed-up {rows[0][2] / rows[1][2]:.2f}x; images of the two ways differ by max "
              f"{diff.max() * 255:.2f}, mean {diff.mean() * 255:.3f} (0-255 pixel units)")
    return 0


def _mem(device: torch.device) -> str:
    if device.type != "cuda":
        return "n/a (cpu)"
    return f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB"
