"""MILAN's networks (Hernandez et al., ICLR 2022): a pyramid image encoder over masked
exemplars, a Show-Attend-Tell captioner giving p(d | exemplars), an LSTM language model
giving p(d), and decoding by beam search under the captioner reranked by pointwise mutual
information ``log p(d | E) - λ log p(d)``.

Module and parameter names follow the published checkpoints' state dicts, so that
:mod:`.checkpoints` loads them strictly:

* ``Captioner``: ``encoder.*``, ``lm.*``, ``init_h.0``, ``init_c.0``, ``embedding``,
  ``attend.{query_to_hidden,key_to_hidden,output.0}``, ``feature_gate.0``, ``lstm``,
  ``output.1``;
* ``PyramidEncoder``: ``encoder.model.<backbone>``, ``mean``, ``std``;
* ``LanguageModel``: ``embedding``, ``lstm``, ``output.0``.

Shapes: U units (neurons), n exemplars per unit, F encoder features, V vocabulary entries
(words then the four specials), L decoded tokens, W beam width.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

#: The indexer's special tokens, in the order of their ids after the words.
SPECIALS = ("<start>", "<stop>", "<pad>", "<unk>")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


class Vocabulary:
    """Word list of a captioner; ids ``0..len(words)-1`` are words, then ``<start>``,
    ``<stop>``, ``<pad>``, ``<unk>`` (the published indexer's layout)."""

    def __init__(self, words: Sequence[str]):
        self.words = tuple(str(w) for w in words)
        if len(set(self.words)) != len(self.words):
            raise ValueError("the vocabulary lists a word twice")
        clash = set(self.words) & set(SPECIALS)
        if clash:
            raise ValueError(f"the vocabulary holds special tokens as words: {sorted(clash)}")
        self.ids = {w: i for i, w in enumerate(self.words)}
        n = len(self.words)
        self.start, self.stop, self.pad, self.unk = n, n + 1, n + 2, n + 3

    def __len__(self) -> int:
        return len(self.words) + len(SPECIALS)

    @staticmethod
    def tokenize(text: str) -> list[str]:
        """Lower-cased words and punctuation marks."""
        return _TOKEN.findall(text.lower())

    def encode(self, texts: Sequence[str], length: int | None = None) -> torch.Tensor:
        """long [B, T]: ``<start> words <stop> <pad>...`` (unknown words -> ``<unk>``);
        ``length`` caps the words per text."""
        rows = [[self.ids.get(t, self.unk) for t in self.tokenize(s)][:length] for s in texts]
        width = max(len(r) for r in rows) + 2
        out = torch.full((len(rows), width), self.pad, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r) + 2] = torch.tensor([self.start, *r, self.stop])
        return out

    def decode(self, ids: Sequence[int]) -> str:
        """The words up to the first ``<stop>``, specials (``<unk>`` too) dropped, joined by
        spaces with ``. , ; :`` attached to the word before and ``-`` to both sides."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.stop:
                break
            if i < len(self.words):
                words.append(self.words[i])
        text = re.sub(r"\s+([.,;:])", r"\1", " ".join(words))
        return re.sub(r"\s*-\s*", "-", text)


# ----------------------------------------------------------------------------- encoder


def _torchvision(arch: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        return getattr(torchvision.models, arch)(weights=None)

    return build


def _toy_cnn() -> nn.Module:
    from cosy_bench.toyworld.model import ToyCNN

    return ToyCNN()


@dataclass(frozen=True)
class Backbone:
    """A registered image classifier read at ``layers`` (their channels sum to
    ``feature_size``), with the normalisation it expects."""

    build: Callable[[], nn.Module]
    layers: tuple[str, ...]
    feature_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


_RESNET_LAYERS = ("conv1", "layer1", "layer2", "layer3", "layer4")
#: The published encoder configs (``PyramidConvEncoder.configs`` of the authors' code) and
#: the toy world's.
BACKBONES: dict[str, Backbone] = {
    "alexnet": Backbone(_torchvision("alexnet"),
                        ("features.0", "features.3", "features.6", "features.8",
                         "features.10"), 1152),
    "resnet18": Backbone(_torchvision("resnet18"), _RESNET_LAYERS, 1024),
    "resnet50": Backbone(_torchvision("resnet50"), _RESNET_LAYERS, 3904),
    "resnet101": Backbone(_torchvision("resnet101"), _RESNET_LAYERS, 3904),
    "toy_cnn": Backbone(_toy_cnn, ("conv1", "conv2", "conv3", "conv4"), 320,
                        (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
}


class _Instrumented(nn.Module):
    """Holds the backbone as ``.model`` (the published key prefix ``encoder.model.``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model


class PyramidEncoder(nn.Module):
    """One feature vector per (image, mask): the backbone's maps at every layer of
    ``BACKBONES[config].layers``, each pooled under the mask (resized bilinearly to the
    map and normalised to sum 1), concatenated.

    Args:
        config: a key of :data:`BACKBONES`.
        **kwargs: recorded as in the published checkpoints (e.g. ``pretrained``); the
            backbone's weights come from the checkpoint's state dict.
    """

    def __init__(self, config: str = "resnet101", **kwargs):
        super().__init__()
        if config not in BACKBONES:
            raise ValueError(f"unknown MILAN encoder {config!r}; known: {sorted(BACKBONES)}")
        spec = BACKBONES[config]
        self.config, self.kwargs, self.layers = config, dict(kwargs), spec.layers
        self.feature_size = spec.feature_size
        self.encoder = _Instrumented(spec.build())
        self.encoder.eval()
        modules = dict(self.encoder.model.named_modules())
        self._read = [(name, modules[name]) for name in self.layers]  # not registered again
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        """images float [N, 3, H, W] in [0, 1], masks [N, 1, H, W] (None: whole image)
        -> features [N, F]."""
        if masks is None:
            masks = images.new_ones(len(images), 1, *images.shape[-2:])
        x = (images - self.mean) / self.std
        maps: dict[str, torch.Tensor] = {}

        def keep(name):
            def hook(_m, _i, out):
                maps[name] = out
            return hook

        # the whole forward runs, as in the authors' encoder: an in-place op after a read
        # layer (AlexNet's ReLU after features.10) acts on the map read there
        handles = [module.register_forward_hook(keep(name)) for name, module in self._read]
        try:
            self.encoder.model(x)
        finally:
            for h in handles:
                h.remove()
        pooled = []
        for name in self.layers:
            fs = maps[name]
            ms = F.interpolate(masks.float(), size=fs.shape[-2:], mode="bilinear",
                               align_corners=False)
            total = ms.sum(dim=(-1, -2), keepdim=True)
            ms = torch.where(total > 1e-8, ms / total.clamp_min(1e-8), torch.zeros_like(ms))
            pooled.append((fs * ms).sum(dim=(-1, -2)))
        return torch.cat(pooled, dim=-1)


# ----------------------------------------------------------------------------- captioner


class Attention(nn.Module):
    """Additive attention of Show, Attend and Tell: weights [B, n] over keys [B, n, D_k]
    for a query [B, D_q]."""

    def __init__(self, query_size: int, key_size: int, hidden_size: int | None = None):
        super().__init__()
        self.hidden_size = hidden_size or min(query_size, key_size)
        self.query_to_hidden = nn.Linear(query_size, self.hidden_size)
        self.key_to_hidden = nn.Linear(key_size, self.hidden_size)
        self.output = nn.Sequential(nn.Linear(self.hidden_size, 1), nn.Softmax(dim=1))

    def forward(self, query: torch.Tensor, keys: torch.Tensor,
                projected_keys: torch.Tensor | None = None) -> torch.Tensor:
        """``projected_keys``: ``key_to_hidden(keys)``, when the caller computed it once."""
        if projected_keys is None:
            projected_keys = self.key_to_hidden(keys)
        hidden = torch.tanh(self.query_to_hidden(query)[:, None] + projected_keys)
        return self.output(hidden).view(*keys.shape[:2])


class LanguageModel(nn.Module):
    """LSTM language model p(d) over the captioner's vocabulary."""

    def __init__(self, vocab: Vocabulary, embedding_size: int = 128, hidden_size: int = 512,
                 layers: int = 2, dropout: float = 0.5):
        super().__init__()
        self.vocab = vocab
        self.embedding_size, self.hidden_size = embedding_size, hidden_size
        self.layers, self.dropout = layers, dropout
        self.embedding = nn.Embedding(len(vocab), embedding_size, padding_idx=vocab.pad)
        self.lstm = nn.LSTM(embedding_size, hidden_size, num_layers=layers,
                            dropout=dropout if layers > 1 else 0.0, batch_first=True)
        self.output = nn.Sequential(nn.Linear(hidden_size, len(vocab)), nn.LogSoftmax(dim=-1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens long [B, T] (``<start>`` first) -> next-token log-probs [B, T, V]."""
        hidden, _ = self.lstm(self.embedding(tokens))
        return self.output(hidden)

    def sequence_log_prob(self, tokens: torch.Tensor) -> torch.Tensor:
        """log p(d) [B] of decoded tokens [B, L] (no ``<start>``): the sum over tokens up to
        and including the first ``<stop>`` (all L when none)."""
        starts = tokens.new_full((len(tokens), 1), self.vocab.start)
        lp = self(torch.cat([starts, tokens], dim=1))[:, :-1]
        per_token = lp.gather(-1, tokens[..., None]).squeeze(-1)
        return (per_token * _until_stop(tokens, self.vocab.stop)).sum(dim=-1)


def _until_stop(tokens: torch.Tensor, stop: int) -> torch.Tensor:
    """float [..., L]: 1 up to and including the first ``stop`` token, 0 after."""
    is_stop = (tokens == stop).long()
    before = is_stop.cumsum(-1) - is_stop  # stops strictly before each position
    return (before == 0).float()


@dataclass
class Beam:
    """Beam-search result: tokens long [U, W, L] (``<stop>``-padded), scores [U, W] (sum of
    log p(token | exemplars, prefix)), best first."""

    tokens: torch.Tensor
    scores: torch.Tensor


class Captioner(nn.Module):
    """MILAN's decoder: attention over exemplar features, an LSTM cell, p(d | E).

    Args:
        vocab: the word list.
        encoder: the image encoder (its ``feature_size`` is F).
        lm: the language model for PMI reranking (None: likelihood decoding).
        embedding_size, hidden_size, attention_hidden_size, dropout: sizes (published:
            128, 512, None = min(F, hidden), 0.5).
        length, strategy, temperature, beam_size: decoding defaults (published: 15,
            ``rerank`` with an LM else ``beam``, 0.2, 50).
    """

    def __init__(self, vocab: Vocabulary, encoder: PyramidEncoder,
                 lm: LanguageModel | None = None, embedding_size: int = 128,
                 hidden_size: int = 512, attention_hidden_size: int | None = None,
                 dropout: float = 0.5, length: int = 15, strategy: str | None = None,
                 temperature: float = 0.2, beam_size: int = 50):
        super().__init__()
        if lm is not None and lm.vocab.words != vocab.words:
            raise ValueError("the language model and the captioner have different vocabularies")
        self.vocab, self.encoder, self.lm = vocab, encoder, lm
        self.embedding_size, self.hidden_size = embedding_size, hidden_size
        self.attention_hidden_size, self.dropout = attention_hidden_size, dropout
        self.length, self.temperature, self.beam_size = length, temperature, beam_size
        self.strategy = strategy or ("rerank" if lm is not None else "beam")
        f, v = encoder.feature_size, len(vocab)
        self.init_h = nn.Sequential(nn.Linear(f, hidden_size), nn.Tanh())
        self.init_c = nn.Sequential(nn.Linear(f, hidden_size), nn.Tanh())
        self.embedding = nn.Embedding(v, embedding_size)
        self.attend = Attention(hidden_size, f, hidden_size=attention_hidden_size)
        self.feature_gate = nn.Sequential(nn.Linear(hidden_size, f), nn.Sigmoid())
        self.lstm = nn.LSTMCell(embedding_size + f, hidden_size)
        self.output = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(hidden_size, v),
                                    nn.LogSoftmax(dim=-1))

    @property
    def feature_size(self) -> int:
        return self.encoder.feature_size

    def encode(self, images: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        """images [U, n, 3, H, W], masks [U, n, 1, H, W] -> features [U, n, F]."""
        u, n = images.shape[:2]
        flat_masks = None if masks is None else masks.reshape(u * n, *masks.shape[2:])
        return self.encoder(images.reshape(u * n, *images.shape[2:]), flat_masks).view(u, n, -1)

    def init_state(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = features.mean(dim=1)
        return self.init_h(pooled), self.init_c(pooled)

    def step(self, features: torch.Tensor, tokens: torch.Tensor,
             state: tuple[torch.Tensor, torch.Tensor], projected_keys: torch.Tensor | None = None):
        """One step: log p(next | prefix, E) [B, V], attention [B, n], new (h, c)."""
        h, c = state
        attention = self.attend(h, features, projected_keys)
        attended = (attention[..., None] * features).sum(dim=1) * self.feature_gate(h)
        h, c = self.lstm(torch.cat([self.embedding(tokens), attended], dim=-1), (h, c))
        return self.output(h), attention, (h, c)

    def forward(self, features: torch.Tensor, tokens: torch.Tensor):
        """Teacher forcing: features [B, n, F], tokens [B, T] (``<start>`` first) ->
        log-probs [B, T-1, V] of tokens[:, 1:], attentions [B, T-1, n]."""
        state = self.init_state(features)
        keys = self.attend.key_to_hidden(features)
        log_probs, attentions = [], []
        for t in range(tokens.shape[1] - 1):
            lp, att, state = self.step(features, tokens[:, t], state, keys)
            log_probs.append(lp)
            attentions.append(att)
        return torch.stack(log_probs, dim=1), torch.stack(attentions, dim=1)

    @torch.no_grad()
    def beam_search(self, features: torch.Tensor, beam_size: int | None = None,
                    length: int | None = None) -> Beam:
        """The ``beam_size`` most likely captions of each unit under p(d | E), up to
        ``length`` tokens. A caption that emitted ``<stop>`` stays finished (its score no
        longer changes) and keeps competing with the open ones. Captions have at least one
        word; ``<start>`` and ``<pad>`` are never emitted."""
        beam_size = beam_size or self.beam_size
        length = length or self.length
        u, n, f = features.shape
        v = len(self.vocab)
        stop = self.vocab.stop
        tokens = torch.empty(u, 1, 0, dtype=torch.long, device=features.device)
        scores = features.new_zeros(u, 1)
        h, c = self.init_state(features)
        current = torch.full((u,), self.vocab.start, dtype=torch.long, device=features.device)
        feats, unit_keys = features, self.attend.key_to_hidden(features)
        keys = unit_keys
        never = torch.tensor([self.vocab.start, self.vocab.pad], device=features.device)
        for t in range(length):
            w = scores.shape[1]
            lp, _, (h, c) = self.step(feats, current, (h, c), keys)
            lp = lp.view(u, w, v).clone()
            lp[..., never] = float("-inf")  # never valid outputs
            if t == 0:
                lp[..., stop] = float("-inf")  # a description has at least one word
            if tokens.shape[2]:
                done = tokens[:, :, -1] == stop  # [U, w]
                frozen = torch.full_like(lp, float("-inf"))
                frozen[..., stop] = 0.0
                lp = torch.where(done[..., None], frozen, lp)
            total = (scores[..., None] + lp).view(u, w * v)
            k = min(beam_size, w * v)
            scores, flat = total.topk(k, dim=1)
            parent, word = flat // v, flat % v
            tokens = torch.cat([tokens.gather(1, parent[..., None].expand(-1, -1, tokens.shape[2])),
                                word[..., None]], dim=2)
            rows = (parent + torch.arange(u, device=parent.device)[:, None] * w).flatten()
            h, c = h[rows], c[rows]
            feats = features.repeat_interleave(k, dim=0)
            keys = unit_keys.repeat_interleave(k, dim=0)
            current = word.flatten()
            if bool((word == stop).all()):
                break
        if tokens.shape[2] < length:  # every caption finished early
            pad = tokens.new_full((u, tokens.shape[1], length - tokens.shape[2]), stop)
            tokens = torch.cat([tokens, pad], dim=2)
        return Beam(tokens, scores)

    @torch.no_grad()
    def describe(self, features: torch.Tensor, strategy: str | None = None,
                 temperature: float | None = None, beam_size: int | None = None,
                 length: int | None = None, top_k: int = 1) -> list[dict]:
        """One description per unit of features [U, n, F].

        ``rerank`` (with an LM): the beam's caption maximising
        ``log p(d | E) - temperature * log p(d)``; ``beam``: the most likely caption.
        Returns per unit ``{"description", "log_p_caption", "log_p_lm", "score"}``; with
        ``top_k > 1`` also ``"more"``: the next best distinct captions of the beam by the
        same score (up to ``top_k - 1``, best first), dicts of the same keys.
        """
        strategy = strategy or self.strategy
        temperature = self.temperature if temperature is None else temperature
        if strategy not in ("beam", "rerank"):
            raise ValueError(f"unknown MILAN decoding strategy {strategy!r}: beam or rerank")
        if strategy == "rerank" and self.lm is None:
            raise ValueError("strategy=rerank needs a language model; this checkpoint has "
                             "none (use explainer.strategy=beam)")
        beam = self.beam_search(features, beam_size=beam_size, length=length)
        u, w, l_ = beam.tokens.shape
        if strategy == "rerank":
            lm = self.lm.sequence_log_prob(beam.tokens.view(u * w, l_)).view(u, w)
            score = pmi_scores(beam.scores, lm, temperature)
        else:
            lm = torch.full_like(beam.scores, float("nan"))
            score = beam.scores
        # a beam narrower than requested can hold impossible (-inf) captions; never pick them
        score = torch.where(torch.isfinite(beam.scores) & ~torch.isnan(score), score,
                            torch.full_like(score, float("-inf")))
        best = score.argmax(dim=1)

        def caption(i: int, j: int) -> dict:
            return {"description": self.vocab.decode(beam.tokens[i, j].tolist()),
                    "log_p_caption": float(beam.scores[i, j]), "log_p_lm": float(lm[i, j]),
                    "score": float(score[i, j])}

        out = [caption(i, int(best[i])) for i in range(u)]
        if top_k > 1:
            order = torch.sort(score, dim=1, descending=True, stable=True).indices
            for i, rec in enumerate(out):
                seen, rec["more"] = {rec["description"]}, []
                for j in order[i].tolist():
                    alt = caption(i, j)
                    if len(rec["more"]) < top_k - 1 and alt["description"] not in seen \
                            and math.isfinite(alt["score"]):
                        seen.add(alt["description"])
                        rec["more"].append(alt)
        return out


def pmi_scores(log_p_caption: torch.Tensor, log_p_lm: torch.Tensor,
               temperature: float) -> torch.Tensor:
    """MILAN's reranking score ``log p(d | E) - λ log p(d)``, elementwise (any shape)."""
    return log_p_caption - temperature * log_p_lm
