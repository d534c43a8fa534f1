"""CLIP-Dissect's evaluation of labels against known concepts (Oikarinen & Weng, ICLR 2023,
Sec. 4.2): for neurons whose true concept is known (a model's output layer: its class
names; the toy world: ground truth), compare each explanation with it.

* ``accuracy``: 1 where the explanation equals the truth after :func:`normalize` (lower
  case, ``_`` and punctuation as spaces, whitespace collapsed), else 0;
* ``clip_cos``: cosine of the CLIP text embeddings of explanation and truth (the paper:
  ViT-B/16's text encoder);
* ``mpnet_cos``: cosine of all-mpnet-base-v2 sentence embeddings (mean pooling of the token
  embeddings over the attention mask, then L2 normalisation, as the model card says).

All return float64 ``[K]`` (one value per neuron). Text encoders are passed in as
callables ``list[str] -> [K, D]``; :class:`MeanPooledEncoder` is the mpnet one (transformers).
Imports nothing else of cosy_bench.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["MeanPooledEncoder", "accuracy", "cosine", "label_similarity", "names_concept",
           "normalize", "positive_text"]

_NON_WORD = re.compile(r"[^a-z0-9]+")


def normalize(text: str) -> str:
    """Lower case, ``_`` and punctuation as spaces, whitespace collapsed.

    >>> normalize("Sea_Lion!")
    'sea lion'
    """
    return _NON_WORD.sub(" ", str(text).lower()).strip()


def accuracy(explanations: Sequence[str], truths: Sequence[str]) -> Tensor:
    """float64 ``[K]``: 1.0 where explanation and truth are equal after :func:`normalize`."""
    if len(explanations) != len(truths):
        raise ValueError(f"{len(explanations)} explanations for {len(truths)} ground truths")
    return torch.tensor([float(normalize(e) == normalize(t))
                         for e, t in zip(explanations, truths, strict=True)],
                        dtype=torch.float64)


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise cosine of embeddings ``a [K, D]`` and ``b [K, D]`` -> float64 ``[K]``."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"need two embeddings [K, D] of one shape, got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    a, b = a.double(), b.double()
    return torch.nn.functional.cosine_similarity(a, b, dim=1, eps=1e-12)


def label_similarity(explanations: Sequence[str], truths: Sequence[str],
                     encoders: dict[str, Callable[[list[str]], Tensor]]) -> dict[str, Tensor]:
    """``{"accuracy": [K], "<name>_cos": [K] for each encoder}`` (float64).

    Args:
        explanations: the K neurons' explanations; truths: their K known concepts.
        encoders: e.g. ``{"clip": clip_text, "mpnet": mpnet_text}``; each maps a list of
            texts to embeddings ``[len, D]``.
    """
    out = {"accuracy": accuracy(explanations, truths)}
    texts = list(dict.fromkeys([*map(str, explanations), *map(str, truths)]))
    for name, encode in encoders.items():
        emb = encode(texts)
        row = {t: i for i, t in enumerate(texts)}
        e = emb[[row[str(t)] for t in explanations]]
        g = emb[[row[str(t)] for t in truths]]
        out[f"{name}_cos"] = cosine(e, g)
    return out


def _reachable(host: str, timeout: float = 3.0) -> bool:
    import socket

    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


class MeanPooledEncoder:
    """Sentence embeddings by mean pooling (all-mpnet-base-v2's model card), via transformers.

    Args:
        name: a hub id or local folder (``sentence-transformers/all-mpnet-base-v2``).
        random_weights: build the architecture of ``config`` with seeded random weights
            (offline tests; the embeddings mean nothing).
        config: architecture overrides for ``random_weights`` (e.g. a small hidden size).
    """

    def __init__(self, name: str = "sentence-transformers/all-mpnet-base-v2",
                 random_weights: bool = False, config: dict | None = None, seed: int = 0,
                 batch_size: int = 64):
        from transformers import AutoModel, AutoTokenizer, MPNetConfig, MPNetModel

        self.batch_size = batch_size
        if random_weights:
            torch.manual_seed(seed)
            self.model = MPNetModel(MPNetConfig(**(dict(config) if config else {})))
            self.tokenizer = None
        else:  # the local copy, else a download (refused at once where the hub is unreachable)
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=True)
                self.model = AutoModel.from_pretrained(name, local_files_only=True)
            except OSError:
                if not _reachable("huggingface.co"):
                    raise OSError(f"{name} is not in the local Hugging Face cache and "
                                  "huggingface.co cannot be reached") from None
                self.tokenizer = AutoTokenizer.from_pretrained(name)
                self.model = AutoModel.from_pretrained(name)
        self.model.eval().requires_grad_(False)

    def _tokens(self, texts: list[str]) -> dict[str, Tensor]:
        if self.tokenizer is not None:
            return self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        # random weights: bytes as token ids (no vocabulary to download)
        vocab = self.model.config.vocab_size
        ids = [[(b % (vocab - 3)) + 3 for b in t.encode()][:64] or [3] for t in texts]
        width = max(map(len, ids))
        input_ids = torch.ones(len(ids), width, dtype=torch.long)  # 1 = pad
        mask = torch.zeros(len(ids), width, dtype=torch.long)
        for i, row in enumerate(ids):
            input_ids[i, :len(row)] = torch.tensor(row)
            mask[i, :len(row)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> Tensor:
        out = []
        for i in range(0, len(texts), self.batch_size):
            tok = self._tokens(list(texts[i:i + self.batch_size]))
            hidden = self.model(**tok).last_hidden_state  # [B, T, D]
            mask = tok["attention_mask"][..., None].to(hidden.dtype)
            emb = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            out.append(torch.nn.functional.normalize(emb, dim=1))
        return torch.cat(out)


# ------------------------------------------------- does an explanation name its concept

_WORD = re.compile(r"[a-z0-9]+")
#: a negated term of a formula label: ``NOT`` (upper case, as formulas write it) and the
#: concept up to the next ``AND`` / ``OR`` / parenthesis, or the parenthesised group after it
_NEGATED = re.compile(r"\bNOT\s+(?:\([^()]*\)|.*?(?=\s+(?:AND|OR)\b|\)|$))")


def _words(text: str) -> list[str]:
    return [w.removesuffix("s") if len(w) > 3 else w for w in _WORD.findall(text.lower())]


def positive_text(explanation: str) -> str:
    """``explanation`` without its negated terms (``circle AND NOT red`` -> ``circle AND``;
    a free-text lower-case "not" stays)."""
    return _NEGATED.sub("", explanation)


def names_concept(explanation: str, truth: str) -> bool:
    """Does ``explanation`` name the ground-truth concept ``truth``?

    Case-insensitive on words (a trailing plural ``s`` ignored): every word of the truth
    appears in the explanation. A compositional explanation (``red AND circle``, ``striped
    red circle``) counts when it contains the concept as a positive term: terms after
    ``NOT`` (``circle AND NOT red``) do not count.

    >>> names_concept("red AND circle", "circle"), names_concept("circle AND NOT red", "red")
    (True, False)
    """
    expl = set(_words(positive_text(explanation)))
    return bool(_words(truth)) and all(w in expl for w in _words(truth))
