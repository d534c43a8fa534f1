"""Layers of a model: a module path, a reduction to one value per image and neuron, and a
forward hook that captures the module's output and stops the forward pass there."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

REDUCTIONS = ("auto", "spatial_mean", "cls", "flatten", "identity")


@dataclass(frozen=True)
class LayerSpec:
    """``name`` as the user says it; ``module`` a dotted path in the model (None: its output)."""

    name: str
    module: str | None
    reduction: str = "auto"
    ground_truth: object = None  # "class_names", a list of names, or None


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


class LayerExtractor(nn.Module):
    """Runs ``model`` up to ``spec.module`` and returns the reduced activations [B, K]."""

    def __init__(self, model: nn.Module, spec: LayerSpec):
        super().__init__()
        self.model = model
        self.spec = spec
        self.target = model.get_submodule(spec.module) if spec.module else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.target is None:
            return reduce_activations(self.model(x), self.spec.reduction)

        def hook(_module, _inputs, output):
            raise _StopForward(output)

        handle = self.target.register_forward_hook(hook)
        try:
            self.model(x)
        except _StopForward as stop:
            return reduce_activations(stop.output, self.spec.reduction)
        finally:
            handle.remove()
        raise RuntimeError(f"layer {self.spec.name!r} (module {self.spec.module!r}) "
                           "was not reached in the forward pass")
