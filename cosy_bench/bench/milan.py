"""``python -m cosy_bench.bench milan``: the cost of MILAN's two stages.

1. The exemplar pass: resnet18 (random weights) at ``--layer`` over ``--images`` random
   224-px images, keeping the top-15 maps and the level sample; reports images/s and the
   size of what the pass keeps (which must not grow with the number of images).
2. Describing units with a decoder of the published sizes (random weights, ResNet-101
   pyramid encoder, beam 50, 15 tokens, PMI rerank): seconds per unit.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import Dataset


class _RandomImages(Dataset):
    def __init__(self, n: int, size: int = 224):
        self.n, self.size, self.name = n, size, f"bench-random-{n}"

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        from PIL import Image

        g = torch.Generator().manual_seed(i)
        pixels = torch.randint(0, 256, (self.size, self.size, 3), generator=g, dtype=torch.uint8)
        return Image.fromarray(pixels.numpy(), "RGB")


def exemplar_pass(n_images: int, layer: str, batch_size: int) -> dict:
    import lightning as L
    import torchvision

    from cosy_bench.loops.exemplars import collect_exemplars
    from cosy_bench.models.layers import LayerSpec, SpatialExtractor

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    spatial = "layer4" if layer in ("avgpool", "fc") else None
    extractor = SpatialExtractor(model, LayerSpec(layer, layer, spatial=spatial))
    transform = torchvision.transforms.Compose([
        torchvision.transforms.ToTensor(),
        torchvision.transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    trainer = L.Trainer(accelerator="auto", devices=1, logger=False,
                        enable_progress_bar=False, enable_model_summary=False)
    start = time.perf_counter()
    ex = collect_exemplars(extractor, _RandomImages(n_images), transform, trainer,
                           batch_size=batch_size)
    seconds = time.perf_counter() - start
    kept = sum(t.numel() * t.element_size() for t in ex.to_tensors().values())
    return {"images": n_images, "layer": layer, "units": ex.indices.shape[0],
            "seconds": round(seconds, 2), "images_per_s": round(n_images / seconds, 1),
            "kept_mb": round(kept / 2**20, 2)}


def describe(units: int, batch_units: int) -> dict:
    from cosy_bench.explainers.milan.checkpoints import random_captioner

    model = random_captioner("resnet101")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device)
    torch.manual_seed(0)
    start = time.perf_counter()
    encode = decode = 0.0
    for s in range(0, units, batch_units):
        u = min(batch_units, units - s)
        images = torch.rand(u, 15, 3, 224, 224, device=device)
        masks = (torch.rand(u, 15, 1, 224, 224, device=device) > 0.7).float()
        t0 = time.perf_counter()
        with torch.no_grad():
            feats = model.encode(images, masks)
        t1 = time.perf_counter()
        model.describe(feats)
        encode, decode = encode + t1 - t0, decode + time.perf_counter() - t1
    seconds = time.perf_counter() - start
    return {"units": units, "device": device, "seconds": round(seconds, 2),
            "encode_s_per_unit": round(encode / units, 3),
            "decode_s_per_unit": round(decode / units, 3)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, nargs="+", default=[500, 2000])
    ap.add_argument("--layer", default="layer4")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--units", type=int, default=8)
    ap.add_argument("--batch-units", type=int, default=8)
    args = ap.parse_args(argv)
    for n in args.images:
        print("exemplar pass:", exemplar_pass(n, args.layer, args.batch_size))
    print("describe:", describe(args.units, args.batch_units))
