"""Benchmark the activation pass on real-format data against the loop a user would write.

``python -m cosy_bench.bench activations [--images 2000 --layers layer2,avgpool]
[--decode full|reduced|gpu]``

Makes (once, seeded, in ``$COSY_CACHE_DIR/bench/``; never committed) a folder of photo-like
JPEGs of ImageNet-like sizes (500x375 and 1024x768 by default: smooth colour fields, edges,
blobs and sensor noise, quality 90) and runs ``resnet18`` with random weights over it, per
layer, two ways in the same process:

* **baseline**: the loop a user would write: ``Image.open(...).convert("RGB")`` (torchvision
  ``ImageFolder``-style), the weights' transforms (Resize 256, CenterCrop 224, Normalize), a
  ``DataLoader`` with its default workers (0), the full forward pass with a hook on the layer;
* **cosy_bench**: :func:`cosy_bench.loops.activations.collect_activations` on an
  :class:`~cosy_bench.data.ImageFolder`: ``num_workers=auto``, JPEGs decoded as ``--decode``
  says (``reduced``, the default: at the size the transform keeps; ``gpu``: the workers read
  the bytes, ``decode_jpeg`` and the transform run on the device; ``full``), the forward
  stopped at the layer, ``channels_last``, pinned memory and ``--precision`` autocast on a GPU.

Prints images/s of both, the speed-up, peak memory (the process's peak RSS on a CPU, peak
allocated GPU memory on a GPU) and how far the fast path's values move: the model input
(the ``--decode`` mode vs PIL's full decoding, in 0-255 pixel units) and the activations
(relative to their spread). Timings are wall-clock on whatever else the machine runs.
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cosy_bench.cache.store import atomic_path, default_cache_dir, stable_hash


def make_jpegs(folder: Path, n: int, sizes: Sequence[tuple[int, int]], seed: int = 0,
               quality: int = 90) -> list[Path]:
    """``n`` photo-like JPEGs in ``folder`` (made once; image i depends on (seed, i) only),
    sizes cycling through ``sizes`` (each also rotated to portrait every third image)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        path = folder / f"{i:06d}.jpg"
        files.append(path)
        if path.exists():
            continue
        w, h = sizes[i % len(sizes)]
        if i % 3 == 2:
            w, h = h, w
        rng = np.random.default_rng([seed, i])
        low = rng.uniform(0, 255, size=(rng.integers(3, 9), rng.integers(3, 9), 3))
        img = np.asarray(Image.fromarray(low.astype(np.uint8)).resize((w, h), Image.BICUBIC),
                         dtype=np.float32)
        yy, xx = np.mgrid[:h, :w]
        for _ in range(rng.integers(2, 7)):  # objects with sharp edges
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            ry, rx = rng.uniform(0.05, 0.3) * h, rng.uniform(0.05, 0.3) * w
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
            img[inside] = img[inside] * 0.3 + rng.uniform(0, 255, size=3) * 0.7
        stripes = np.sin(xx * rng.uniform(0.05, 0.5) + yy * rng.uniform(0.05, 0.5))
        img += 12 * stripes[..., None] + rng.normal(0, 6, size=img.shape)  # texture, noise
        with atomic_path(path) as tmp:
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
                tmp, format="JPEG", quality=quality)
    return files


class _PlainFolder(torch.utils.data.Dataset):
    """What a user writes: open, convert to RGB, transform."""

    def __init__(self, files: list[Path], transform):
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        return self.transform(Image.open(self.files[i]).convert("RGB"))


def baseline_pass(model: torch.nn.Module, module: str, files: list[Path], transform,
                  batch_size: int, device: torch.device) -> torch.Tensor:
    """Full forward with a hook on ``module``; spatial mean of its output: ``[N, K]``."""
    out: list[torch.Tensor] = []
    handle = model.get_submodule(module).register_forward_hook(
        lambda _m, _i, o: out.append(o.mean(dim=(2, 3)) if o.ndim == 4 else o.flatten(1)))
    loader = torch.utils.data.DataLoader(_PlainFolder(files, transform), batch_size=batch_size)
    try:
        with torch.no_grad():
            for x in loader:
                model(x.to(device))
    finally:
        handle.remove()
    return torch.cat([o.float().cpu() for o in out])


def _peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB GPU"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB RSS"


def _mode_inputs(files: list[Path], transform, decode: str, device: torch.device
                 ) -> list[torch.Tensor]:
    """The model input of each file as ``decode`` makes it (on the CPU)."""
    if decode == "gpu":
        from cosy_bench.data.gpu_decode import DevicePreprocess, collate_encoded, read_jpeg

        items = [(read_jpeg(path), i) for i, path in enumerate(files)]
        assert all(x is not None for x, _ in items)
        x, index = DevicePreprocess(transform)(collate_encoded(items), device)
        return list(x[torch.argsort(index.to(x.device))].float().cpu())
    from cosy_bench.data.decode import NOT_HANDLED, load_reduced, resize_short_side

    out = []
    for path in files:
        reduced = load_reduced(path, resize_short_side(transform))
        assert reduced is not NOT_HANDLED and reduced is not None
        out.append(transform(reduced))
    return out


