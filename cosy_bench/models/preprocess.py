"""Image preprocessing of a model: the weights' own transforms, or an explicit recipe."""

from __future__ import annotations

from collections.abc import Sequence

from torchvision import transforms as T


def from_torchvision_weights(weights: str):
    """The transforms torchvision ships with a weights enum (offline: metadata only)."""
    from torchvision.models import get_weight

    return get_weight(weights).transforms()


def standard(resize: int, crop: int, mean: Sequence[float], std: Sequence[float],
             interpolation: str = "bilinear"):
    """Resize the short side, centre-crop, to tensor, normalise."""
    mode = T.InterpolationMode(interpolation)
    return T.Compose([
        T.Resize(resize, interpolation=mode),
        T.CenterCrop(crop),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])
