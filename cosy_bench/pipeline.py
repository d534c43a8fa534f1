"""The CoSy pipeline, one function per stage and :func:`run` their sequence:
explain -> choose neurons -> synthesise -> collect activations -> score -> report.
Every expensive stage is cached in ``paths.cache_dir`` (the services of
:class:`~cosy_bench.context.RunContext`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cosy_bench.cache.fingerprint import path_fingerprint, verify_inputs
from cosy_bench.cache.hygiene import check_cache_dir, clean_debris
from cosy_bench.cache.store import (
    RankAgreedCache,
    stable_hash,
    write_text_checked,
)
from cosy_bench.context import RunContext, count_neurons
from cosy_bench.distributed.ranks import is_rank_zero
from cosy_bench.explainers.base import Explainer, Explanations
from cosy_bench.generators.base import Generator
from cosy_bench.models import create_model
from cosy_bench.models.layers import LayerExtractor
from cosy_bench.ranks import expand, names_concept, polysemanticity
from cosy_bench.record import RunRecord, RunResult
from cosy_bench.schema import validate
from cosy_bench.scorers import registry, score_all
from cosy_bench.scorers.cosy import NEAR_CONSTANT_RTOL, near_constant
from cosy_bench.scorers.label_similarity import label_similarity
from cosy_bench.scorers.sorted import SortedControl, score_sorted
from cosy_bench.synthetic import concept_activations, synthesise, synthesise_in_rounds, work_items
from cosy_bench.units.kinds import Neurons, Units

log = logging.getLogger("cosy_bench")


def _folders_in(node):
    """The dataset configs read from a folder (``_target_`` and ``root``) inside ``node``."""
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    if isinstance(node, Mapping):
        if "_target_" in node and node.get("root") not in (None, "", "???"):
            yield node
        for value in node.values():
            yield from _folders_in(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _folders_in(value)


def _local_paths_in(node, skip: set[str]):
    """The strings inside ``node`` (already plain) that name an existing local file, or an
    existing folder when they hold a path separator (a bare word such as ``base`` is a name,
    not the folder of that name the working directory may hold); ``skip``: resolved paths
    already fingerprinted (image-folder roots)."""
    if isinstance(node, Mapping):
        for value in node.values():
            yield from _local_paths_in(value, skip)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _local_paths_in(value, skip)
    elif isinstance(node, str) and node.strip() and "\n" not in node:
        try:
            path = Path(node).expanduser()
            is_file = path.is_file()
            is_dir = not is_file and ("/" in node or os.sep in node) and path.is_dir()
        except (OSError, ValueError):  # not a path (too long, NUL, ...)
            return
        if (is_file or is_dir) and str(path.resolve()) not in skip:
            yield path


def folder_contents(ctx: RunContext, settings: dict) -> list[str]:
    """Content fingerprints of the image folders an explainer's settings name (its probe
    set) and of every other existing local file or folder they name (a concept list, a local
    CLIP checkpoint, a MILAN checkpoint), so that explanations are recomputed when what they
    were made from changes in place. A folder that cannot be listed adds nothing: the
    explainer reports it if it has to run."""
    out, roots = [], set()
    for node in _folders_in(settings):
        # a dataset root is the dataset's to fingerprint (its files, not every file under it)
        roots.add(str(Path(str(node["root"])).expanduser().resolve()))
        try:
            dataset = instantiate(node)
        except (OSError, ValueError, InstantiationException) as err:
            log.debug("no content fingerprint for %s: %s", node.get("root"), err)
            continue
        out.append(ctx.dataset_key(dataset).get("content", dataset.name))
    plain = OmegaConf.to_container(settings, resolve=True) if isinstance(settings, DictConfig) \
        else settings
    memo = ctx.cache.root / "fingerprints"
    out += [path_fingerprint(p, memo) for p in _local_paths_in(plain, roots)]
    return out


def cached_explanations(text: str, num_neurons: int) -> Explanations:
    """The explanations of a cached CSV; ValueError where its structure is not theirs (a
    ``neuron`` and an ``explanation`` column, integer neurons of the layer, each once,
    non-empty texts): the cache then moves the file aside and the explainer runs again."""
    import csv
    import io

    header = next(csv.reader(io.StringIO(text, newline="")), [])
    missing = [c for c in ("neuron", "explanation") if c not in header]
    if missing:
        raise ValueError(f"columns {header[:6]} lack {missing}")
    if len(set(header)) != len(header):
        raise ValueError(f"repeated columns in {header[:6]}")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    if any(None in r or None in r.values() for r in rows):
        raise ValueError("a row has more or fewer cells than the header")
    neurons = [r["neuron"] for r in rows]
    if not all(n.isdigit() for n in neurons):
        raise ValueError(f"neurons must be integers >= 0, got {neurons[:5]}")
    ids = [int(n) for n in neurons]
    if len(set(ids)) != len(ids) or (num_neurons and max(ids) >= num_neurons):
        raise ValueError(f"neurons repeated or out of 0..{num_neurons - 1}")
    if any(not r["explanation"].strip() for r in rows):
        raise ValueError("an empty explanation")
    return Explanations.from_csv(text)


def explain(ctx: RunContext, explainer: Explainer) -> Explanations:
    """The explainer's output for this model and layer, cached by all that determines it:
    its settings, the model's weights (by content) and the contents of its probe folders."""
    settings = explainer.cache_key()
    key = {"explainer": settings, **ctx.model_key}
    contents = folder_contents(ctx, settings)
    if contents:
        key["folder_contents"] = contents
    if explainer.explains_wanted_only:
        key["neurons"] = ctx.wanted
    if ctx.layer.spatial:  # where unit maps are read (MILAN's masks)
        key["spatial"] = ctx.layer.spatial
    key = stable_hash(key)
    path = ctx.cache.path("explanations", key, ".csv")
    # verified (checksum, key, columns); rank 0 decides (predict loops may follow)
    text = ctx.cache.read_text(path, check=lambda t: cached_explanations(t, ctx.num_neurons))
    if text is not None:
        log.info("explanations (%s): cache hit", explainer.name)
        return Explanations.from_csv(text)
    expl = explainer.explain(ctx)
    bad = [k for k in expl.texts if not 0 <= k < ctx.num_neurons]
    if bad:
        raise ValueError(f"explainer {explainer.name!r} labels neurons {bad[:10]} but layer "
                         f"{ctx.layer.name!r} of {ctx.model.name!r} has neurons 0..{ctx.num_neurons - 1}")
    empty = [k for k, t in expl.texts.items() if not str(t).strip()]
    if empty:
        raise ValueError(f"explainer {explainer.name!r} gave empty explanations for neurons {empty[:10]}")
    write_text_checked(path, expl.to_csv())
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


