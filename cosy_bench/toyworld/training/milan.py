"""Train the toy world's MILAN decoder and language model (the ``toyworld`` checkpoint).

MILAN learns from MILANNOTATIONS: exemplar sets of real units with human descriptions. The
toy world's annotations are made the same way from *planted* units, never from the units
the suite evaluates: each planted unit detects one toy concept (an atomic concept, or a
colour-shape pair), its activation map is the concept's pixel mask pooled to the 8 x 8 grid
of a conv layer, scaled, mixed with a weaker response to a random other concept and with
noise; its exemplars are its top-15 scenes of a random half of a training pool (a scene
stream of its own seed), masked where the map exceeds its 0.99 quantile, as MILAN's
exemplars are; its descriptions are phrases generated from its concept ("red objects",
"stripes pattern", "grass background"). The encoder is the pyramid of the shipped toy CNN's
conv blocks; the captioner and LM are MILAN's architecture at smaller sizes.

    python -m cosy_bench.toyworld.training.milan --seed 0 \\
        --out cosy_bench/toyworld/weights/toy_milan.safetensors
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cosy_bench.explainers.milan.checkpoints import build, save_safetensors
from cosy_bench.explainers.milan.model import Captioner, Vocabulary
from cosy_bench.toyworld.render import render_scene
from cosy_bench.toyworld.vocab import CONCEPTS, FAMILIES, FAMILY_OF

log = logging.getLogger("cosy_bench.toyworld")

POOL_SEED = 2718  # the training pool's scene stream (probe: 777, control: 12345)
GRID = 8  # activation-map side of the planted units (toy CNN conv4: 8 x 8)

TEMPLATES = {
    "colour": ["{} objects", "{} things", "{} color", "{}"],
    "shape": ["{} shapes", "{}s", "{} shaped objects", "{}"],
    "pattern": ["{} pattern", "{} texture", "objects with {}", "{}"],
    "background": ["{} background", "{} in the background", "scenes with {}", "{}"],
    "pair": ["{} {} shapes", "{} {}s", "{} {} objects", "{} {}"],
}
#: PMI weights tried on the held-out planted units; the best is stored in the checkpoint
TEMPERATURES = (0.0, 0.05, 0.1, 0.2, 0.3)
# forms whose plural would not read back as the concept (``record.names_concept``)
NO_PLURAL = {"cross", "dots", "stripes"}


def targets() -> list[tuple[str, ...]]:
    """Every planted concept: the atomic ones, then each (colour, shape) pair."""
    atoms = [(c,) for c in CONCEPTS]
    pairs = [(c, s) for c in FAMILIES["colour"] for s in FAMILIES["shape"]]
    return atoms + pairs


def phrases(target: tuple[str, ...]) -> list[str]:
    """The descriptions a planted unit of ``target`` may get."""
    if len(target) == 2:
        colour, shape = target
        out = [t.format(colour, shape) for t in TEMPLATES["pair"]]
        return [p for p in out if not (shape in NO_PLURAL and f"{shape}s" in p)]
    (concept,) = target
    out = [t.format(concept) for t in TEMPLATES[FAMILY_OF[concept]]]
    return [p for p in out if not (concept in NO_PLURAL and f"{concept}s" in p)]


def render_pool(n: int, seed: int = POOL_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 [n, 64, 64, 3] and pooled concept maps float [n, T, 8, 8] of every
    target of :func:`targets` (pair maps: pixels both of the colour and of the shape)."""
    tg = targets()
    index = {c: i for i, c in enumerate(CONCEPTS)}
    images = np.empty((n, 64, 64, 3), dtype=np.uint8)
    maps = torch.empty(n, len(tg), GRID, GRID)
    for i in range(n):
        r = render_scene(seed, i)
        images[i] = r.image
        m = torch.from_numpy(r.masks)
        full = torch.stack([m[index[t[0]]] if len(t) == 1 else m[index[t[0]]] & m[index[t[1]]]
                            for t in tg]).float()
        maps[i] = F.adaptive_avg_pool2d(full[None], GRID)[0]
    return torch.from_numpy(images), maps


