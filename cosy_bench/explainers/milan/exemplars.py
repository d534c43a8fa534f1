"""MILAN's exemplar images: the probe images of a unit's top activations, as the model
sees them (resized, cropped, normalisation undone), for the captioner to read with their
masks (the masks and the top-k pass are :mod:`cosy_bench.loops.exemplars`)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset


def _is_normalize(t) -> bool:
    from torchvision import transforms
    from torchvision.transforms import v2

    if isinstance(t, (transforms.Normalize, v2.Normalize)):
        return True
    try:  # the transforms of torchvision's weights enums normalise inside
        from torchvision.transforms._presets import ImageClassification
    except ImportError:  # pragma: no cover
        return False
    return isinstance(t, ImageClassification)


def find_normalization(transform) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(mean [C], std [C]) of the last Normalize inside ``transform`` (a Compose, searched
    through ``.transforms`` and module children recursively), or None."""
    found = None

    def visit(t) -> None:
        nonlocal found
        if _is_normalize(t):
            found = (torch.as_tensor(t.mean, dtype=torch.float32),
                     torch.as_tensor(t.std, dtype=torch.float32))
            return
        children = getattr(t, "transforms", None)
        if isinstance(children, (list, tuple, nn.ModuleList, nn.Sequential)):
            for child in children:
                visit(child)
        elif isinstance(t, nn.Module):
            for child in t.children():
                visit(child)

    visit(transform)
    return found


def exemplar_images(dataset: Dataset, transform, indices: torch.Tensor) -> torch.Tensor:
    """The images at ``indices`` as the model sees them (``transform``'s resize and crop),
    with its Normalize inverted back to [0, 1] (values as they are without a Normalize).

    Args:
        indices: long [...] dataset indices (e.g. [K, k] from :class:`Exemplars`); each
            distinct image is loaded once.

    Returns:
        float [..., 3, H, W].
    """
    indices = torch.as_tensor(indices, dtype=torch.long)
    unique, inverse = torch.unique(indices.reshape(-1), return_inverse=True)
    if unique.numel() == 0:
        raise ValueError("no indices given")
    images = []
    for i in unique.tolist():
        image = dataset[i]
        if image is None:
            raise ValueError(f"probe image {i} could not be read")
        images.append(torch.as_tensor(transform(image)).float())
    batch = torch.stack(images)
    norm = find_normalization(transform)
    if norm is not None:
        mean, std = norm
        batch = (batch * std[:, None, None] + mean[:, None, None]).clamp_(0.0, 1.0)
    return batch[inverse].reshape(*indices.shape, *batch.shape[1:])
