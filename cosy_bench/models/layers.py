"""Layers of a model: a module path, a reduction to one value per image and neuron, and a
forward hook that captures the module's output and stops the forward pass there.

:class:`LayerExtractor` gives one value per image and unit ([B, K]); :class:`SpatialExtractor`
gives each unit's activation map ([B, K, h, w]), for explainers that look at where a unit
fires (MILAN's exemplar masks)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

REDUCTIONS = ("auto", "spatial_mean", "cls", "flatten", "identity")


@dataclass(frozen=True)
class LayerSpec:
    """``name`` as the user says it; ``module`` a dotted path in the model (None: its output).

    ``spatial``: for a layer that pools a feature map globally (an average pool, or a Linear
    after one), the module path of that map [B, C, h, w]; :class:`SpatialExtractor` reads
    the unit maps there. None: the layer's own output is the map (4-D or ViT tokens).
    """

    name: str
    module: str | None
    reduction: str = "auto"
    ground_truth: object = None  # "class_names", a list of names, or None
    spatial: str | None = None


def reduce_activations(out: torch.Tensor, reduction: str = "auto") -> torch.Tensor:
    """[B, C, H, W] -> spatial mean; [B, T, D] -> CLS token (index 0); [B, K] -> as is.

    Returns [B, K].
    """
    if isinstance(out, (tuple, list)):
        out = out[0]
    if reduction == "auto":
        reduction = {4: "spatial_mean", 3: "cls", 2: "identity"}.get(out.ndim, "flatten")
    if reduction == "spatial_mean":
        if out.ndim != 4:
            raise ValueError(f"spatial_mean expects [B, C, H, W], got {tuple(out.shape)}")
        return out.mean(dim=(2, 3))
    if reduction == "cls":
        if out.ndim != 3:
            raise ValueError(f"cls expects [B, T, D], got {tuple(out.shape)}")
        return out[:, 0]
    if reduction == "flatten":
        return out.flatten(1)
    if reduction == "identity":
        return out
    raise ValueError(f"unknown reduction {reduction!r}; choose one of {REDUCTIONS}")


class _StopForward(Exception):
    def __init__(self, output):
        self.output = output


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def _run_to(model: nn.Module, target: nn.Module | None, x: torch.Tensor, spec: LayerSpec,
            capture: nn.Module | None = None) -> tuple[object, object]:
    """Run ``model`` on ``x`` until ``target`` returns (the whole model when None).

    Returns (``target``'s output, the output of ``capture`` on its last call before that, or
    None). The forward pass stops at ``target``: nothing after the layer runs.
    """
    captured = []
    handles = []
    if capture is not None:
        handles.append(capture.register_forward_hook(
            lambda _m, _i, output: captured.append(output)))
    if target is not None:
        def stop(_module, _inputs, output):
            raise _StopForward(output)

        handles.append(target.register_forward_hook(stop))
    try:
        out = model(x)
        if target is not None:
            raise RuntimeError(f"layer {spec.name!r} (module {spec.module!r}) "
                               "was not reached in the forward pass")
    except _StopForward as stopped:
        out = stopped.output
    finally:
        for handle in handles:
            handle.remove()
    return out, (captured[-1] if captured else None)


class LayerExtractor(nn.Module):
    """Runs ``model`` up to ``spec.module`` and returns the reduced activations [B, K]."""

    def __init__(self, model: nn.Module, spec: LayerSpec):
        super().__init__()
        self.model = model
        self.spec = spec
        self.target = model.get_submodule(spec.module) if spec.module else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = _run_to(self.model, self.target, x, self.spec)
        return reduce_activations(out, self.spec.reduction)


def _spatial_fix(spec: LayerSpec) -> str:
    return (f"set layers.{spec.name}.spatial=<module path of the feature map it pools> in the "
            f"model config (command line: +model.layers.{spec.name}.spatial=...)")


def tokens_to_grid(tokens: torch.Tensor, spec: LayerSpec) -> torch.Tensor:
    """ViT tokens [B, T, D] (CLS first) -> patch-token grid [B, D, g, g], g * g = T - 1."""
    b, t, d = tokens.shape
    g = math.isqrt(max(t - 1, 0))
    if t < 2 or g * g != t - 1:
        raise ValueError(
            f"layer {spec.name!r} (module {spec.module!r}) gives {t} tokens: {t} - 1 (after the "
            "CLS token) patch tokens do not form a square grid (register or distillation "
            f"tokens?); {_spatial_fix(spec)}")
    return tokens[:, 1:].transpose(1, 2).reshape(b, d, g, g)


class SpatialExtractor(nn.Module):
    """Runs ``model`` and returns the activation map of every unit of the layer ``spec``.

    * ``spec.spatial`` set: the output S [B, C, h, w] of that module is captured on the way to
      the layer. A :class:`~torch.nn.Linear` layer gives the class-activation map
      ``W S[:, :, i, j] + b`` at every position; its spatial mean is the layer's activation
      (global average pooling is linear), which is checked on every batch. Any other layer (a
      global pool) gives S itself, and must have C units. ViT tokens S [B, T, D] (a
      classification head reading the CLS token, e.g. vit_b16's ``output``) give the head
      applied to every patch token, [B, K, g, g] (its mean is not the CLS-token logit).
    * else the layer's own output: a map [B, K, h, w] with h * w > 1 as it is; ViT tokens
      [B, T, D] as the grid of the T - 1 patch tokens (CLS dropped), [B, D, g, g]. (Such a
      layer's activation is read at the CLS token, which is not the mean of these maps.)

    Returns float maps [B, K, h, w] in the model's dtype. A layer without a spatial map
    (e.g. [B, K] logits without ``spatial``) raises a ValueError naming the fix.
    """

    def __init__(self, model: nn.Module, spec: LayerSpec):
        super().__init__()
        self.model = model
        self.spec = spec
        self.target = model.get_submodule(spec.module) if spec.module else None
        self.source = model.get_submodule(spec.spatial) if spec.spatial else None
        if self.source is not None and self.target is None:
            raise ValueError(f"layer {spec.name!r} is the model's output (module: null): "
                             f"name its module (layers.{spec.name}.module) to read its maps at "
                             f"spatial={spec.spatial!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Unit maps [B, K, h, w] of images x [B, 3, H, W]."""
        out, feature_map = _run_to(self.model, self.target, x, self.spec, capture=self.source)
        out = _first(out)
        if self.source is None:
            return self._own_map(out)
        if feature_map is None:
            raise ValueError(f"layer {self.spec.name!r}: module {self.spec.spatial!r} (its "
                             "spatial map) did not run before the layer")
        return self._pooled_map(_first(feature_map), out)

    def _own_map(self, out: torch.Tensor) -> torch.Tensor:
        if out.ndim == 4 and out.shape[2] * out.shape[3] > 1:
            return out
        if out.ndim == 3:
            return tokens_to_grid(out, self.spec)
        raise ValueError(f"layer {self.spec.name!r} (module {self.spec.module!r}) gives "
                         f"activations of shape {tuple(out.shape)}, which have no spatial map; "
                         f"{_spatial_fix(self.spec)}")

    def _pooled_map(self, fmap: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        if fmap.ndim == 3:  # ViT tokens: the layer's head applied to every patch token
            grid = tokens_to_grid(fmap, spec)  # [B, D, g, g]
            maps = self.target(grid.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # [B, K, g, g]
            # (the layer reads the CLS token: the mean of these maps is not its activation)
            return maps.contiguous()
        if fmap.ndim != 4:
            raise ValueError(f"layer {spec.name!r}: spatial={spec.spatial!r} gives shape "
                             f"{tuple(fmap.shape)}, not a feature map [B, C, h, w]")
        acts = reduce_activations(out, spec.reduction)  # [B, K]
        if isinstance(self.target, nn.Linear):
            weight = self.target.weight
            if weight.shape[1] != fmap.shape[1]:
                raise ValueError(f"layer {spec.name!r}: the Linear reads {weight.shape[1]} "
                                 f"features, spatial={spec.spatial!r} has {fmap.shape[1]} "
                                 "channels")
            maps = torch.einsum("kc,bchw->bkhw", weight, fmap)
            if self.target.bias is not None:
                maps = maps + self.target.bias[None, :, None, None]
            _check_mean(maps, acts, spec)
            return maps
        if acts.shape != fmap.shape[:2]:
            units = acts.shape[1] if acts.ndim == 2 else tuple(acts.shape)
            raise ValueError(f"layer {spec.name!r} has {units} units per image but "
                             f"spatial={spec.spatial!r} has {fmap.shape[1]} channels: the map "
                             "of a pooling layer is its input feature map")
        return fmap


def _check_mean(maps: torch.Tensor, acts: torch.Tensor, spec: LayerSpec) -> None:
    """The spatial mean of a class-activation map must be the layer's activation."""
    mean = maps.float().mean(dim=(2, 3))
    if acts.shape != mean.shape:
        raise ValueError(f"layer {spec.name!r}: activations of shape {tuple(acts.shape)}, but "
                         f"maps of shape {tuple(maps.shape)} from spatial={spec.spatial!r}")
    if not acts.numel():
        return
    tol = torch.finfo(maps.dtype).eps ** 0.5 * (1.0 + float(acts.float().abs().max()))
    err = float((mean - acts.float()).abs().max())
    if not err <= tol:
        raise ValueError(
            f"layer {spec.name!r}: the spatial mean of its maps from spatial={spec.spatial!r} "
            f"differs from its activations (max error {err:.3g}): the layer does not read the "
            "global average of that map (is there a nonlinearity or another pooling between "
            "them?); choose the module whose output is averaged")
