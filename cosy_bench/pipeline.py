"""The CoSy pipeline, one function per stage and :func:`run` their sequence:
explain -> choose neurons -> synthesise -> collect activations -> score -> report.
Every expensive stage is cached in ``paths.cache_dir`` (the services of
:class:`~cosy_bench.context.RunContext`)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from cosy_bench.cache.store import (
    Cache,
    RankAgreedCache,
    save_tensors_atomic,
    stable_hash,
    write_text_atomic,
)
from cosy_bench.context import RunContext, count_neurons
from cosy_bench.data.datasets import ImageFiles
from cosy_bench.distributed.ranks import agreed, is_rank_zero
from cosy_bench.explainers.base import Explainer, Explanations
from cosy_bench.generators.base import Generator, image_seed
from cosy_bench.loops.activations import collect_activations
from cosy_bench.loops.synthesis import WorkItem, pending, synthesize
from cosy_bench.models import create_model
from cosy_bench.models.layers import LayerExtractor
from cosy_bench.prompts import make_prompt
from cosy_bench.record import RunRecord
from cosy_bench.scorers import score_all
from cosy_bench.scorers.label_similarity import TEXT_SCORERS, label_similarity

log = logging.getLogger("cosy_bench")


def explain(ctx: RunContext, explainer: Explainer) -> Explanations:
    """The explainer's output for this model and layer, cached by all that determines it."""
    key = {"explainer": explainer.cache_key(), **ctx.model_key}
    if explainer.explains_wanted_only:
        key["neurons"] = ctx.wanted
    if ctx.layer.spatial:  # where unit maps are read (MILAN's masks)
        key["spatial"] = ctx.layer.spatial
    key = stable_hash(key)
    path = ctx.cache.path("explanations", key, ".csv")
    if agreed(path.exists()):  # rank 0 decides: the explainer may run predict loops
        log.info("explanations (%s): cache hit", explainer.name)
        return Explanations.from_csv(path.read_text(encoding="utf-8"))
    expl = explainer.explain(ctx)
    bad = [k for k in expl.texts if not 0 <= k < ctx.num_neurons]
    if bad:
        raise ValueError(f"explainer {explainer.name!r} labels neurons {bad[:10]} but layer "
                         f"{ctx.layer.name!r} of {ctx.model.name!r} has neurons 0..{ctx.num_neurons - 1}")
    empty = [k for k, t in expl.texts.items() if not str(t).strip()]
    if empty:
        raise ValueError(f"explainer {explainer.name!r} gave empty explanations for neurons {empty[:10]}")
    write_text_atomic(path, expl.to_csv())
    return expl


def choose_neurons(cfg: DictConfig, explained: list[int], num_neurons: int) -> list[int]:
    """Explicit ``neurons.ids``, else a seeded sample of ``neurons.sample`` (CoSy: 50, seed
    42), else every explained neuron. Returns sorted neuron indices."""
    explained = sorted(explained)
    if cfg.get("ids") is not None:
        ids = [int(i) for i in cfg.ids]
        bad = [i for i in ids if not 0 <= i < num_neurons]
        if bad:
            raise ValueError(f"neurons.ids {bad} out of range: the layer has neurons "
                             f"0..{num_neurons - 1}")
        missing = sorted(set(ids) - set(explained))
        if missing:
            raise ValueError(f"neurons.ids {missing} have no explanation")
        return sorted(set(ids))
    n = cfg.get("sample")
    if n is None or n >= len(explained):
        return explained
    pick = np.random.default_rng(cfg.seed).choice(len(explained), size=int(n), replace=False)
    return sorted(explained[i] for i in pick)


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


def concept_activations(ctx: RunContext, generator: Generator, items: dict[str, list[WorkItem]]
                        ) -> dict[str, torch.Tensor]:
    """Per concept, activations [M, K] of the layer on its synthetic images (cached)."""
    out, todo = {}, []
    gen_key = stable_hash(generator.cache_key)
    for concept, its in items.items():
        key = stable_hash({**ctx.model_key, "generator": gen_key, "prompt": its[0].prompt,
                           "n": len(its)})
        path = ctx.cache.path("concept_activations", key, ".safetensors")
        cached = ctx.cache.load_tensors(path)
        if cached is not None:
            out[concept] = cached["activations"]
        else:
            todo.append((concept, its, path))
    ctx.stats["concept_activation_sets_computed"] = len(todo)
    if todo:
        files = [Path(it.path) for _, its, _ in todo for it in its]
        acts, index = collect_activations(ctx.extractor, ImageFiles(files), ctx.model.transform,
                                          ctx.trainer("concept activations"),
                                          batch_size=ctx.cfg.batch_size,
                                          num_workers=ctx.cfg.num_workers)
        if len(index) != len(files):
            raise RuntimeError(f"{len(files) - len(index)} synthetic images could not be read; "
                               f"delete them from {ctx.cache.root / 'images'} and run again")
        start = 0
        for concept, its, path in todo:
            block = acts[start:start + len(its)]
            start += len(its)
            save_tensors_atomic(path, {"activations": block})
            out[concept] = block
    return out


