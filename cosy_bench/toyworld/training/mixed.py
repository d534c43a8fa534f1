"""Train the toy CNN's ``mixed`` head (polysemantic units) on the frozen shipped trunk.

    python -m cosy_bench.toyworld.training.mixed --seed 0 \\
        --out cosy_bench/toyworld/weights/toy_mixed.safetensors

The trunk (``toy_cnn.safetensors``) is frozen: its pooled features [N, 128] of ``--scenes``
fresh training scenes (stream ``TRAIN_STREAM + 7 + seed`` of the CNN's training batches,
never the CNN's own stream) are computed once, then the head ``Linear(128, 12)`` is trained
full-batch (Adam, ``--steps``) on

    loss = BCE(u, OR-target) + decode_weight * BCE(D u, labels)

where ``u`` [N, 12] are the head's raw outputs, the OR-target of unit ``k`` is the largest
area-graded target (as the CNN's concept targets) of its planted concepts
``MIXED_UNITS[k]``, and ``D = Linear(12, 25)`` is a read-out trained alongside (then thrown
away) on the 25 binary concept labels: the units must fire for each of their concepts while
keeping all 25 concepts linearly recoverable from the 12 units (superposition).

Measured on ``--eval-size`` fresh test scenes (the evaluation stream of
:mod:`~cosy_bench.toyworld.training.evaluate`): each unit's AUROC for each planted concept
and its largest AUROC for a concept not planted in it; and linear recoverability: per
concept, the test AUROC of a logistic regression (scikit-learn) fitted on the training
scenes' 12 unit activations. All go to stdout and to ``OUT`` with suffix ``.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cosy_bench.toyworld.mixed import MIXED_TRUTH, MIXED_UNITS, membership, save_mixed_head
from cosy_bench.toyworld.model import ToyCNN, load_toy_cnn, preprocess
from cosy_bench.toyworld.render import render_batch_with_classes
from cosy_bench.toyworld.training.cnn import training_batch
from cosy_bench.toyworld.training.evaluate import TEST_STREAM, auroc_columns
from cosy_bench.toyworld.vocab import CONCEPT_INDEX, CONCEPTS

#: offset of the head's training scenes from the CNN's training stream
STREAM_OFFSET = 7


@torch.no_grad()
def trunk_features(model: ToyCNN, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Pooled trunk features float32 [N, 128] of normalised images x [N, 3, 64, 64]."""
    return torch.cat([model.features(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def training_set(model: ToyCNN, seed: int, n: int, chunk: int = 500
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Features [n, 128] and area-graded concept targets [n, 25] of ``n`` training scenes."""
    feats, targets = [], []
    for start in range(0, n, chunk):
        x, _, t = training_batch(seed + STREAM_OFFSET, start, min(chunk, n - start))
        feats.append(trunk_features(model, x))
        targets.append(t)
    return torch.cat(feats), torch.cat(targets)


def or_targets(targets: torch.Tensor) -> torch.Tensor:
    """Target [N, 12] of each unit: the largest target [N, 25] of its planted concepts."""
    m = membership()  # [25, 12]
    return (targets[:, :, None] * m[None]).amax(dim=1)


def train_head(feats: torch.Tensor, targets: torch.Tensor, seed: int = 0, steps: int = 1500,
               lr: float = 1e-2, decode_weight: float = 1.0) -> torch.nn.Linear:
    """The trained head ``Linear(128, 12)`` (see the module docstring for the loss)."""
    torch.manual_seed(seed)
    head = torch.nn.Linear(feats.shape[1], len(MIXED_UNITS))
    decoder = torch.nn.Linear(len(MIXED_UNITS), len(CONCEPTS))
    optimizer = torch.optim.Adam([*head.parameters(), *decoder.parameters()], lr=lr)
    mean, std = feats.mean(0), feats.std(0) + 1e-6
    goal, labels = or_targets(targets), (targets > 0).float()
    for step in range(steps):
        u = head((feats - mean) / std)
        unit_loss = F.binary_cross_entropy_with_logits(u, goal)
        decode_loss = F.binary_cross_entropy_with_logits(decoder(u), labels)
        loss = unit_loss + decode_weight * decode_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % 250 == 0 or step + 1 == steps:
            print(f"step {step + 1}/{steps}  unit bce {unit_loss.item():.4f}  "
                  f"read-out bce {decode_loss.item():.4f}", flush=True)
    with torch.no_grad():  # fold the standardisation into the head
        w = head.weight / std
        b = head.bias - w @ mean
        head.weight.copy_(w)
        head.bias.copy_(b)
    return head.eval().requires_grad_(False)


def measure(model: ToyCNN, head: torch.nn.Linear, train_acts: np.ndarray,
            train_labels: np.ndarray, n: int = 2000, seed: int = 0) -> dict:
    """Unit AUROCs per planted concept and linear recoverability on ``n`` fresh scenes."""
    from sklearn.linear_model import LogisticRegression

    images, labels, _ = render_batch_with_classes(n, TEST_STREAM + seed)
    acts = head(trunk_features(model, preprocess(images))).numpy()
    auroc = auroc_columns(np.repeat(acts, len(CONCEPTS), axis=1),
                          np.tile(labels, (1, acts.shape[1]))).reshape(acts.shape[1], -1)
    units = []
    for k, planted in enumerate(MIXED_UNITS):
        idx = [CONCEPT_INDEX[c] for c in planted]
        others = np.delete(auroc[k], idx)
        units.append({"unit": k, "truth": MIXED_TRUTH[k],
                      "auroc": {c: round(float(auroc[k, i]), 4) for c, i in zip(planted, idx, strict=True)},
                      "max_auroc_other": round(float(np.nanmax(others)), 4)})
    planted_auroc = [a for u in units for a in u["auroc"].values()]
    mean, std = train_acts.mean(0), train_acts.std(0) + 1e-6
    recover = {}
    for j, concept in enumerate(CONCEPTS):
        clf = LogisticRegression(max_iter=2000).fit((train_acts - mean) / std, train_labels[:, j])
        score = clf.decision_function((acts - mean) / std)
        recover[concept] = round(float(auroc_columns(score[:, None], labels[:, [j]])[0]), 4)
    return {"n": n, "stream_seed": TEST_STREAM + seed, "units": units,
            "planted_auroc_mean": float(np.mean(planted_auroc)),
            "planted_auroc_min": float(np.min(planted_auroc)),
            "max_auroc_other_mean": float(np.mean([u["max_auroc_other"] for u in units])),
            "linear_recoverability": recover,
            "linear_recoverability_mean": float(np.mean(list(recover.values()))),
            "linear_recoverability_min": float(np.min(list(recover.values())))}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenes", type=int, default=12000, help="training scenes")
    parser.add_argument("--steps", type=int, default=1500, help="full-batch Adam steps")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--decode-weight", type=float, default=1.0,
                        help="weight of the 25-concept linear read-out loss")
    parser.add_argument("--weights", default="toy_cnn", help="the frozen trunk's weights")
    parser.add_argument("--eval-size", type=int, default=2000, help="fresh test scenes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", type=Path, required=True, help="head file (.safetensors)")
    args = parser.parse_args(argv)
    raw = sys.argv[1:] if argv is None else argv
    command = "python -m cosy_bench.toyworld.training.mixed " + shlex.join(raw)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    model = load_toy_cnn(args.weights, mixed=None)
    feats, targets = training_set(model, args.seed, args.scenes)
    t_feats = time.time() - t0
    head = train_head(feats, targets, args.seed, args.steps, args.lr, args.decode_weight)
    train_seconds = time.time() - t0
    with torch.no_grad():
        train_acts = head(feats).numpy()
    metrics = measure(model, head, train_acts, (targets > 0).numpy(), args.eval_size,
                      args.seed)
    print(f"planted-concept AUROC mean {metrics['planted_auroc_mean']:.4f} min "
          f"{metrics['planted_auroc_min']:.4f}; best other concept AUROC mean "
          f"{metrics['max_auroc_other_mean']:.4f}; linear recoverability of 25 concepts "
          f"mean {metrics['linear_recoverability_mean']:.4f} min "
          f"{metrics['linear_recoverability_min']:.4f}")
    save_mixed_head(head, args.out, metadata={"command": command, "seed": str(args.seed)})
    report = {"command": command, "seed": args.seed, "scenes": args.scenes,
              "steps": args.steps, "lr": args.lr, "decode_weight": args.decode_weight,
              "trunk": args.weights, "units": MIXED_TRUTH,
              "feature_seconds": round(t_feats, 1), "train_seconds": round(train_seconds, 1),
              "torch": torch.__version__, "torch_threads": args.threads,
              "n_parameters": sum(p.numel() for p in head.parameters()),
              "test": metrics, "file_bytes": args.out.stat().st_size,
              "total_seconds": round(time.time() - t0, 1)}
    json_path = args.out.with_suffix(".json")
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"saved {args.out} and {json_path}; total {report['total_seconds']:.0f}s")
    return report


if __name__ == "__main__":
    main()