def score_by_count(names: list[str], sorted_control: SortedControl, control: torch.Tensor,
                   per_concept: dict, neurons: list[int], texts: list[str]
                   ) -> dict[str, torch.Tensor]:
    """Scores [K] of every neuron on its explanation's images, neurons with the same number
    of images scored together (``n_images=auto`` gives each explanation its own count).
    CoSy's scores search the sorted control columns; any other scorer gets ``control``."""
    fast = [n for n in names if registry.get(n).sorted]
    rest = [n for n in names if not registry.get(n).sorted]
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
        for name in registry.columns(names):
            vals = out[name]
            columns.setdefault(name, torch.empty(len(texts), dtype=vals.dtype))[js] = vals
    return columns


def check_finite(name: str, acts: torch.Tensor, neurons: list[int]) -> None:
    bad = (~torch.isfinite(acts)).any(dim=0).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"{name} activations are NaN/inf for neurons "
                         f"{[neurons[i] for i in bad[:10]]}")


def scorer_nodes(cfg: DictConfig) -> dict[str, object]:
    """The run's scorers, ``{name: its yaml node}`` (``scorer=[auc,mad]`` composes a mapping;
    a plain list of names maps each to ``None``)."""
    node = cfg.scorer
    if isinstance(node, (DictConfig, Mapping)):
        return {str(k): node[k] for k in node}
    return {str(n): None for n in (node if isinstance(node, (list, tuple)) or
                                   OmegaConf.is_list(node) else [node])}


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
    protocol, broden = spec.get("protocol", "clean"), spec.get("broden")
    scenes = None
    if protocol == "paper" and broden not in (None, "", "???"):
        from cosy_bench.scorers.label_similarity import broden_scenes

        scenes = broden_scenes(broden)
    return label_similarity(texts, truths, encoders, protocol, scenes)


def explanation_polysemanticity(cfg: DictConfig, neurons: list[int], texts: list[str]
                                ) -> torch.Tensor:
    """Per row [R], its neuron's polysemanticity (:func:`cosy_bench.ranks.polysemanticity`)
    in the text space of the run's CLIP (the ``clip`` group; toy world: the toy CLIP). The
    run asked for K >= 2 explanations: a neuron the explainer gives one scores 0."""
    from cosy_bench.models.clip import encode_texts

    def embed(t: list[str]) -> torch.Tensor:
        clip_model, _, tokenizer = instantiate(cfg.clip)
        return encode_texts(clip_model, tokenizer, t)

    return polysemanticity(neurons, texts, embed, single=0.0)


def _control(ctx: RunContext, dataset, neurons: list[int]) -> SortedControl:
    """The control activations of ``neurons``, each column sorted once per (model, layer,
    control set) and cached for every job."""
    control = ctx.sorted_control(dataset, "control").select(neurons)
    check_finite("control", control.values[:, [0, -1]].T, neurons)  # -inf first, inf/NaN last
    return control


