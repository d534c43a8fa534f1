"""CLIP models for CLIP-Dissect through open_clip's factory."""

from __future__ import annotations

import logging

import torch
from torch import nn

from cosy_bench.models.loaders import OFFLINE_HINT, WeightsUnavailableError

log = logging.getLogger("cosy_bench")


def open_clip_model(model_name: str = "ViT-B-16", pretrained: str | None = "openai",
                    device: str = "cpu"):
    """(model, preprocess, tokenizer) of any open_clip model/pretrained pair.

    ``pretrained`` is a tag (``openai``, ``laion2b_s34b_b88k``...), a local file, or None
    (random weights, offline). The paper used ViT-B/16 with OpenAI's weights.
    """
    import open_clip

    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained, device=device)
    except Exception as err:
        raise WeightsUnavailableError(
            f"open_clip could not load {model_name} / {pretrained}: {err}. Set "
            "explainer.clip.pretrained=null for random weights, or use the toy world's CLIP "
            f"(explainer/clip=toyworld). {OFFLINE_HINT}") from err
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
