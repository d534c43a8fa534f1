"""Train the toy CNN on freshly rendered toy-world scenes.

    python -m cosy_bench.toyworld.training.cnn --seed 0 --steps 2400 \\
        --out cosy_bench/toyworld/weights/toy_cnn.safetensors

Loss: cross-entropy of ``fc`` on the class of the main object (``vocab.CLASS_NAMES``, label
smoothing ``--label-smoothing``: it keeps the logits of the other classes flat, so a class
unit does not fall below its control level on clear images of other classes) plus
``--concept-weight`` times the mean binary cross-entropy of the ``concepts`` units on the
scene's concept targets (units weighted by family, :data:`FAMILY_WEIGHTS`). An absent
concept's target is 0; a present one's grows with its visible area from ``--target-floor``
to 1 (reached at ``--area-saturation`` of the image), so units detect their concept and grade
with how much of it a scene shows.

Every batch is new: scene ``i`` of the run is scene ``i`` of stream ``TRAIN_STREAM + seed``,
so a run is a function of its arguments (and torch's kernels). A share of the scenes is
rendered from required concepts (a class, or one concept), as the toy-world generator renders
explanation prompts. At the end the model is evaluated on fresh held-out scenes
(:func:`evaluate.evaluate`) and with CoSy on true / wrong explanations
(:func:`evaluate.cosy_check`); the metrics go to stdout and to ``OUT`` with suffix ``.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from cosy_bench.toyworld.model import ToyCNN, preprocess, save_toy_cnn
from cosy_bench.toyworld.render import render
from cosy_bench.toyworld.scenes import RENDERER_VERSION, sample_scene, scene_rng
from cosy_bench.toyworld.training.evaluate import cosy_check, evaluate
from cosy_bench.toyworld.vocab import CLASS_NAMES, COLOURS, CONCEPTS, FAMILY_OF, SHAPES

TRAIN_STREAM = 1_000_000
#: Shares of training scenes rendered with a required class / a required single concept.
P_REQUIRED_CLASS = 0.2
P_REQUIRED_CONCEPT = 0.2
#: Weights of the units of each family in the concept loss: patterns (which no class needs)
#: and shapes (hardest on small objects) weigh more.
FAMILY_WEIGHTS: dict[str, float] = {"colour": 1.0, "shape": 2.0, "pattern": 3.0,
                                    "background": 1.0}


def training_batch(seed: int, start: int, n: int, area_saturation: float = 0.25,
                   floor: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scenes ``start .. start + n - 1`` of the training stream of ``seed``.

    The target of a present concept grows with its visible area, from ``floor`` to 1:
    ``floor + (1 - floor) * min(1, area / area_saturation)`` (area as a fraction of the
    image); an absent concept's target is 0. A unit thus separates present from absent and
    fires more the more of its concept a scene shows, as CoSy's close-up prompts assume; with
    ``area_saturation == 0`` the targets are the binary labels.

    Returns:
        ``(x, classes, targets)``: normalised images float32 [n, 3, 64, 64], class indices
        int64 [n], concept targets float32 [n, C] in [0, 1].
    """
    images = np.empty((n, 64, 64, 3), dtype=np.uint8)
    labels = np.empty((n, len(CONCEPTS)), dtype=np.float32)
    classes = np.empty(n, dtype=np.int64)
    for i in range(n):
        rng = scene_rng(TRAIN_STREAM + seed, start + i)
        u = rng.random()
        if u < P_REQUIRED_CLASS:
            required = [str(rng.choice(COLOURS)), str(rng.choice(SHAPES))]
        elif u < P_REQUIRED_CLASS + P_REQUIRED_CONCEPT:
            required = [str(rng.choice(CONCEPTS))]
        else:
            required = []
        r = render(sample_scene(rng, required), rng, with_masks=False)
        images[i], classes[i] = r.image, r.class_index
        if area_saturation > 0:
            graded = floor + (1 - floor) * np.minimum(1.0, r.areas / area_saturation)
            labels[i] = np.where(r.labels, graded, 0.0)
        else:
            labels[i] = r.labels
    return preprocess(images), torch.from_numpy(classes), torch.from_numpy(labels)