def run(cfg: DictConfig, output_dir: str | Path):
    """Run one configuration end to end; writes and returns its :class:`~cosy_bench.record.RunRecord`."""
    output_dir = Path(output_dir)
    validate(cfg)
    verify_inputs(bool(cfg.get("verify_inputs", False)))
    check_cache_dir(cfg.paths.cache_dir)
    cache = RankAgreedCache(cfg.paths.cache_dir)  # under DDP, rank 0 decides what is cached
    if is_rank_zero():
        clean_debris(cache.root)
    model = create_model(cfg.model, seed=cfg.seed)
    layer = model.layer(cfg.layer.name)
    extractor = LayerExtractor(model.module, layer)
    num_neurons = count_neurons(extractor, model.transform)
    ctx = RunContext(cfg, cache, model, layer, extractor, num_neurons)
    log.info("model %s, layer %s (%s): %d neurons", model.name, layer.name, layer.module,
             num_neurons)

    # the control set first: a wrong path fails before any explanation or image is made
    control_ds = instantiate(cfg.dataset)
    units: Units = instantiate(cfg.units) if cfg.get("units") is not None else Neurons()
    ctx = units.attach(ctx, control_ds)  # units=sae: the latents of a sparse dictionary
    num_neurons = ctx.num_neurons
    ctx.wanted = choose_neurons(cfg.neurons, list(range(num_neurons)), num_neurons)
    explainer: Explainer = instantiate(cfg.explainer)
    explanations = explain(ctx, explainer)
    chosen = choose_neurons(cfg.neurons, list(explanations.texts), num_neurons)
    # one row per (neuron, rank): a neuron with top_k explanations is scored top_k times
    neurons, ranks, texts = expand(explanations, chosen)
    concepts = list(dict.fromkeys(texts))
    log.info("%d neurons chosen, %d explanations, %d distinct", len(chosen), len(texts),
             len(concepts))

    generator: Generator = instantiate(cfg.generator)
    numeric = [name for name, node in scorer_nodes(cfg).items()
               if not registry.from_config(name, node).text]
    control, control_index = ctx.activations(control_ds, "control", with_index=True)
    sorted_control = _control(ctx, control_ds, neurons)
    columns: dict[str, torch.Tensor] = {}
    if str(cfg.n_images) == "auto":  # rounds of images until the control set decides
        items, per_concept = synthesise_in_rounds(ctx, generator, concepts, neurons, texts,
                                                  sorted_control)
        columns["n_images"] = torch.tensor([float(len(items[t])) for t in texts])
    else:
        items = work_items(cache, generator, cfg.prompt.template, concepts, int(cfg.n_images))
        ctx.stats["images_generated"] = synthesise(ctx, generator, items)
        per_concept = concept_activations(ctx, generator, items)
    control = control[:, neurons]
    scores = score_by_count(numeric, sorted_control, control, per_concept, neurons, texts) \
        if numeric else {}
    scores.update(columns)
    same_count = len({per_concept[t].shape[0] for t in texts}) == 1
    concept = torch.stack([per_concept[t][:, k] for t, k in zip(texts, neurons, strict=True)],
                          dim=1) if same_count else None  # n_images=auto: counts differ
    flat = [neurons[i] for i in near_constant(control).nonzero().flatten().tolist()]
    ctx.stats["near_constant_neurons"] = flat
    if flat:
        log.warning("%d neurons have (near-)constant control activations (std below %g of "
                    "their scale), MAD 0: %s", len(flat), NEAR_CONSTANT_RTOL, flat[:20])

    probe_truth = units.probe_truth(ctx)  # the AUROC rule, for neurons and latents alike
    truth = model.ground_truth(layer) if ctx.units is None else probe_truth
    scores.update(text_scores(cfg, texts, None if truth is None or ctx.units is not None
                              else [truth[k] for k in neurons]))  # a latent's truth: a set
    poly = explanation_polysemanticity(cfg, neurons, texts) if explainer.top_k > 1 else None
    record = RunRecord.build(RunResult(
        cfg, neurons, texts, scores, explanations, truth, ctx.stats, control.shape[0], items,
        control=control, concept=concept, control_index=control_index, dataset=control_ds,
        ranks=ranks, polysemanticity=poly, top_k=explainer.top_k))
    first = [j for j, r in enumerate(ranks) if r == 1]  # the units block: rank-1 explanations
    record.summary["units"] = units.summary([neurons[j] for j in first],
                                            [texts[j] for j in first], probe_truth,
                                            names_concept)
    if is_rank_zero():  # under DDP only rank 0 writes and prints
        record.write(output_dir)
    return record
