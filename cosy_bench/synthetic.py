"""The synthetic images of a run and the layer's activations on them: per explanation its
work items (image ``i`` of a prompt has a seed and a file of its own), synthesis and concept
activations claimed concept by concept (jobs sharing a cache split the work), and
``n_images=auto``'s rounds, stopped by each neuron's AUC interval."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from cosy_bench.cache.checked import load_tensors_checked
from cosy_bench.cache.claims import split_work
from cosy_bench.cache.store import (
    Cache,
    save_tensors_atomic,
    stable_hash,
)
from cosy_bench.cache.structure import expect_tensors
from cosy_bench.context import RunContext
from cosy_bench.data.datasets import ImageFiles
from cosy_bench.distributed.ranks import is_rank_zero
from cosy_bench.generators.base import Generator, image_seed
from cosy_bench.loops.activations import collect_activations
from cosy_bench.loops.synthesis import WorkItem, pending, synthesize
from cosy_bench.prompts import make_prompt
from cosy_bench.scorers.sorted import SortedControl
from cosy_bench.scorers.stopping import decided

log = logging.getLogger("cosy_bench")


def work_items(cache: Cache, generator: Generator, template: str, concepts: list[str],
               n_images: int) -> dict[str, list[WorkItem]]:
    """Per concept, its ``n_images`` work items; files keyed by (generator, prompt, index)."""
    gen_key = stable_hash(generator.cache_key)
    out = {}
    for concept in concepts:
        prompt = make_prompt(template, concept)
        folder = cache.root / "images" / gen_key / stable_hash(prompt)
        out[concept] = [WorkItem(concept, prompt, i, image_seed(concept, prompt, i),
                                 str(folder / f"{i:05d}.png")) for i in range(n_images)]
    return out


def _concept_path(ctx: RunContext, generator: Generator, its: list[WorkItem]) -> Path:
    key = stable_hash({**ctx.model_key, "generator": stable_hash(generator.cache_key),
                       "prompt": its[0].prompt, "n": len(its)})
    return ctx.cache.path("concept_activations", key, ".safetensors")


#: images per claimed share of the synthesis and concept-activation work
SHARE_IMAGES = 200


def _share(n_images: int) -> int:
    """Concepts per claim: about :data:`SHARE_IMAGES` images, so that jobs started together
    split the concepts while each predict loop still gets several batches."""
    return max(1, SHARE_IMAGES // max(1, n_images))


def synthesise(ctx: RunContext, generator: Generator, items: dict[str, list[WorkItem]]) -> int:
    """Generate the missing images of ``items``, concept by concept under claims, so that jobs
    sharing the cache split the concepts. Returns how many images this job generated."""
    generated = 0
    all_items = [it for its in items.values() for it in its]
    missing = pending(all_items) if is_rank_zero() else []  # verified; damaged moved aside
    log.info("synthesis: %d images needed, %d cached, %d to generate", len(all_items),
             len(all_items) - len(missing), len(missing))
    # one bar for the stage (images), not one per claimed share of concepts
    bar = ctx.stage_bar("synthesis", "images", len(missing), per_batch=True)
    trainer = ctx.quiet_trainer([bar])
    unchecked = {it.concept for it in missing}
    seen: set[str] = set()

    def done(concept: str) -> bool:  # the first look is the check above; later ones look again
        if concept not in seen:
            seen.add(concept)
            return concept not in unchecked
        return not pending(items[concept])

    def work(concepts: list[str]) -> None:
        nonlocal generated
        generated += synthesize(generator, [it for c in concepts for it in items[c]], trainer,
                                batch_size=ctx.cfg.generator_batch_size)

    with bar:
        split_work(list(items), done, work,
                   path_of=lambda c: Path(items[c][0].path).parent,
                   chunk=_share(ctx.cfg.n_images), what="synthesis")
    return generated


def concept_activations(ctx: RunContext, generator: Generator, items: dict[str, list[WorkItem]]
                        ) -> dict[str, torch.Tensor]:
    """Per concept, activations [M, K] of the layer on its synthetic images (cached, each
    concept computed by one of the jobs sharing the cache, under a claim)."""
    paths = {concept: _concept_path(ctx, generator, its) for concept, its in items.items()}
    out: dict[str, torch.Tensor] = {}
    trainer = ctx.quiet_trainer()
    first_look: dict[str, bool] = {}  # the concepts to compute, as split_work first saw them

    def cached(concept: str) -> bool:
        ok = load_tensors_checked(paths[concept], check=check(concept)) is not None
        first_look.setdefault(concept, ok)
        return ok

    # one bar for the stage (one set of activations per explanation), one line
    bar = ctx.stage_bar("concept activations", "sets",
                        lambda: sum(not ok for ok in first_look.values()))

    def check(concept: str):  # activations float [M, K] of the concept's M images
        return lambda t: expect_tensors(t, {"activations": (2, "float")},
                                        {"activations": (len(items[concept]),
                                                         ctx.num_neurons or None)})

    def work(concepts: list[str]) -> None:
        # one pass per concept: its batches never depend on which concepts share the claim,
        # so a concept's activations are the same bytes whichever job or rerun makes them
        if not bar.done and is_rank_zero():
            log.info("concept activations: computing %d sets",
                     sum(not ok for ok in first_look.values()))
        for c in concepts:
            files = [Path(it.path) for it in items[c]]
            acts, index = collect_activations(ctx.extractor, ImageFiles(files),
                                              ctx.model.transform, trainer,
                                              batch_size=ctx.cfg.batch_size,
                                              num_workers=ctx.cfg.num_workers,
                                              precision=ctx.cfg.get("precision"))
            if len(index) != len(files):
                raise RuntimeError(f"{len(files) - len(index)} synthetic images could not be "
                                   f"read; delete them from {ctx.cache.root / 'images'} and "
                                   "run again")
            out[c] = acts
            if is_rank_zero():
                save_tensors_atomic(paths[c], {"activations": acts})
            bar.advance(1)

    with bar:
        computed = split_work(list(items), cached, work, path_of=paths.__getitem__,
                              chunk=_share(ctx.cfg.n_images), what="concept activations")
    ctx.stats["concept_activation_sets_computed"] = computed
    for concept in items:
        if concept not in out:
            cached = ctx.cache.load_tensors(paths[concept], check=check(concept))
            if cached is None:
                raise RuntimeError(f"concept activations of {concept!r} are missing from "
                                   f"{paths[concept]} after their claim was released")
            out[concept] = cached["activations"]
    return out


def synthesise_in_rounds(ctx: RunContext, generator: Generator, concepts: list[str],
                         neurons: list[int], texts: list[str], control: SortedControl
                         ) -> tuple[dict[str, list[WorkItem]], dict[str, torch.Tensor]]:
    """``n_images=auto``: images in rounds of ``n_images_round`` per explanation, until every
    neuron of the explanation is decided (:func:`cosy_bench.scorers.stopping.decided`: its
    AUC's DeLong interval narrower than ``ci_width`` or excluding ``decision_threshold``) or
    ``n_images_max`` images are made. Image i of a prompt is the image a fixed-size run
    makes (same seed and file), so a later ``n_images=50`` run reuses them.

    Returns (per concept its work items, per concept its activations [M_c, K])."""
    cfg = ctx.cfg
    step, most = int(cfg.n_images_round), int(cfg.n_images_max)
    if step < 2 or most < step:
        raise ValueError(f"n_images=auto needs n_images_round >= 2 and n_images_max >= "
                         f"n_images_round, got {step} and {most}")
    neurons_of = {c: [j for j, t in enumerate(texts) if t == c] for c in concepts}
    made = dict.fromkeys(concepts, 0)
    acts = {c: torch.empty(0, ctx.num_neurons) for c in concepts}
    active, generated, rounds = list(concepts), 0, 0
    while active:
        rounds += 1
        new = {c: work_items(ctx.cache, generator, cfg.prompt.template, [c],
                             min(made[c] + step, most))[c][made[c]:] for c in active}
        batch = [it for its in new.values() for it in its]
        generated += synthesize(generator, batch, ctx.trainer(),
                                batch_size=cfg.generator_batch_size)
        got, index = collect_activations(ctx.extractor, ImageFiles([Path(it.path) for it in batch]),
                                         ctx.model.transform, ctx.trainer(),
                                         batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                                         precision=cfg.get("precision"))
        if len(index) != len(batch):
            raise RuntimeError(f"{len(batch) - len(index)} synthetic images could not be read; "
                               f"delete them from {ctx.cache.root / 'images'} and run again")
        start = 0
        for c, its in new.items():
            acts[c] = torch.cat([acts[c], got[start:start + len(its)]])
            made[c] += len(its)
            start += len(its)
        cols = [j for c in active for j in neurons_of[c]]
        done = _decided(control, acts, neurons, texts, cols, cfg)
        open_concepts = {texts[j] for j, ok in zip(cols, done, strict=True) if not ok}
        active = [c for c in active if c in open_concepts and made[c] < most]
        log.info("n_images=auto, round %d: %d of %d explanations continue", rounds,
                 len(active), len(concepts))
    items = {c: work_items(ctx.cache, generator, cfg.prompt.template, [c], made[c])[c]
             for c in concepts}
    for c, its in items.items():  # as concept_activations caches them
        save_tensors_atomic(_concept_path(ctx, generator, its), {"activations": acts[c]})
    ctx.stats.update(images_generated=generated, synthesis_rounds=rounds,
                     images_used=sum(made.values()), images_fixed=most * len(concepts))
    return items, acts


def _decided(control: SortedControl, acts: dict[str, torch.Tensor], neurons: list[int],
             texts: list[str], cols: list[int], cfg) -> list[bool]:
    """Whether each neuron ``cols[i]`` is decided, grouped by its number of images."""
    out = {}
    by_m: dict[int, list[int]] = {}
    for j in cols:
        by_m.setdefault(acts[texts[j]].shape[0], []).append(j)
    for js in by_m.values():
        block = torch.stack([acts[texts[j]][:, neurons[j]] for j in js], dim=1)
        ok = decided(control.select(js).values.T, block, float(cfg.ci_width),
                     cfg.get("decision_threshold"), float(cfg.ci_level))
        out.update(zip(js, ok.tolist(), strict=True))
    return [out[j] for j in cols]