def planted_units(maps: torch.Tensor, per_target: int, k: int, rng: torch.Generator,
                  quantile: float = 0.99):
    """Planted units: per target ``per_target`` units. Returns target ids [U], exemplar
    indices [U, k] into the pool and exemplar masks bool [U, k, 64, 64]."""
    n, t = maps.shape[:2]
    ids, tops, masks = [], [], []
    for target in range(t):
        for _ in range(per_target):
            subset = torch.randperm(n, generator=rng)[: n // 2]
            other = int(torch.randint(t, (1,), generator=rng))
            mix = float(torch.rand(1, generator=rng)) * 0.3
            noise = 0.02 + float(torch.rand(1, generator=rng)) * 0.1
            act = (maps[subset, target] + mix * maps[subset, other]
                   + noise * torch.randn(len(subset), GRID, GRID, generator=rng))
            level = torch.quantile(act.flatten(), quantile)
            best = act.flatten(1).amax(1).topk(k).indices
            up = F.interpolate(act[best][:, None], size=64, mode="bilinear",
                               align_corners=False)[:, 0]
            ids.append(target)
            tops.append(subset[best])
            masks.append(up > level)
    return torch.tensor(ids), torch.stack(tops), torch.stack(masks)


@torch.no_grad()
def encode_units(captioner: Captioner, images: torch.Tensor, tops: torch.Tensor,
                 masks: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """Exemplar features [U, k, F] of pool images (uint8 [N, 64, 64, 3]) under masks."""
    flat_idx, flat_masks = tops.flatten(), masks.flatten(0, 1)
    out = []
    for s in range(0, len(flat_idx), chunk):
        x = images[flat_idx[s:s + chunk]].permute(0, 3, 1, 2).float() / 255.0
        out.append(captioner.encoder(x, flat_masks[s:s + chunk, None].float()))
    return torch.cat(out).view(*tops.shape, -1)


def build_captioner(words: list[str], seed: int) -> Captioner:
    torch.manual_seed(seed)
    from cosy_bench.toyworld.model import load_toy_cnn

    model = build({"words": words, "encoder": "toy_cnn", "embedding_size": 64,
                   "hidden_size": 128, "dropout": 0.2, "length": 8, "temperature": 0.2,
                   "beam_size": 20, "lm": {"embedding_size": 64, "hidden_size": 128,
                                            "layers": 2, "dropout": 0.2}})
    trunk = {k: v for k, v in load_toy_cnn("toy_cnn").state_dict().items()
             if not k.startswith("mixed.")}  # the encoder's ToyCNN has no mixed head
    model.encoder.encoder.model.load_state_dict(trunk)
    return model


def train(seed: int = 0, pool: int = 3000, per_target: int = 24, annotations: int = 3,
          epochs: int = 30, batch_size: int = 64, lr: float = 2e-3, max_steps: int | None = None,
          out: str | Path | None = None) -> dict:
    """Build the annotations, train the LM and the captioner, report held-out accuracy,
    save to ``out``. Returns the metrics."""
    t0 = time.time()
    rng = torch.Generator().manual_seed(seed)
    tg = targets()
    images, maps = render_pool(pool)
    ids, tops, masks = planted_units(maps, per_target, 15, rng)
    texts = [[phrases(tg[int(i)])[int(j)] for j in
              torch.randint(len(phrases(tg[int(i)])), (annotations,), generator=rng)]
             for i in ids]
    counts = Counter(w for ts in texts for s in ts for w in Vocabulary.tokenize(s))
    words = [w for w, _ in counts.most_common()]
    model = build_captioner(words, seed)
    features = encode_units(model, images, tops, masks)
    log.info("%d planted units of %d concepts, %d words; encoded in %.1f s", len(ids),
             len(tg), len(words), time.time() - t0)

    # hold out 10% of the units (whole units, as MILAN splits by neuron)
    order = torch.randperm(len(ids), generator=rng)
    n_val = max(1, len(ids) // 10)
    val, fit = order[:n_val], order[n_val:]
    pairs = [(int(u), s) for u in fit for s in texts[int(u)]]
    tokens = model.vocab.encode([s for _, s in pairs])
    unit_of = torch.tensor([u for u, _ in pairs])

    steps = 0
    lm_opt = torch.optim.AdamW(model.lm.parameters(), lr=lr)
    cap_params = [p for n, p in model.named_parameters()
                  if not n.startswith(("encoder.", "lm."))]
    opt = torch.optim.AdamW(cap_params, lr=lr)
    pad = model.vocab.pad
    for _epoch in range(epochs):
        model.train()
        model.encoder.eval()
        perm = torch.randperm(len(pairs), generator=rng)
        for s in range(0, len(perm), batch_size):
            b = perm[s:s + batch_size]
            tok = tokens[b]
            lm_lp = model.lm(tok)[:, :-1]
            lm_loss = F.nll_loss(lm_lp.reshape(-1, lm_lp.shape[-1]), tok[:, 1:].reshape(-1),
                                 ignore_index=pad)
            lm_opt.zero_grad()
            lm_loss.backward()
            lm_opt.step()
            lp, att = model(features[unit_of[b]], tok)
            loss = F.nll_loss(lp.reshape(-1, lp.shape[-1]), tok[:, 1:].reshape(-1),
                              ignore_index=pad)
            loss = loss + ((1 - att.sum(dim=1)) ** 2).mean()  # doubly stochastic attention
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            if max_steps is not None and steps >= max_steps:
                break
        if max_steps is not None and steps >= max_steps:
            break
    model.eval()
    from cosy_bench.record import names_concept

    # choose the PMI weight on half of the held-out units, as MILAN chose its λ on validation
    # data (most units named, then most described by one of their own phrases; ties go to
    # the weight nearest MILAN's 0.2), and report on the other half
    def evaluate(units: torch.Tensor, temperature: float) -> tuple[float, float]:
        described = model.describe(features[units], temperature=temperature)
        truth = [tg[int(ids[u])] for u in units.tolist()]
        named = [names_concept(d["description"], " ".join(t))
                 for d, t in zip(described, truth, strict=True)]
        exact = [d["description"] in phrases(t) for d, t in zip(described, truth, strict=True)]
        return float(np.mean(named)), float(np.mean(exact))

    select, report = val[: len(val) // 2], val[len(val) // 2:]
    tried = {t: evaluate(select, t) for t in TEMPERATURES}
    best = max(TEMPERATURES, key=lambda t: (tried[t], -abs(t - 0.2)))
    model.temperature = best
    accuracy, exact = evaluate(report, best)
    metrics = {"held_out_units": len(report), "held_out_accuracy": accuracy,
               "held_out_exact_phrase": exact, "temperature": best,
               "selection_units": len(select),
               "selection_per_temperature": {str(t): v for t, v in tried.items()},
               "train_units": len(fit), "steps": steps, "lm_loss": round(lm_loss.item(), 4),
               "caption_loss": round(loss.item(), 4), "seconds": round(time.time() - t0, 1)}
    log.info("toy MILAN: %s", metrics)
    if out is not None:
        command = (f"python -m cosy_bench.toyworld.training.milan --seed {seed} --pool {pool} "
                   f"--per-target {per_target} --epochs {epochs}"
                   + (f" --max-steps {max_steps}" if max_steps is not None else "")
                   + f" --out {out}")
        save_safetensors(model, out, metadata={"command": command,
                                               **{k: str(v) for k, v in metrics.items()}})
        write_record(out, {"command": command, "seed": seed, **metrics})
    return metrics


def write_record(out: str | Path, record: dict) -> Path:
    """The JSON beside a shipped weights file (as for the toy CNN and CLIP): its training
    command and measured figures, plus the file's size."""
    from cosy_bench.cache.store import write_text_atomic

    out = Path(out)
    record = {**record, "file": out.name, "file_bytes": out.stat().st_size}
    path = out.with_suffix(".json")
    write_text_atomic(path, json.dumps(record, indent=2) + "\n")
    return path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pool", type=int, default=3000)
    ap.add_argument("--per-target", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    metrics = train(seed=args.seed, pool=args.pool, per_target=args.per_target,
                    epochs=args.epochs, max_steps=args.max_steps, out=args.out)
    print(metrics)


if __name__ == "__main__":
    main()
