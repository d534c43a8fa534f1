"""``python -m cosy_bench.bench sae``: the cost of training the TopK SAE of ``units=sae``.

Trains on ``--n`` x ``--d-in`` activations (default 50,000 x 512: resnet18's avgpool over
ImageNet's validation set) made as a planted sparse code (``--planted`` atoms, 4 active per
row, plus noise), with the ``units=sae`` defaults (expansion 4, k = min(16, d_in // 4),
50 epochs, batch 256), on the CPU unless ``--device cuda``. Prints one JSON line per size:
seconds, seconds per epoch, the peak resident memory of the process (and of the GPU), and
the dictionary's R^2, L0 and dead fraction on its training data.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys

import torch

from cosy_bench.units.kinds import default_k
from cosy_bench.units.train import TrainSettings, train_topk_sae


def planted(n: int, d_in: int, atoms: int, seed: int = 0) -> torch.Tensor:
    """Activations [n, d_in]: 4 of ``atoms`` unit directions per row, non-negative weights,
    plus 5% Gaussian noise (a sparse code an SAE can recover)."""
    g = torch.Generator().manual_seed(seed)
    dic = torch.nn.functional.normalize(torch.randn(atoms, d_in, generator=g), dim=1)
    idx = torch.randint(0, atoms, (n, 4), generator=g)
    z = torch.zeros(n, atoms).scatter_(1, idx, torch.rand(n, 4, generator=g) + 0.5)
    return z @ dic + 0.05 * torch.randn(n, d_in, generator=g)


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KiB


def bench(n: int, d_in: int, expansion: int, epochs: int, batch_size: int,
          device: str) -> dict:
    x = planted(n, d_in, atoms=2 * d_in)
    d_sae = expansion * d_in
    settings = TrainSettings(d_sae=d_sae, k=default_k(d_in, d_sae), epochs=epochs,
                             batch_size=batch_size)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _, m = train_topk_sae(x, settings, progress=False, device=device)
    out = {"n": n, "d_in": d_in, "d_sae": d_sae, "k": settings.k, "epochs": epochs,
           "device": device, "threads": torch.get_num_threads(),
           "seconds": round(m["seconds"], 2),
           "s_per_epoch": round(m["seconds"] / epochs, 3),
           "peak_rss_mb": round(_peak_rss_mb(), 1),
           "data_mb": round(x.numel() * 4 / 2**20, 1),
           "r2": round(m["r2"], 4), "l0": round(m["l0"], 2),
           "dead_fraction": round(m["dead_fraction"], 4)}
    if device == "cuda":
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[50_000])
    ap.add_argument("--d-in", type=int, default=512)
    ap.add_argument("--expansion", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = ap.parse_args(argv)
    for n in args.n:
        print(json.dumps(bench(n, args.d_in, args.expansion, args.epochs, args.batch_size,
                               args.device)))
