"""CLIP models for CLIP-Dissect through open_clip's factory."""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

from cosy_bench.models.loaders import OFFLINE_HINT, WeightsUnavailableError

log = logging.getLogger("cosy_bench")


def uses_quick_gelu(model_name: str, pretrained: str | None,
                    quick_gelu: bool | None = None) -> bool:
    """Whether the CLIP to build has QuickGELU activations, as its weights were trained.

    For a tag of open_clip's pretrained table, the table decides
    (``open_clip.get_pretrained_cfg(name, tag)["quick_gelu"]``: OpenAI's weights) with the
    architecture's own config (``ViT-B-16-quickgelu``): a ``quick_gelu`` that disagrees is
    overruled with a warning (``clip=vit_b16_openai clip.pretrained=laion2b_s34b_b88k`` gets
    GELU). For a local file, ``quick_gelu`` true/false decides (OpenAI's weights: true);
    null: the architecture's config."""
    import open_clip

    arch = bool((open_clip.get_model_config(model_name) or {}).get("quick_gelu"))
    table = open_clip.get_pretrained_cfg(model_name, pretrained) if pretrained else {}
    if table:
        tagged = arch or bool(table.get("quick_gelu"))
        if quick_gelu is not None and bool(quick_gelu) != tagged:
            log.warning("clip.quick_gelu=%s ignored: open_clip's table says %s/%s weights were "
                        "trained with %s", quick_gelu, model_name, pretrained,
                        "QuickGELU" if tagged else "GELU")
        return tagged
    return bool(quick_gelu) if quick_gelu is not None else arch


def open_clip_model(model_name: str = "ViT-B-16", pretrained: str | None = "openai",
                    device: str = "cpu", quick_gelu: bool | None = None):
    """(model, preprocess, tokenizer) of any open_clip model/pretrained pair.

    ``pretrained`` is a tag (``openai``, ``laion2b_s34b_b88k``...), a local file, or None
    (random weights, offline). The paper used ViT-B/16 with OpenAI's weights, which need
    QuickGELU (:func:`uses_quick_gelu`; ``quick_gelu: true`` in ``conf/clip/vit_b16_openai``
    also for a local file of them).
    """
    import open_clip

    if pretrained is not None and str(pretrained).startswith("~"):
        pretrained = os.path.expanduser(str(pretrained))
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained, device=device,
            force_quick_gelu=uses_quick_gelu(model_name, pretrained, quick_gelu))
    except Exception as err:
        raise WeightsUnavailableError(
            f"open_clip could not load {model_name} / {pretrained}: {err}. Set "
            "clip.pretrained=<local file> (open_clip's file of these weights), clip=random "
            f"(random weights), or clip=toyworld (the toy world's CLIP). {OFFLINE_HINT}"
        ) from err
    model.eval().requires_grad_(False)
    return model, preprocess, open_clip.get_tokenizer(model_name)


class ImageEncoder(nn.Module):
    """L2-normalised CLIP image embeddings [B, D], for the activation predict loop."""

    def __init__(self, clip_model):
        super().__init__()
        self.clip = clip_model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        emb = self.clip.encode_image(images).float()
        return emb / emb.norm(dim=-1, keepdim=True)


@torch.no_grad()
def encode_texts(clip_model, tokenizer, texts: list[str], batch_size: int = 256) -> torch.Tensor:
    """L2-normalised CLIP text embeddings [M, D], in batches (a progress bar when there
    is more than one: 20k concepts take minutes on a CPU)."""
    from tqdm.auto import tqdm

    log.info("CLIP: encoding %d concept texts", len(texts))
    out = []
    device = next(clip_model.parameters()).device
    for i in tqdm(range(0, len(texts), batch_size), desc="CLIP text encoding", unit="batch",
                  leave=False, disable=len(texts) <= batch_size):
        emb = clip_model.encode_text(tokenizer(texts[i:i + batch_size]).to(device)).float()
        out.append((emb / emb.norm(dim=-1, keepdim=True)).cpu())
    return torch.cat(out)
