"""MILAN (Hernandez et al., ICLR 2022) as an explainer: caption each neuron's exemplars
(top-k probe images with masks of where it fires) and keep the caption of highest pointwise
mutual information ``log p(d | E) - λ log p(d)``. Descriptions are lower-cased, as CoSy did.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cosy_bench.cache.fingerprint import file_fingerprint
from cosy_bench.distributed.ranks import gather_objects, get_rank, get_world_size
from cosy_bench.distributed.shards import shard
from cosy_bench.explainers.base import Explainer, Explanations
from cosy_bench.explainers.milan.checkpoints import TOY_CHECKPOINT, load_captioner
from cosy_bench.explainers.milan.exemplars import exemplar_images

log = logging.getLogger("cosy_bench")


def describe_units(captioner, exemplars, dataset, transform, units: list[int],
                   batch_units: int = 8, **decoding) -> list[dict]:
    """Captions of ``units`` from their exemplars (images of ``dataset`` as the model sees
    them, masks from the units' activation maps); one dict per unit (see
    :meth:`Captioner.describe`)."""
    from tqdm.auto import tqdm

    device = next(captioner.parameters()).device
    out: list[dict] = []
    bar = tqdm(total=len(units), desc="MILAN descriptions", unit="unit", leave=False,
               disable=len(units) <= batch_units)
    for start in range(0, len(units), batch_units):
        chunk = torch.tensor(units[start:start + batch_units])
        images = exemplar_images(dataset, transform, exemplars.indices[chunk])  # [u, k, 3, H, W]
        masks = exemplars.masks(tuple(images.shape[-2:]), units=chunk)  # [u, k, H, W]
        with torch.no_grad():
            features = captioner.encode(images.to(device), masks[:, :, None].float().to(device))
        out += captioner.describe(features, **decoding)
        bar.update(len(chunk))
    bar.close()
    return out


class MilanExplainer(Explainer):
    """``explainer=milan``.

    Args:
        probe: the probe-set config (images the exemplars come from).
        checkpoint: a published name (``base``, ``cls``, ``gen``, ``imagenet``,
            ``places365``, ``alexnet``, ``resnet152``, ``biggan``), ``toyworld``, ``random``
            (published sizes, random weights: offline smoke runs) or a file.
        k, quantile: exemplars per unit and the activation quantile of the masks (MILAN: 15,
            0.99); ``quantile_samples`` bounds the sample the quantile is estimated from.
        strategy, beam_size, length, temperature: decoding (None: the checkpoint's; MILAN:
            rerank, 50, 15, 0.2).
        trust_checkpoint: unpickle a published-format file without the allow-list.
        random_encoder: the encoder of ``checkpoint=random``.
        batch_units: units encoded and decoded at once.
    """

    name = "milan"
    explains_wanted_only = True

    def __init__(self, probe, checkpoint: str = "base", k: int = 15, quantile: float = 0.99,
                 quantile_samples: int = 16384, strategy: str | None = None,
                 beam_size: int | None = None, length: int | None = None,
                 temperature: float | None = None, trust_checkpoint: bool = False,
                 random_encoder: str = "resnet101", batch_units: int = 8, seed: int = 0,
                 top_k: int = 1):
        self.set_top_k(top_k)  # the top_k reranked distinct captions of the beam
        self.probe, self.checkpoint = probe, str(checkpoint)
        self.k, self.quantile, self.quantile_samples = int(k), float(quantile), int(quantile_samples)
        self.strategy, self.beam_size, self.length = strategy, beam_size, length
        self.temperature, self.trust_checkpoint = temperature, bool(trust_checkpoint)
        self.random_encoder, self.batch_units, self.seed = random_encoder, int(batch_units), seed

    def cache_key(self) -> dict:
        key = super().cache_key()
        if isinstance(self.probe, DictConfig):
            key["probe"] = OmegaConf.to_container(self.probe, resolve=True)
        key.pop("batch_units")
        path = TOY_CHECKPOINT if self.checkpoint == "toyworld" else Path(self.checkpoint)
        if path.is_file():  # a replaced file invalidates the explanations: keyed on content
            key["checkpoint_file"] = file_fingerprint(path)
        return key

    def explain(self, ctx) -> Explanations:
        units = list(ctx.wanted) if ctx.wanted is not None else list(range(ctx.num_neurons))
        probe = instantiate(self.probe)
        captioner = load_captioner(self.checkpoint, trust_checkpoint=self.trust_checkpoint,
                                   seed=self.seed, encoder=self.random_encoder)
        if torch.cuda.is_available():  # this rank's GPU (under DDP, set by the session)
            captioner = captioner.to(torch.device("cuda", torch.cuda.current_device()))
        exemplars = ctx.exemplars(probe, k=self.k, quantile=self.quantile,
                                  quantile_samples=self.quantile_samples, seed=self.seed)
        decoding = {k: v for k, v in (("strategy", self.strategy), ("beam_size", self.beam_size),
                                       ("length", self.length),
                                       ("temperature", self.temperature)) if v is not None}
        log.info("MILAN (%s): describing %d units from %d exemplars each", self.checkpoint,
                 len(units), self.k)
        # under DDP each rank describes its share of the units; all ranks get every record
        mine = [units[i] for i in shard(len(units), get_rank(), get_world_size())]
        described = describe_units(captioner, exemplars, probe, ctx.model.transform, mine,
                                   batch_units=self.batch_units, top_k=self.top_k, **decoding)
        by_unit = {u: r for part in gather_objects(list(zip(mine, described, strict=True)))
                   for u, r in part}
        names = ("score", "log_p_caption", "log_p_lm")
        rows = []
        for u in units:  # top_k > 1: captions that are distinct once lower-cased, best first
            seen: set[str] = set()
            for r in [by_unit[u], *by_unit[u].get("more", [])]:
                if r["description"].lower() not in seen:
                    seen.add(r["description"].lower())
                    rows.append({"neuron": u, "label": r["description"].lower(),
                                 **{f"milan_{n}": f"{r[n]:.4f}" for n in names}})
        return Explanations.from_ranked(rows, [f"milan_{n}" for n in names])