def input_difference(files: list[Path], transform, decode: str = "reduced",
                     device: torch.device | None = None, count: int = 32
                     ) -> dict[str, tuple[float, float, float]]:
    """How far the model input moves, over the first ``count`` images, in 0-255 pixel units
    (the normalised input times the transform's std): ``{decode: ..., "reencoded": ...}``,
    each ``(max, mean over all images, mean over the images that changed)``.

    ``decode``: ``reduced`` (reduced vs full JPEG decoding) or ``gpu`` (decode_jpeg and the
    tensor transform on ``device`` vs PIL and the transform); ``full`` adds nothing.
    ``reencoded``: for scale, the full decoding of the same file saved once more as a
    quality-90 JPEG (noise every photo of ImageNet carries)."""
    import io

    from cosy_bench.data.gpu_decode import tensor_recipe

    recipe = tensor_recipe(transform)
    std = torch.tensor(recipe.std if recipe else [1.0, 1.0, 1.0])[:, None, None] * 255
    files = files[:count]
    modes = [decode] if decode in ("reduced", "gpu") else []
    made = {mode: _mode_inputs(files, transform, mode, device or torch.device("cpu"))
            for mode in modes}
    stats = {name: [] for name in (*modes, "reencoded")}
    for k, path in enumerate(files):
        full = Image.open(path).convert("RGB")
        buf = io.BytesIO()
        full.save(buf, format="JPEG", quality=90)
        ref = transform(full)
        inputs = {mode: made[mode][k] for mode in modes}
        inputs["reencoded"] = transform(Image.open(buf).convert("RGB"))
        for name, x in inputs.items():
            diff = (x - ref).abs() * std
            stats[name].append((float(diff.max()), float(diff.mean())))
    out = {}
    for name, rows in stats.items():
        changed = [m for w, m in rows if w > 0]
        out[name] = (max(w for w, _ in rows), sum(m for _, m in rows) / len(rows),
                     sum(changed) / len(changed) if changed else 0.0)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cosy_bench.bench activations",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--sizes", default="500x375,1024x768", help="W x H, comma-separated")
    ap.add_argument("--layers", default="layer2,avgpool", help="resnet18 modules")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", default="auto", help="cosy_bench's num_workers (int or auto)")
    ap.add_argument("--decode", default="reduced", choices=["full", "reduced", "gpu"],
                    help="cosy_bench's dataset.decode (gpu: decode_jpeg and the transform on "
                         "--device, the CPU without CUDA)")
    ap.add_argument("--precision", default=None, choices=["bfloat16", "float16"],
                    help="autocast of cosy_bench's pass (GPU; bfloat16 also on a CPU)")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    ap.add_argument("--folder", default=None, help="where the JPEGs are made (default: cache)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(list(argv) if argv is not None else None)
    if args.threads:
        torch.set_num_threads(args.threads)

    import lightning as L
    import torchvision

    from cosy_bench.data import ImageFolder
    from cosy_bench.loops.activations import collect_activations, resolve_num_workers
    from cosy_bench.models.layers import LayerExtractor, LayerSpec

    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",")]
    folder = Path(args.folder) if args.folder else (
        default_cache_dir() / "bench" / f"jpegs-{stable_hash([args.images, sizes, args.seed])}")
    start = time.perf_counter()
    files = make_jpegs(folder, args.images, sizes, args.seed)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    transform = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms()
    workers = resolve_num_workers(args.workers, len(files))
    print(f"{len(files)} JPEGs {args.sizes} in {folder} ({time.perf_counter() - start:.0f} s to "
          f"make/find); resnet18 random weights on {device}; batch {args.batch_size}; torch "
          f"threads {torch.get_num_threads()}; cosy_bench workers {workers}, baseline 0; "
          f"cosy_bench decode={args.decode}")
    diffs = input_difference(files, transform, args.decode, device)
    labels = {"reduced": "reduced vs full JPEG decoding",
              "gpu": f"decode_jpeg + tensor transform on {device} vs PIL decoding + transform",
              "reencoded": "for scale: the same image re-encoded as JPEG q90"}
    for name, (worst, mean, changed) in diffs.items():
        print(f"model input, {labels[name]}: max |diff| {worst:.1f}, mean {mean:.3f} (over the "
              f"images it changes: {changed:.3f}), 0-255 pixel units")

    torch.manual_seed(args.seed)
    base_model = torchvision.models.resnet18().eval().to(device)
    fast_model = torchvision.models.resnet18().eval()
    fast_model.load_state_dict(base_model.state_dict())
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    print(f"{'layer':<8} {'path':<11} {'images/s':>9} {'s':>8} {'speed-up':>9} {'peak memory':>16} "
          f"{'max|diff|/std':>14}")
    for layer in args.layers.split(","):
        t0 = time.perf_counter()
        ref = baseline_pass(base_model, layer, files, transform, args.batch_size, device)
        t_base = time.perf_counter() - t0
        mem_base = _peak_memory(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        trainer = L.Trainer(accelerator=accelerator, devices=1, logger=False,
                            enable_progress_bar=False, enable_model_summary=False,
                            enable_checkpointing=False)
        extractor = LayerExtractor(fast_model, LayerSpec(layer, layer))
        t0 = time.perf_counter()
        dataset = ImageFolder(str(folder), name="bench", decode=args.decode)
        acts, _ = collect_activations(extractor, dataset, transform, trainer,
                                      batch_size=args.batch_size, num_workers=args.workers,
                                      precision=args.precision)
        t_fast = time.perf_counter() - t0
        rel = float(((acts - ref).abs().max(dim=0).values / ref.std(dim=0).clamp_min(1e-12)).max())
        n = len(files)
        print(f"{layer:<8} {'baseline':<11} {n / t_base:9.1f} {t_base:8.1f} {'':>9} "
              f"{mem_base:>16}")
        print(f"{layer:<8} {'cosy_bench':<11} {n / t_fast:9.1f} {t_fast:8.1f} "
              f"{t_base / t_fast:8.2f}x {_peak_memory(device):>16} {rel:14.2e}")
    return 0
