"""Train the toy CLIP contrastively on freshly rendered toy-world scenes.

    python -m cosy_bench.toyworld.training.clip --seed 0 --steps 2000 \
        --out cosy_bench/toyworld/weights/toy_clip.safetensors

Data. Every step renders a new batch of scenes (:func:`training_scene`: scene ``i`` of the
training stream is a pure function of ``(seed, i)``) and one caption per scene
(:func:`make_caption`), drawn from several phrasings so that both sentences and bare concept
words embed near matching images:

* full descriptions, ``"a photo of a red striped circle and a blue square on grass"``;
* partial descriptions of the main object, ``"a striped circle"``, ``"a red shape in the sky"``;
* single concepts, mostly the bare word (``"stripes"``, ``"red"``, ``"grass"``), sometimes a
  synonym from ``vocab.SYNONYMS`` or a short template (``"a photo of stripes"``).

Half of the scenes come in *shape pairs*: two renderings of one scene that differ only in the
main object's shape, with captions naming that shape (hard negatives: only the shape tells
them apart). Besides the batch's captions, every step embeds the 25 bare concept words
(``vocab.CONCEPTS``) as extra texts without an image of their own.

Loss (:func:`contrastive_loss`): open_clip's :class:`open_clip.ClipLoss` (symmetric InfoNCE),
generalised to weighted sets of positives (:class:`MultiPositiveClipLoss`; with one positive
per row it equals ``ClipLoss``), applied

* to images against the batch's captions: a caption such as ``"red"`` is true of every red
  scene in the batch, so those pairs are not treated as negatives; whether caption ``j`` is
  true of scene ``i`` is decided exactly from the scene specs (attributes bound per object,
  visible objects only);
* to images against the bare concept words of one family at a time (colours, shapes,
  patterns, backgrounds): a word's weight for a scene is the concept's visible area relative
  to the largest concept of its family there (:func:`concept_weights`), so the main object's
  colour and shape rank first.

The terms are weighted (:data:`CAPTION_WEIGHT`, :data:`FAMILY_WEIGHTS`). Colours, patterns and
backgrounds are picked up within a few hundred steps; shapes need global structure and, with
the tiny vision tower's features shared by all families, are learnt only when the shape term
and the shape pairs dominate the gradient, and still last.

Token-embedding rows of tokens that no caption can contain are initialised to zero and stay
zero, which is what lets :func:`cosy_bench.toyworld.clip.save_compact` ship only the used
rows. The run is deterministic given ``--seed`` and ``--threads`` (float reductions depend
on the thread count). At the end the compact weights are written to ``--out``, reloaded
through open_clip's factory (:func:`cosy_bench.toyworld.clip.load_toy_clip`), evaluated on
fresh scenes of a separate stream, and the metrics are printed and saved beside the weights
(``--out`` with suffix ``.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import open_clip
import torch
from torch import Tensor, nn

from cosy_bench.cache.store import write_text_atomic
from cosy_bench.toyworld import clip as toy_clip
from cosy_bench.toyworld.render import render
from cosy_bench.toyworld.scenes import Rendered, sample_scene, scene_rng
from cosy_bench.toyworld.training.captions import (
    Caption,
    caption_vocabulary,
    make_caption,
    truth_matrix,
)
from cosy_bench.toyworld.vocab import (
    CONCEPT_INDEX,
    CONCEPTS,
    FAMILIES,
    SHAPES,
)

#: Seed of the evaluation stream (scenes never used in training for any small --seed).
EVAL_SEED = 1_000_003
#: The training stream of ``--seed s`` is ``s * STREAM_STRIDE`` (keeps it clear of EVAL_SEED).
STREAM_STRIDE = 7

#: Probability that scenes ``2k``, ``2k + 1`` of a training stream differ only in the main
#: object's shape (see :func:`training_scene`).
P_SHAPE_PAIR = 0.5
#: Weight of the caption term of :func:`contrastive_loss`.
CAPTION_WEIGHT = 0.5
#: Weights of the concept-word terms per family. With equal weights the shape term barely
#: moves in 600 steps (zero-shot shape accuracy near chance) while colours and backgrounds
#: are solved; with colour down to 0.25 the colours are lost instead.
FAMILY_WEIGHTS: dict[str, float] = {"colour": 1.0, "shape": 4.0, "pattern": 2.0,
                                    "background": 0.25}
class MultiPositiveClipLoss(open_clip.ClipLoss):
    """open_clip's ``ClipLoss`` with weighted sets of positives per image and per text.

    ``positives[i, j] >= 0`` is how strongly text ``j`` describes image ``i``; the target
    distribution of image ``i`` over the texts is row ``i`` normalised, that of text ``j`` over
    the images is column ``j`` normalised. Rows / columns without any positive are left out
    of the mean. With ``positives`` the identity (or None) this is exactly ``ClipLoss``; the
    number of texts may differ from the number of images.
    """

    def forward(self, image_features: Tensor, text_features: Tensor, logit_scale: Tensor,
                positives: Tensor | None = None, logit_bias: Tensor | None = None,
                output_dict: bool = False):
        """Symmetric cross-entropy against ``positives`` float/bool ``[n_images, n_texts]``."""
        if positives is None:
            return super().forward(image_features, text_features, logit_scale,
                                   logit_bias=logit_bias, output_dict=output_dict)
        logits_per_image, logits_per_text = self.get_logits(
            image_features, text_features, logit_scale, logit_bias=logit_bias)
        pos = positives.to(logits_per_image.dtype)
        loss = (_soft_cross_entropy(logits_per_image, pos)
                + _soft_cross_entropy(logits_per_text, pos.T)) / 2
        return {"contrastive_loss": loss} if output_dict else loss


def _soft_cross_entropy(logits: Tensor, weights: Tensor) -> Tensor:
    """Mean over rows with some positive weight of ``CE(logits_row, weights_row / sum)``."""
    total = weights.sum(dim=1, keepdim=True)
    keep = total.squeeze(1) > 0
    targets = weights[keep] / total[keep]
    return nn.functional.cross_entropy(logits[keep], targets)


def contrastive_loss(loss_fn: MultiPositiveClipLoss, image_features: Tensor,
                     caption_features: Tensor, concept_features: Tensor, logit_scale: Tensor,
                     truth: Tensor, weights: Tensor, caption_weight: float = CAPTION_WEIGHT,
                     family_weights: dict[str, float] | None = None) -> Tensor:
    """The training objective: captions against images, plus concept words per family.

    ``caption_weight`` times ``loss_fn`` over all images and captions (positives ``truth``),
    plus, for each concept family ``f``, ``family_weights[f]`` times ``loss_fn`` over all
    images and that family's bare concept words (positives ``weights``, see
    :func:`concept_weights`): each image is contrasted with the words of one family at a time
    (a prompt-free zero-shot classifier whose weights are text embeddings), and each word with
    the images of the batch. Default weights :data:`FAMILY_WEIGHTS`.

    Args:
        image_features: ``[n, d]``; caption_features: ``[n, d]`` (caption ``j`` of scene ``j``);
        concept_features: ``[C, d]`` in ``vocab.CONCEPTS`` order; truth: bool ``[n, n]``;
        weights: float ``[n, C]``.
    """
    family_weights = FAMILY_WEIGHTS if family_weights is None else family_weights
    loss = caption_weight * loss_fn(image_features, caption_features, logit_scale,
                                    positives=truth)
    for family, members in FAMILIES.items():
        cols = [CONCEPT_INDEX[c] for c in members]
        if family_weights[family] and weights[:, cols].sum() > 0:
            loss = loss + family_weights[family] * loss_fn(
                image_features, concept_features[cols], logit_scale, positives=weights[:, cols])
    return loss


def concept_weights(scenes: Sequence[Rendered]) -> np.ndarray:
    """float ``[n, C]``: how strongly each bare concept word describes each scene.

    0 where the concept is absent; else its visible area relative to the largest concept of
    the same family in the scene (1 for the dominant colour / shape / pattern / background,
    less for smaller objects), so that the main object's attributes rank first.
    """
    areas = np.stack([s.masks.sum(axis=(1, 2)) for s in scenes]).astype(np.float64)
    areas *= np.stack([s.labels for s in scenes])
    out = np.zeros_like(areas)
    for members in FAMILIES.values():
        cols = [CONCEPT_INDEX[c] for c in members]
        top = areas[:, cols].max(axis=1, keepdims=True)
        out[:, cols] = np.divide(areas[:, cols], top, out=np.zeros_like(areas[:, cols]),
                                 where=top > 0)
    return out


# ----------------------------------------------------------------------------- training


def training_scene(stream: int, index: int) -> tuple[Rendered, bool]:
    """Scene ``index`` of a training stream (a pure function of its arguments).

    One scene in five is rendered with one required concept (uniform over ``CONCEPTS``) so
    that close-ups and background-dominated scenes are common. Scenes ``2k`` and ``2k + 1``
    form a *shape pair* with probability :data:`P_SHAPE_PAIR`: scene ``2k + 1`` is scene
    ``2k`` with another shape for the main object, drawn with the same textures and noise, a
    hard negative that only the shape tells apart.

    Returns:
        ``(scene, paired)``; the scene keeps its concept masks (for :func:`concept_weights`).
    """
    leader = index - index % 2
    pair_rng = np.random.default_rng([stream, leader, 2])
    paired = bool(pair_rng.random() < P_SHAPE_PAIR)
    rng = np.random.default_rng([stream, leader if paired else index, 1])
    required = [CONCEPTS[int(rng.integers(len(CONCEPTS)))]] if rng.random() < 0.2 else None
    scene_rng_ = scene_rng(stream, leader if paired else index)
    spec = sample_scene(scene_rng_, required or ())
    if paired and index != leader:
        shape = str(pair_rng.choice([s for s in SHAPES if s != spec.main.shape]))
        spec = dataclasses.replace(
            spec, objects=(dataclasses.replace(spec.main, shape=shape), *spec.objects[1:]))
    return render(spec, scene_rng_, with_masks=True), paired


def render_training_batch(stream: int, start: int, n: int,
                          ) -> tuple[np.ndarray, list[Rendered], list[Caption]]:
    """Scenes ``start .. start + n - 1`` of a training stream (:func:`training_scene`) and one
    caption each (:func:`make_caption`; the scenes of a shape pair get captions naming the
    main object's shape)."""
    scenes, captions = [], []
    for index in range(start, start + n):
        scene, paired = training_scene(stream, index)
        scenes.append(scene)
        captions.append(make_caption(scene, np.random.default_rng([stream, index, 3]),
                                     name_shape=paired))
    return np.stack([s.image for s in scenes]), scenes, captions


def _zero_unused_embedding_rows(model: nn.Module, tokenizer, generator: torch.Generator,
                                ) -> set[int]:
    """Re-initialise the token embedding: N(0, 0.02) rows for caption tokens, zero elsewhere."""
    tokens = tokenizer(caption_vocabulary())
    used = sorted({int(t) for t in tokens.flatten().tolist() if t != 0})
    weight = model.token_embedding.weight
    with torch.no_grad():
        weight.zero_()
        weight[used] = torch.randn(len(used), weight.shape[1], generator=generator) * 0.02
    return set(used)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """open_clip's split: no weight decay on gains, biases, embeddings and logit_scale."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        exclude = (p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name
                   or "logit_scale" in name or "embedding" in name)
        (no_decay if exclude else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def train(seed: int = 0, steps: int = 2000, batch_size: int = 128, lr: float = 2e-3,
          weight_decay: float = 0.1, warmup: int = 50, log_every: int = 50,
          caption_weight: float = CAPTION_WEIGHT, family_weights: dict[str, float] | None = None,
          eval_every: int = 0) -> tuple[nn.Module, dict]:
    """Train a toy CLIP from scratch; returns ``(model, stats)`` (model in eval mode).

    ``caption_weight`` and ``family_weights`` weigh the terms of :func:`contrastive_loss`;
    ``eval_every > 0`` prints a quick zero-shot evaluation (300 scenes) every that many steps.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = open_clip.create_model(toy_clip.TOY_CLIP_NAME, force_preprocess_cfg={
        "mean": toy_clip.TOY_CLIP_MEAN, "std": toy_clip.TOY_CLIP_STD})
    tokenizer = open_clip.get_tokenizer(toy_clip.TOY_CLIP_NAME)
    used = _zero_unused_embedding_rows(model, tokenizer, generator)
    optimizer = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.98),
                                  eps=1e-6)
    loss_fn = MultiPositiveClipLoss()
    stream = seed * STREAM_STRIDE
    model.train()
    t0, history, running = time.time(), [], []
    for step in range(steps):
        scale = min(1.0, (step + 1) / max(1, warmup))
        scale *= 0.5 * (1 + math.cos(math.pi * step / max(1, steps)))
        for group in optimizer.param_groups:
            group["lr"] = lr * scale
        images, scenes, captions = render_training_batch(stream, step * batch_size, batch_size)
        x = toy_clip.images_to_tensor(images, model)
        tokens = tokenizer([c.text for c in captions] + CONCEPTS)
        unplanned = set(tokens.unique().tolist()) - used - {0}
        if unplanned:
            raise RuntimeError(f"caption tokens outside caption_vocabulary(): {unplanned}")
        truth = torch.from_numpy(truth_matrix(scenes, captions))
        weights = torch.from_numpy(concept_weights(scenes)).float()
        image_features, text_features, logit_scale = model(x, tokens)
        loss = contrastive_loss(loss_fn, image_features, text_features[:len(captions)],
                                text_features[len(captions):], logit_scale, truth, weights,
                                caption_weight=caption_weight,
                                family_weights=family_weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        running.append(loss.item())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            avg = float(np.mean(running))
            history.append({"step": step + 1, "loss": avg, "seconds": time.time() - t0})
            print(f"step {step + 1:5d}/{steps}  loss {avg:.4f}  "
                  f"logit_scale {model.logit_scale.exp().item():.1f}  "
                  f"{time.time() - t0:.0f}s", flush=True)
            running = []
        if eval_every > 0 and (step + 1) % eval_every == 0:
            model.eval()
            quick = toy_clip.evaluate(model, tokenizer, n=300, seed=EVAL_SEED + 1)
            model.train()
            print("  zero-shot " + "  ".join(f"{f} {a:.3f}" for f, a in quick["zero_shot"].items())
                  + f"  auroc_mean {quick['auroc_mean']:.3f}", flush=True)
    model.eval()
    stats = {"train_seconds": time.time() - t0, "history": history,
             "trained_token_rows": len(used)}
    return model, stats


def _parse_weights(text: str) -> dict[str, float]:
    """``"colour=0.25,shape=4"`` -> weights for every family (unnamed ones keep defaults)."""
    weights = dict(FAMILY_WEIGHTS)
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        if name.strip() not in weights:
            raise argparse.ArgumentTypeError(f"unknown family {name!r}; known: {list(weights)}")
        weights[name.strip()] = float(value)
    return weights


def main(argv: Sequence[str] | None = None) -> dict:
    """Command line: train, save compact weights + metrics JSON, print the metrics."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (results are reproducible per thread count)")
    parser.add_argument("--caption-weight", type=float, default=CAPTION_WEIGHT)
    parser.add_argument("--family-weights", type=_parse_weights, default=dict(FAMILY_WEIGHTS),
                        help="concept-word loss weights, e.g. colour=0.25,shape=4,pattern=2,"
                             "background=0.25")
    parser.add_argument("--eval-every", type=int, default=0,
                        help="print a quick zero-shot evaluation every N steps (0: off)")
    parser.add_argument("--eval-images", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=toy_clip.WEIGHTS_PATH)
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="cache root for the materialised checkpoint (default: cosy cache)")
    args = parser.parse_args(argv)

    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        model, stats = train(seed=args.seed, steps=args.steps, batch_size=args.batch_size,
                             lr=args.lr, log_every=max(1, min(50, args.steps // 10)),
                             caption_weight=args.caption_weight,
                             family_weights=args.family_weights, eval_every=args.eval_every)
    finally:
        torch.set_num_threads(threads)
    out = toy_clip.save_compact(model, args.out, metadata={
        "seed": str(args.seed), "steps": str(args.steps), "batch_size": str(args.batch_size)})

    # Evaluate what ships: the compact file loaded back through open_clip's factory.
    loaded, _, tokenizer = toy_clip.load_toy_clip(weights=out, cache_dir=args.cache_dir)
    metrics = toy_clip.evaluate(loaded, tokenizer, n=args.eval_images, seed=EVAL_SEED)
    report = {
        "model_name": toy_clip.TOY_CLIP_NAME,
        "model_config": toy_clip.model_config(),
        "weights": out.name,
        "weights_bytes": out.stat().st_size,
        "command": (f"python -m cosy_bench.toyworld.training.clip --seed {args.seed} "
                    f"--steps {args.steps} --batch-size {args.batch_size} --lr {args.lr} "
                    f"--caption-weight {args.caption_weight} --family-weights "
                    + ",".join(f"{k}={v:g}" for k, v in args.family_weights.items())
                    + f" --threads {args.threads} --eval-images {args.eval_images}"
                    + (f" --eval-every {args.eval_every}" if args.eval_every else "")),
        "seed": args.seed, "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
        "caption_weight": args.caption_weight, "family_weights": args.family_weights,
        "p_shape_pair": P_SHAPE_PAIR, "threads": args.threads,
        "versions": {"torch": torch.__version__, "open_clip": open_clip.__version__},
        **stats,
        "eval": metrics,
    }
    write_text_atomic(out.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
    print(json.dumps({"zero_shot": metrics["zero_shot"],
                      "auroc_mean": round(metrics["auroc_mean"], 4),
                      "auroc_min": round(metrics["auroc_min"], 4),
                      "weights_bytes": report["weights_bytes"],
                      "train_seconds": round(stats["train_seconds"], 1)}, indent=2))
    return report


if __name__ == "__main__":
    main()
