"""The text-to-image generator interface shared by diffusers pipelines and the toy world."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod

from PIL import Image


def image_seed(concept: str, prompt: str, index: int) -> int:
    """Seed of one synthetic image, a pure function of (concept, full prompt, image index).

    The same image comes out whatever the batch size, the order or the number of processes.
    """
    digest = hashlib.sha256(f"{concept}\x1f{prompt}\x1f{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


class Generator(ABC):
    """Turns prompts into images; one seed per image.

    Subclasses set ``name`` (part of every cache key, so it must change whenever the
    images would) and implement :meth:`generate`.
    """

    name: str = "generator"

    def setup(self, device: str = "cpu") -> None:  # noqa: B027 - optional hook
        """Load weights / move to ``device``. Called once per process before generating."""

    @abstractmethod
    def generate(self, prompts: list[str], seeds: list[int]) -> list[Image.Image]:
        """Return one RGB image per (prompt, seed); image i depends only on prompts[i], seeds[i]."""

    @property
    def cache_key(self) -> str:
        return self.name