def check_finite(name: str, acts: torch.Tensor, neurons: list[int]) -> None:
    bad = (~torch.isfinite(acts)).any(dim=0).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"{name} activations are NaN/inf for neurons "
                         f"{[neurons[i] for i in bad[:10]]}")


def text_scores(cfg: DictConfig, texts: list[str], truths: list[str] | None
                ) -> dict[str, torch.Tensor]:
    """CLIP-Dissect's label similarity (``scorer=label_similarity``: accuracy, clip_cos,
    mpnet_cos) of the explanations against the known concepts; skipped with a note where the
    layer has none, and mpnet_cos where its weights cannot be had."""
    if "label_similarity" not in cfg.scorer:
        return {}
    if truths is None:
        log.info("label_similarity: skipped, layer %s of %s has no ground truth",
                 cfg.layer.name, cfg.model.name)
        return {}
    from cosy_bench.models.clip import encode_texts

    spec, encoders = cfg.scorer.label_similarity, {}
    if spec.get("clip") is not None:
        clip_model, _, tokenizer = instantiate(spec.clip)
        encoders["clip"] = lambda t: encode_texts(clip_model, tokenizer, t)
    if spec.get("mpnet") is not None:
        try:
            encoders["mpnet"] = instantiate(spec.mpnet)
        except (OSError, InstantiationException) as err:  # no weights, no network
            cause = err.__cause__ or err
            log.warning("label_similarity: mpnet_cos skipped (%s)", str(cause).splitlines()[0])
    return label_similarity(texts, truths, encoders)


def run(cfg: DictConfig, output_dir: str | Path):
    """Run one configuration end to end; writes and returns its :class:`~cosy_bench.record.RunRecord`."""
    output_dir = Path(output_dir)
    cache = RankAgreedCache(cfg.paths.cache_dir)  # under DDP, rank 0 decides what is cached
    model = create_model(cfg.model, seed=cfg.seed)
    layer = model.layer(cfg.layer.name)
    extractor = LayerExtractor(model.module, layer)
    num_neurons = count_neurons(extractor, model.transform)
    ctx = RunContext(cfg, cache, model, layer, extractor, num_neurons)
    log.info("model %s, layer %s (%s): %d neurons", model.name, layer.name, layer.module,
             num_neurons)

    # the control set first: a wrong path fails before any explanation or image is made
    control_ds = instantiate(cfg.dataset)
    ctx.wanted = choose_neurons(cfg.neurons, list(range(num_neurons)), num_neurons)
    explainer: Explainer = instantiate(cfg.explainer)
    explanations = explain(ctx, explainer)
    neurons = choose_neurons(cfg.neurons, list(explanations.texts), num_neurons)
    texts = [explanations.texts[k] for k in neurons]
    concepts = list(dict.fromkeys(texts))
    log.info("%d neurons chosen, %d distinct explanations", len(neurons), len(concepts))

    generator: Generator = instantiate(cfg.generator)
    items = work_items(cache, generator, cfg.prompt.template, concepts, cfg.n_images)
    all_items = [it for its in items.values() for it in its]
    n_todo = len(pending(all_items))
    log.info("synthesis: %d images needed, %d cached, %d to generate", len(all_items),
             len(all_items) - n_todo, n_todo)
    generated = synthesize(generator, all_items, ctx.trainer("synthesis"),
                           batch_size=cfg.generator_batch_size)
    ctx.stats["images_generated"] = generated

    control, control_index = ctx.activations(control_ds, "control", with_index=True)
    control = control[:, neurons]
    check_finite("control", control, neurons)
    per_concept = concept_activations(ctx, generator, items)
    concept = torch.stack([per_concept[t][:, k] for t, k in zip(texts, neurons, strict=True)],
                          dim=1)
    check_finite("synthetic", concept, neurons)
    numeric = [name for name in cfg.scorer if name not in TEXT_SCORERS]
    scores = score_all(numeric, control, concept) if numeric else {}

    truth = model.ground_truth(layer)
    scores.update(text_scores(cfg, texts, None if truth is None else
                              [truth[k] for k in neurons]))
    record = RunRecord.build(cfg, neurons, texts, scores, explanations, truth, ctx.stats,
                             n_control=control.shape[0], items=items, control=control,
                             concept=concept, control_index=control_index, dataset=control_ds)
    if is_rank_zero():  # under DDP only rank 0 writes and prints
        record.write(output_dir)
    return record
