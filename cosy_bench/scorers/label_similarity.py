"""CLIP-Dissect's evaluation of labels against known concepts (Oikarinen & Weng, ICLR 2023,
Sec. 4.2): for neurons whose true concept is known (a model's output layer: its class
names; the toy world: ground truth), compare each explanation with it.

* ``accuracy``: 1 where the explanation equals the truth after :func:`normalize` (lower
  case, ``_`` and punctuation as spaces, whitespace collapsed), else 0;
* ``clip_cos``: cosine of the CLIP text embeddings of explanation and truth (the paper:
  ViT-B/16's text encoder);
* ``mpnet_cos``: cosine of all-mpnet-base-v2 sentence embeddings (mean pooling of the token
  embeddings over the attention mask, then L2 normalisation, as the model card says).

``protocol``: ``clean`` (the above) or ``paper``, the CLIP-Dissect authors' evaluation
(their ``experiments/table*_quantitative_*.ipynb``): strings compared after
:func:`paper_word` (a trailing ``-s``, Broden's scene suffix, dropped; ``_`` as space; no
lower-casing, ``/`` and ``-`` kept), the ground truth as they take it (:func:`paper_truths`:
ImageNet's full WordNet lines such as ``"tench, Tinca tinca"``, Places365's raw names such as
``"bakery/shop"``), and, given Broden's scenes, accuracy only over the classes with a Broden
counterpart (``name-s`` in ``c_scene.csv``), the other classes NaN (left out of the mean).

All return float64 ``[K]`` (one value per neuron). Text encoders are passed in as
callables ``list[str] -> [K, D]``; :class:`MeanPooledEncoder` is the mpnet one (transformers).
Imports nothing else of cosy_bench but, lazily, the class-name readers of
:mod:`cosy_bench.models.classes`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["PROTOCOLS", "MeanPooledEncoder", "accuracy", "broden_scenes", "cosine",
           "imagenet_lemmas", "label_similarity", "names_concept", "normalize", "paper_accuracy",
           "paper_truths", "paper_word", "positive_text"]

PROTOCOLS = ("clean", "paper")
#: the two ImageNet "crane" classes, as the authors' data/imagenet_labels.txt tells them apart
_CRANES = {134: "crane, bird", 517: "crane, machine"}

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


def paper_word(text: str) -> str:
    """The authors' ``process_word``: ``"kitchen-s"`` -> ``"kitchen"``, ``"sea_lion"`` ->
    ``"sea lion"`` (nothing else changes)."""
    text = str(text)
    return (text[:-2] if text.endswith("-s") else text).replace("_", " ")


def imagenet_lemmas() -> list[str]:
    """ImageNet-1k's WordNet lines in class order (``"tench, Tinca tinca"``), offline from
    timm's metadata, with the two cranes as the authors' file names them: their ground truth."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [_CRANES.get(i, info.index_to_description(i)) for i in range(1000)]


def paper_truths(truths: Sequence[str]) -> list[str]:
    """The ground truth as the authors take it: torchvision's ImageNet names -> the WordNet
    lines; the suite's Places365 names (``"bakery shop"``) -> the raw ones (``"bakery/shop"``,
    from the same category file); anything else (the toy world) unchanged."""
    truths = [str(t) for t in truths]
    if len(truths) == 1000:
        from cosy_bench.models.classes import torchvision_categories

        if truths == torchvision_categories("ResNet18_Weights.IMAGENET1K_V1"):
            return imagenet_lemmas()
    if len(truths) == 365:
        from cosy_bench.models.classes import places365_categories

        try:
            if truths == places365_categories():
                return places365_categories(raw=True)
        except OSError:  # no category file and no network: the names stay
            pass
    return truths


def broden_scenes(root: str) -> set[str]:
    """The scene names of a Broden folder's ``c_scene.csv`` (``"kitchen-s"``, ...)."""
    import csv
    from pathlib import Path

    path = Path(str(root)).expanduser() / "c_scene.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: scorer.label_similarity.broden must be "
                                "a broden1_224 folder (python -m cosy_bench.data.broden)")
    with open(path, newline="", encoding="utf-8") as f:
        return {row["name"] for row in csv.DictReader(f)}


def paper_accuracy(explanations: Sequence[str], truths: Sequence[str],
                   scenes: set[str] | None = None) -> Tensor:
    """float64 ``[K]``, the authors' top-1 accuracy: 1.0 where ``paper_word`` of explanation
    and truth are equal. With Broden's ``scenes``, only classes whose raw name (``/`` as
    ``-``) plus ``-s`` is a scene count, against that label as the authors spell it (``-``
    as ``/``); the others are NaN."""
    if len(explanations) != len(truths):
        raise ValueError(f"{len(explanations)} explanations for {len(truths)} ground truths")
    out = []
    for e, t in zip(explanations, truths, strict=True):
        t = str(t)
        if scenes is None:
            out.append(float(paper_word(e) == paper_word(t)))
        elif t.replace("/", "-") + "-s" in scenes:
            out.append(float(paper_word(e) == paper_word(t.replace("-", "/") + "-s")))
        else:
            out.append(math.nan)
    return torch.tensor(out, dtype=torch.float64)


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise cosine of embeddings ``a [K, D]`` and ``b [K, D]`` -> float64 ``[K]``."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"need two embeddings [K, D] of one shape, got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    a, b = a.double(), b.double()
    return torch.nn.functional.cosine_similarity(a, b, dim=1, eps=1e-12)


def label_similarity(explanations: Sequence[str], truths: Sequence[str],
                     encoders: dict[str, Callable[[list[str]], Tensor]],
                     protocol: str = "clean", scenes: set[str] | None = None
                     ) -> dict[str, Tensor]:
    """``{"accuracy": [K], "<name>_cos": [K] for each encoder}`` (float64).

    Args:
        explanations: the K neurons' explanations; truths: their K known concepts.
        encoders: e.g. ``{"clip": clip_text, "mpnet": mpnet_text}``; each maps a list of
            texts to embeddings ``[len, D]``.
        protocol: ``clean`` or ``paper`` (the module docstring); ``scenes``: Broden's scene
            names for the paper's accuracy (:func:`broden_scenes`), None: every class counts.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"scorer.label_similarity.protocol={protocol!r}: choose one of "
                         f"{list(PROTOCOLS)}")
    if protocol == "paper":
        truths = paper_truths(truths)
        out = {"accuracy": paper_accuracy(explanations, truths, scenes)}
    else:
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
