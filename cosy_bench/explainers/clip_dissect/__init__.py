"""CLIP-Dissect (Oikarinen & Weng, ICLR 2023) as an explainer: label each neuron with the
concept whose CLIP image-text similarities over a probe set best match its activations,
``argmax_m sim(t_m, q_k; P)``; the similarity functions are :mod:`.similarities`, ``P`` is
computed in blocks (:mod:`.products`) sized to ``max_memory_gb`` (:mod:`.plan`).

Columns: ``clip_similarity`` is the value the label was chosen by, ``sim(t_label, q_k)``.
For (soft) WPMI with ``lam = 1`` (the default) it is ``log K + log s_km``, ``s_km`` the
share of neuron k in concept m's ``E[p(t_m | B_j)]`` over the layer's K neurons, so it is at
most ``log K`` and equals it (to float precision) when neuron k holds nearly all of the
concept's mass: every unit of the toy CNN's ``concepts`` layer scores ln 25 = 3.2189 (its
owner leads the runner-up neuron by over 100 nats). ``clip_margin`` is the gap between the
best and the second-best concept of the neuron, how clearly the label won.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Sequence

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from cosy_bench.explainers.base import Explainer, Explanations
from cosy_bench.explainers.clip_dissect.plan import plan_blocks
from cosy_bench.explainers.clip_dissect.products import ClipProducts
from cosy_bench.explainers.clip_dissect.similarities import ALIASES, SIMILARITIES, similarity

log = logging.getLogger("cosy_bench")


def _check_images(tensors: dict[str, torch.Tensor]) -> None:
    """A cached CLIP image-embedding file: embeddings float [N, D] and their indices int [N]."""
    from cosy_bench.cache.structure import expect_equal, expect_tensors

    expect_tensors(tensors, {"embeddings": (2, "float"), "index": (1, "int")})
    expect_equal("the number of indices", tensors["index"].shape[0],
                 tensors["embeddings"].shape[0])


def label_neurons(sim: torch.Tensor, concepts: Sequence[str]) -> list[dict]:
    """Best concept per neuron.

    Args:
        sim: ``[K, M]`` similarities; NaN entries are never chosen.
        concepts: the M concept names.

    Returns:
        per neuron ``{"neuron", "label", "concept_index", "similarity", "margin"}``:
        ``margin`` = best minus second-best similarity (NaN with one concept or a NaN
        runner-up); ``label`` None and ``similarity`` NaN if the whole row is NaN.
    """
    s = torch.as_tensor(sim)
    if s.ndim != 2 or s.shape[1] != len(concepts):
        raise ValueError(f"sim must be [K, {len(concepts)}], got {tuple(s.shape)}")
    masked = torch.nan_to_num(s.double(), nan=-math.inf)
    vals, ids = masked.max(dim=1)
    second = (masked.topk(2, dim=1).values[:, 1] if s.shape[1] > 1
              else torch.full_like(vals, -math.inf))
    gaps = torch.where(torch.isfinite(second), vals - second, math.nan).tolist()
    out = []
    for k, (v, i) in enumerate(zip(vals.tolist(), ids.tolist(), strict=True)):
        ok = v != -math.inf or not torch.isnan(s[k]).all()
        out.append({
            "neuron": k,
            "label": str(concepts[i]) if ok else None,
            "concept_index": i if ok else -1,
            "similarity": v if ok else math.nan,
            "margin": gaps[k] if ok else math.nan,
        })
    return out


class ClipDissectExplainer(Explainer):
    """``explainer=clip_dissect``: label = argmax over a concept set of the similarity between
    each neuron's probe activations and CLIP's image-concept matrix ``P``.

    CLIP image embeddings are cached per (CLIP model, probe set), text embeddings per (CLIP
    model, concept set); the layer's probe activations come from the pipeline's cached pass.
    """

    name = "clip_dissect"

    def __init__(self, clip, probe, concepts, similarity: str = "soft_wpmi",
                 hparams: dict | None = None, chunk_size: int = 4096,
                 max_memory_gb: float | None = None, top_k: int = 1):
        self.set_top_k(top_k)  # the top_k concepts by similarity, best first
        self.clip, self.probe, self.concepts = clip, probe, concepts
        self.similarity = similarity
        self.hparams = dict(hparams or {})
        self.chunk_size = chunk_size  # image rows per block of P (changes no result)
        self.max_memory_gb = max_memory_gb  # blocks of P and of the similarity (no result)

    def cache_key(self) -> dict:
        def plain(x):
            return OmegaConf.to_container(x, resolve=True) if isinstance(x, (DictConfig, ListConfig)) else x

        return {"name": self.name, "columns": 2,  # 2: with clip_margin
                "clip": plain(self.clip), "probe": plain(self.probe),
                "concepts": plain(self.concepts), "similarity": self.similarity,
                "hparams": plain(self.hparams),
                **({"top_k": self.top_k} if self.top_k != 1 else {})}

    def explain(self, ctx) -> Explanations:
        from cosy_bench.cache.fingerprint import module_fingerprint
        from cosy_bench.cache.store import save_tensors_atomic, stable_hash
        from cosy_bench.cache.structure import expect_tensors
        from cosy_bench.explainers.concept_sets import resolve
        from cosy_bench.loops.activations import collect_activations
        from cosy_bench.models.clip import ImageEncoder, encode_texts
        from cosy_bench.models.layers import LayerExtractor, LayerSpec

        key = self.cache_key()
        concepts = self.concepts
        if isinstance(concepts, (DictConfig, dict)) and "_target_" in concepts:
            concepts = instantiate(concepts)
        concepts = resolve(concepts)
        probe = instantiate(self.probe)
        clip_model, preprocess, tokenizer = instantiate(self.clip)
        # the embeddings follow the CLIP weights' contents, not only the config naming them
        clip_key = {"clip": key["clip"], "clip_weights": module_fingerprint(clip_model)}

        img_path = ctx.cache.path("clip_images", stable_hash({**clip_key,
                                                              **ctx.dataset_key(probe)}),
                                  ".safetensors")
        cached = ctx.cache.load_tensors(img_path, check=_check_images)
        if cached is None:
            encoder = LayerExtractor(ImageEncoder(clip_model), LayerSpec("clip", None, "identity"))
            emb, index = collect_activations(encoder, probe, preprocess,
                                             ctx.trainer("CLIP image embeddings"),
                                             batch_size=ctx.cfg.batch_size,
                                             num_workers=ctx.cfg.num_workers)
            save_tensors_atomic(img_path, {"embeddings": emb, "index": index})
        else:
            emb, index = cached["embeddings"], cached["index"]
        txt_path = ctx.cache.path("clip_texts", stable_hash({**clip_key, "concepts": concepts}),
                                  ".safetensors")
        cached = ctx.cache.load_tensors(
            txt_path, check=lambda t: expect_tensors(t, {"embeddings": (2, "float")},
                                                     {"embeddings": (len(concepts), None)}))
        if cached is None:
            text = encode_texts(clip_model, tokenizer, concepts)
            save_tensors_atomic(txt_path, {"embeddings": text})
        else:
            text = cached["embeddings"]

        acts, act_index = ctx.activations(probe, "probe", with_index=True)
        common = torch.isin(index, act_index)
        if not common.all():  # copies only when the two sets differ
            emb, index = emb[common], index[common]
        keep = torch.isin(act_index, index)
        if not keep.all():
            acts = acts[keep]
        clip_feats = ClipProducts(emb, text, row_block=self.chunk_size)  # P, never held whole
        hparams = dict(self.hparams)
        default_top = inspect.signature(
            SIMILARITIES[ALIASES.get(self.similarity, self.similarity)]).parameters.get("top_k")
        if default_top is not None:
            top_k = hparams.get("top_k", default_top.default)
            if top_k > acts.shape[0]:
                log.warning("probe set has %d images, fewer than top_k=%d: using top_k=%d",
                            acts.shape[0], top_k, acts.shape[0])
                hparams["top_k"] = acts.shape[0]
        blocks = plan_blocks(self.similarity, acts.shape[0], acts.shape[1], text.shape[0],
                             text.shape[1], self.max_memory_gb, hparams,
                             row_block=self.chunk_size)
        hparams.update(chunk_size=blocks["chunk_size"],
                       concept_chunk_size=blocks["concept_chunk_size"])
        sim = similarity(self.similarity, clip_feats, acts, **hparams)
        records = label_neurons(sim, concepts) if self.top_k == 1 \
            else label_top_k(sim, concepts, self.top_k)
        kept = [{**r, "clip_similarity": r["similarity"], "clip_margin": r["margin"]}
                for r in records if r["label"] is not None]
        return Explanations.from_ranked(kept, ["clip_similarity", "clip_margin"])


def label_top_k(sim: torch.Tensor, concepts: list[str], k: int) -> list[dict]:
    """The ``k`` most similar concepts of each neuron, best first, as rows of
    :func:`label_neurons` (``margin``: this concept's similarity minus the next one's);
    rank 1 is :func:`label_neurons`' label (ties to the lower index), NaN rows are left out.

    Args:
        sim: [K, M] similarities of K neurons to M concepts.
    """
    s = torch.nan_to_num(torch.as_tensor(sim).double(), nan=-math.inf)
    k = min(k, s.shape[1])
    order = torch.sort(s, dim=1, descending=True, stable=True)
    vals, ids = order.values[:, :k + 1].tolist(), order.indices[:, :k].tolist()
    out = []
    for n in range(s.shape[0]):
        for r in range(k):
            v = vals[n][r]
            if v == -math.inf:
                break
            nxt = vals[n][r + 1] if r + 1 < len(vals[n]) else -math.inf
            out.append({"neuron": n, "label": str(concepts[ids[n][r]]),
                        "concept_index": ids[n][r], "similarity": v,
                        "margin": v - nxt if nxt != -math.inf else math.nan})
    return out
