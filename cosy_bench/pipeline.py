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
from cosy_bench.scorers import SCORE_COLUMNS, score_all
from cosy_bench.scorers.label_similarity import TEXT_SCORERS, label_similarity
from cosy_bench.scorers.sorted import SORTED_SCORERS, SortedControl, score_sorted
from cosy_bench.scorers.stopping import decided

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


def _concept_path(ctx: RunContext, generator: Generator, its: list[WorkItem]) -> Path:
    key = stable_hash({**ctx.model_key, "generator": stable_hash(generator.cache_key),
                       "prompt": its[0].prompt, "n": len(its)})
    return ctx.cache.path("concept_activations", key, ".safetensors")


def concept_activations(ctx: RunContext, generator: Generator, items: dict[str, list[WorkItem]]
                        ) -> dict[str, torch.Tensor]:
    """Per concept, activations [M, K] of the layer on its synthetic images (cached)."""
    out, todo = {}, []
    for concept, its in items.items():
        path = _concept_path(ctx, generator, its)
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
                                         batch_size=cfg.batch_size, num_workers=cfg.num_workers)
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
                     cfg.get("decision_threshold"), float(cfg.get("ci_level", 0.95)))
        out.update(zip(js, ok.tolist(), strict=True))
    return [out[j] for j in cols]


def score_by_count(names: list[str], sorted_control: SortedControl, control: torch.Tensor,
                   per_concept: dict, neurons: list[int], texts: list[str]
                   ) -> dict[str, torch.Tensor]:
    """Scores [K] of every neuron on its explanation's images, neurons with the same number
    of images scored together (``n_images=auto`` gives each explanation its own count).
    CoSy's scores search the sorted control columns; any other scorer gets ``control``."""
    fast = [n for n in names if n in SORTED_SCORERS]
    rest = [n for n in names if n not in SORTED_SCORERS]
    by_m: dict[int, list[int]] = {}
    for j, t in enumerate(texts):
        by_m.setdefault(per_concept[t].shape[0], []).append(j)
    columns: dict[str, torch.Tensor] = {}
    for js in by_m.values():
        block = torch.stack([per_concept[texts[j]][:, neurons[j]] for j in js], dim=1)
        check_finite("synthetic", block, [neurons[j] for j in js])
        out = score_sorted(fast, sorted_control.select(js), block) if fast else {}
        if rest:
            out.update(score_all(rest, control[:, js], block))
        for name in (c for n in names for c in SCORE_COLUMNS[n]):
            vals = out[name]
            columns.setdefault(name, torch.empty(len(texts), dtype=vals.dtype))[js] = vals
    return columns


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


def _control(ctx: RunContext, dataset, neurons: list[int]) -> SortedControl:
    """The control activations of ``neurons``, each column sorted once per (model, layer,
    control set) and cached for every job."""
    control = ctx.sorted_control(dataset, "control").select(neurons)
    check_finite("control", control.values[:, [0, -1]].T, neurons)  # -inf first, inf/NaN last
    return control


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
    numeric = [name for name in cfg.scorer if name not in TEXT_SCORERS]
    if str(cfg.n_images) == "auto":  # the control set first: it decides when to stop
        control, control_index = ctx.activations(control_ds, "control", with_index=True)
        sorted_control = _control(ctx, control_ds, neurons)
        items, per_concept = synthesise_in_rounds(ctx, generator, concepts, neurons, texts,
                                                  sorted_control)
    else:
        items = work_items(cache, generator, cfg.prompt.template, concepts, int(cfg.n_images))
        all_items = [it for its in items.values() for it in its]
        n_todo = len(pending(all_items))
        log.info("synthesis: %d images needed, %d cached, %d to generate", len(all_items),
                 len(all_items) - n_todo, n_todo)
        ctx.stats["images_generated"] = synthesize(generator, all_items,
                                                   ctx.trainer("synthesis"),
                                                   batch_size=cfg.generator_batch_size)
        control, control_index = ctx.activations(control_ds, "control", with_index=True)
        sorted_control = _control(ctx, control_ds, neurons)
        per_concept = concept_activations(ctx, generator, items)
    control = control[:, neurons]
    scores = score_by_count(numeric, sorted_control, control, per_concept, neurons, texts) \
        if numeric else {}
    same_count = len({per_concept[t].shape[0] for t in texts}) == 1
    concept = torch.stack([per_concept[t][:, k] for t, k in zip(texts, neurons, strict=True)],
                          dim=1) if same_count else None  # n_images=auto: counts differ
    if str(cfg.n_images) == "auto":
        scores["n_images"] = torch.tensor([float(len(items[t])) for t in texts])

    truth = model.ground_truth(layer)
    scores.update(text_scores(cfg, texts, None if truth is None else
                              [truth[k] for k in neurons]))
    record = RunRecord.build(cfg, neurons, texts, scores, explanations, truth, ctx.stats,
                             n_control=control.shape[0], items=items, control=control,
                             concept=concept, control_index=control_index, dataset=control_ds)
    if is_rank_zero():  # under DDP only rank 0 writes and prints
        record.write(output_dir)
    return record