class _BatchStream(Dataset):
    """Item ``step`` is the training batch of that step (so a DataLoader worker renders it)."""

    def __init__(self, seed: int, steps: int, batch_size: int, area_saturation: float,
                 floor: float):
        self.seed, self.steps, self.batch_size = seed, steps, batch_size
        self.area_saturation, self.floor = area_saturation, floor

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int):
        return training_batch(self.seed, step * self.batch_size, self.batch_size,
                              self.area_saturation, self.floor)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def train(seed: int = 0, steps: int = 2400, batch_size: int = 64, lr: float = 3e-3,
          concept_weight: float = 10.0, log_every: int = 100, workers: int = 1,
          area_saturation: float = 0.25, floor: float = 0.5, label_smoothing: float = 0.1,
          callback: Callable[[ToyCNN, int], None] | None = None) -> ToyCNN:
    """Train a :class:`ToyCNN` (AdamW, one-cycle schedule) and return it in eval mode.

    Batches are rendered by ``workers`` background processes (0: in this process); the
    result does not depend on ``workers``. ``callback(model, step)`` runs after every
    ``log_every`` steps.
    """
    torch.manual_seed(seed)
    model = ToyCNN().to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=max(steps, 1), pct_start=0.1)
    loader = DataLoader(_BatchStream(seed, steps, batch_size, area_saturation, floor),
                        batch_size=None, shuffle=False,
                        num_workers=workers, worker_init_fn=_worker_init if workers else None,
                        prefetch_factor=4 if workers else None)
    unit_weights = torch.tensor([FAMILY_WEIGHTS[FAMILY_OF[c]] for c in CONCEPTS])
    model.train()
    t0 = time.time()
    running: list[tuple[float, float, float]] = []
    for step, (x, y, labels) in enumerate(loader):
        logits, concept_logits = model.forward_both(x.contiguous(
            memory_format=torch.channels_last))
        ce = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        bce = F.binary_cross_entropy_with_logits(concept_logits, labels, weight=unit_weights)
        loss = ce + concept_weight * bce
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        acc = (logits.argmax(1) == y).float().mean().item()
        running.append((ce.item(), bce.item(), acc))
        if (step + 1) % log_every == 0 or step + 1 == steps:
            ce_m, bce_m, acc_m = np.mean(running, axis=0)
            running.clear()
            print(f"step {step + 1}/{steps}  ce {ce_m:.3f}  bce {bce_m:.4f}  "
                  f"train acc {acc_m:.3f}  {time.time() - t0:.0f}s", flush=True)
            if callback is not None:
                callback(model, step + 1)
                model.train()
    return model.to(memory_format=torch.contiguous_format).eval()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=2400)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--concept-weight", type=float, default=10.0)
    parser.add_argument("--area-saturation", type=float, default=0.25,
                        help="concept area (fraction of the image) whose target is 1; "
                        "0 for binary targets")
    parser.add_argument("--target-floor", type=float, default=0.5,
                        help="concept target of a present concept of (nearly) no area")
    parser.add_argument("--label-smoothing", type=float, default=0.1,
                        help="label smoothing of the class cross-entropy")
    parser.add_argument("--out", type=Path, required=True, help="weights file (.safetensors)")
    parser.add_argument("--eval-size", type=int, default=2000,
                        help="held-out scenes for accuracy / AUROC")
    parser.add_argument("--no-cosy-check", action="store_true",
                        help="skip the CoSy check of true and wrong explanations")
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes rendering batches in the background (0: none)")
    args = parser.parse_args(argv)
    raw = sys.argv[1:] if argv is None else argv
    command = "python -m cosy_bench.toyworld.training.cnn " + shlex.join(raw)

    torch.set_num_threads(args.threads)
    t0 = time.time()
    model = train(args.seed, args.steps, args.batch_size, args.lr, args.concept_weight,
                  args.log_every, args.workers, args.area_saturation, args.target_floor,
                  args.label_smoothing)
    train_seconds = time.time() - t0
    metrics = evaluate(model, n=args.eval_size, seed=args.seed)
    print(f"test accuracy {metrics['accuracy']:.4f} on {metrics['n']} fresh scenes; concept "
          f"AUROC min {metrics['concept_auroc_min']:.4f} mean "
          f"{metrics['concept_auroc_mean']:.4f}")
    worst = sorted(metrics["concept_auroc"].items(), key=lambda kv: kv[1])[:5]
    print("lowest concept AUROCs: " + ", ".join(f"{c} {a:.4f}" for c, a in worst))
    report = {
        "command": command,
        "seed": args.seed,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "concept_weight": args.concept_weight,
        "family_weights": FAMILY_WEIGHTS,
        "area_saturation": args.area_saturation,
        "target_floor": args.target_floor,
        "label_smoothing": args.label_smoothing,
        "train_seconds": round(train_seconds, 1),
        "renderer_version": RENDERER_VERSION,
        "torch": torch.__version__,
        "torch_threads": args.threads,
        "render_workers": args.workers,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "classes": CLASS_NAMES,
        "concepts": CONCEPTS,
        "test": metrics,
    }
    if not args.no_cosy_check:
        check = cosy_check(model)
        for layer in ("concepts", "output"):
            r = check[layer]
            print(f"CoSy {layer}: true explanations AUC mean {r['auc_true_mean']:.4f} min "
                  f"{r['auc_true_min']:.4f}; wrong explanations AUC mean "
                  f"{r['auc_wrong_mean']:.4f}")
        report["cosy_check"] = check
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_toy_cnn(model, args.out, metadata={"command": command, "seed": str(args.seed),
                                            "steps": str(args.steps)})
    report["file_bytes"] = args.out.stat().st_size
    report["total_seconds"] = round(time.time() - t0, 1)
    json_path = args.out.with_suffix(".json")
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"saved {args.out} ({report['file_bytes'] / 1e6:.2f} MB) and {json_path}; "
          f"training {train_seconds:.0f}s, total {report['total_seconds']:.0f}s")
    return report


if __name__ == "__main__":
    main()
