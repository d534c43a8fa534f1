"""The text-to-image generator interface shared by diffusers pipelines and the toy world."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from pathlib import Path

from PIL import Image


def image_seed(concept: str, prompt: str, index: int) -> int:
    """Seed of one synthetic image, a pure function of (concept, full prompt, image index).

    The same image comes out whatever the batch size, the order or the number of processes.
    """
    digest = hashlib.sha256(f"{concept}\x1f{prompt}\x1f{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def generator_identity(model_id: str | None, option: str, memo_dir: Path | None = None) -> str:
    """What generated a run's images: a diffusers pipeline's hub id, or its local folder's
    name plus 12 hex digits of its content fingerprint (``sdxl-base-1.0@0123456789ab``);
    generators without ``model_id`` by their config option (``option``)."""
    if not model_id:
        return str(option)
    local = Path(str(model_id)).expanduser()
    if local.exists():
        from cosy_bench.cache.fingerprint import path_fingerprint

        return f"{local.resolve().name}@{path_fingerprint(local, memo_dir)[:12]}"
    return str(model_id)


def generator_id(cfg) -> str:
    """:func:`generator_identity` of a run's config (``generator.model_id``, the option)."""
    from omegaconf import OmegaConf

    memo = Path(str(cfg.paths.cache_dir)) / "fingerprints" if cfg.get("paths") else None
    return generator_identity(OmegaConf.select(cfg, "generator.model_id", default=None),
                              str(cfg.generator_name), memo)


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
