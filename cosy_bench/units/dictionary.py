"""A sparse dictionary over a layer's units: the encoder that turns the layer's C activations
into D latents (an SAE's features), and its decoder.

``z = act((x - b_dec [if pre_bias]) @ W_enc + b_enc)``, ``x_hat = z @ W_dec + b_dec``, with
``act`` one of ``topk`` (the k largest pre-activations of each row, through a ReLU; the
others 0), ``relu`` or ``jumprelu`` (``h`` where ``h > threshold``, else 0). Imports no other
module of cosy_bench.
"""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = ("topk", "relu", "jumprelu")
#: rows encoded at once by :meth:`SparseDictionary.encode_rows` (bounds the [rows, D] block)
ENCODE_CHUNK = 8192


class SparseDictionary(nn.Module):
    """The encoder and decoder of a sparse dictionary (all tensors float32 buffers).

    Args:
        W_enc: [C, D] encoder weights (C layer units in, D latents out).
        b_enc: [D] encoder bias.
        W_dec: [D, C] decoder (one dictionary atom per row).
        b_dec: [C] decoder bias.
        activation: ``topk``, ``relu`` or ``jumprelu``.
        k: latents kept per row (``topk`` only; 1 <= k <= D).
        threshold: [D] per-latent threshold (``jumprelu`` only).
        pre_bias: subtract ``b_dec`` from the input before encoding (SAELens'
            ``apply_b_dec_to_input``).
        source: where it came from (a file, or ``trained``), for messages.
    """

    def __init__(self, W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor,  # noqa: N803
                 b_dec: torch.Tensor, activation: str = "topk", k: int | None = None,
                 threshold: torch.Tensor | None = None, pre_bias: bool = True,
                 source: str = "trained"):
        super().__init__()
        where = f"sparse dictionary ({source})"
        if activation not in ACTIVATIONS:
            raise ValueError(f"{where}: activation {activation!r} is not one of {ACTIVATIONS}")
        if W_enc.ndim != 2:
            raise ValueError(f"{where}: W_enc must be [d_in, d_sae], got {tuple(W_enc.shape)}")
        c, d = W_enc.shape
        expected = {"b_enc": (d,), "W_dec": (d, c), "b_dec": (c,)}
        got = {"b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
        if activation == "jumprelu":
            if threshold is None:
                raise ValueError(f"{where}: a jumprelu dictionary needs a threshold [d_sae]")
            expected["threshold"], got["threshold"] = (d,), threshold
        bad = [f"{n} {tuple(t.shape)} (expected {e})" for n, e in expected.items()
               if tuple((t := got[n]).shape) != e]
        if bad:
            raise ValueError(f"{where}: W_enc is [{c}, {d}] (d_in={c}, d_sae={d}) but "
                             + "; ".join(bad))
        if activation == "topk" and (k is None or not 1 <= int(k) <= d):
            raise ValueError(f"{where}: topk needs 1 <= k <= d_sae={d}, got k={k}")
        for name, t in {"W_enc": W_enc, **got}.items():
            t = t.detach().float().contiguous()
            if not torch.isfinite(t).all():
                raise ValueError(f"{where}: {name} holds NaN or inf values")
            self.register_buffer(name, t)
        self.activation = activation
        self.k = int(k) if activation == "topk" else None
        self.pre_bias = bool(pre_bias)
        self.source = source

    @property
    def d_in(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def d_sae(self) -> int:
        return int(self.W_enc.shape[1])

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activations [..., D] of layer activations x [..., C]."""
        x = x.to(self.W_enc.dtype)
        if self.pre_bias:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def activate(self, h: torch.Tensor) -> torch.Tensor:
        """Latents [..., D] of pre-activations h [..., D]."""
        if self.activation == "relu":
            return torch.relu(h)
        if self.activation == "jumprelu":
            return torch.where(h > self.threshold, h, torch.zeros_like(h)).clamp_min(0)
        top = torch.topk(h, self.k, dim=-1)
        return torch.zeros_like(h).scatter(-1, top.indices, torch.relu(top.values))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latents [..., D] of layer activations x [..., C]."""
        if x.shape[-1] != self.d_in:
            raise ValueError(f"sparse dictionary ({self.source}) reads d_in={self.d_in} units "
                             f"but the layer gives {x.shape[-1]}: the dictionary was made for "
                             "another layer (units.path)")
        return self.activate(self.pre_activations(x))

    def encode_rows(self, x: torch.Tensor) -> torch.Tensor:
        """Latents [N, D] of x [N, C], ``ENCODE_CHUNK`` rows at a time (no [N, D] temporaries
        beyond the result)."""
        out = torch.empty(x.shape[0], self.d_sae, dtype=torch.float32)
        with torch.no_grad():
            for r in range(0, x.shape[0], ENCODE_CHUNK):
                out[r:r + ENCODE_CHUNK] = self.encode(x[r:r + ENCODE_CHUNK].float())
        return out

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstructions [..., C] of latents z [..., D]."""
        return z @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)

    def encode_maps(self, maps: torch.Tensor) -> torch.Tensor:
        """Latent maps [B, D, h, w] of unit maps [B, C, h, w]: the encoder at every position."""
        if maps.ndim != 4:
            raise ValueError(f"unit maps must be [B, C, h, w], got {tuple(maps.shape)}")
        return self.encode(maps.movedim(1, -1)).movedim(-1, 1)

    def wrap(self, extractor: nn.Module) -> EncodedExtractor:
        """``extractor`` (images -> [B, C]) followed by this encoder (-> [B, D])."""
        return EncodedExtractor(extractor, self)

    def wrap_spatial(self, extractor: nn.Module) -> EncodedSpatialExtractor:
        """``extractor`` (images -> [B, C, h, w]) followed by this encoder at every position."""
        return EncodedSpatialExtractor(extractor, self)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Its tensors by SAELens' names (``threshold`` for jumprelu only)."""
        names = ["W_enc", "b_enc", "W_dec", "b_dec"] + \
            (["threshold"] if self.activation == "jumprelu" else [])
        return {n: getattr(self, n) for n in names}

    def settings(self) -> dict:
        """What besides its tensors decides its latents."""
        return {"activation": self.activation, "k": self.k, "pre_bias": self.pre_bias,
                "d_in": self.d_in, "d_sae": self.d_sae}


class EncodedExtractor(nn.Module):
    """A layer extractor followed by the dictionary's encoder: latents [B, D] of images."""

    def __init__(self, extractor: nn.Module, dictionary: SparseDictionary):
        super().__init__()
        self.extractor, self.dictionary = extractor, dictionary

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dictionary.encode(self.extractor(x).float())


class EncodedSpatialExtractor(nn.Module):
    """A spatial extractor ([B, C, h, w] unit maps) followed by the encoder at every position:
    latent maps [B, D, h, w]. The encoder is nonlinear, so the spatial mean of a latent map is
    not the latent of the pooled activations (see docs/units.md)."""

    def __init__(self, extractor: nn.Module, dictionary: SparseDictionary):
        super().__init__()
        self.extractor, self.dictionary = extractor, dictionary

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dictionary.encode_maps(self.extractor(x).float())
