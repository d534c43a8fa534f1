"""A control set from any torchvision dataset: PIL images and a ``name`` (the cache key:
change it whenever the images change)."""

from __future__ import annotations

from torch.utils.data import Dataset
from torchvision.datasets import FakeData


class FakeControlSet(Dataset):
    """``n`` random RGB images of ``size`` pixels (torchvision's ``FakeData``, seeded by
    ``seed``); swap in ``torchvision.datasets.ImageFolder`` or any dataset of images."""

    def __init__(self, n: int = 32, size: int = 64, seed: int = 0):
        self.data = FakeData(size=n, image_size=(3, size, size), random_offset=seed)
        self.name = f"fakedata:n{n}:size{size}:s{seed}"

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        """The RGB PIL image ``i`` (the model's preprocessing is applied by the suite)."""
        image, _ = self.data[i]
        return image.convert("RGB")
