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


def hub_revision(repo_id: str, cache_dir: Path | None = None) -> str | None:
    """The commit of the snapshot a hub id resolves to in the local Hugging Face cache
    (``refs/main``'s folder holding ``model_index.json``), or None where it is not cached.
    Reads the cache only (``cache_dir``, or Hugging Face's default: ``HF_HUB_CACHE``,
    ``HF_HOME/hub``), never the network."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "model_index.json", cache_dir=cache_dir)
    except Exception:  # not a valid repo id, or no huggingface_hub: nothing to record
        return None
    return Path(found).parent.name if isinstance(found, str) else None


def generator_identity(model_id: str | None, option: str, memo_dir: Path | None = None) -> str:
    """What generated a run's images: a local folder's name plus 12 hex digits of its content
    fingerprint (``sdxl-base-1.0@0123456789ab``); a hub id plus 12 hex digits of the cached
    snapshot's commit (``stabilityai/stable-diffusion-xl-base-1.0@462165984030``), or the
    bare id where it is not in the cache; generators without ``model_id`` by their config
    option (``option``)."""
    if not model_id:
        return str(option)
    local = Path(str(model_id)).expanduser()
    if local.exists():
        from cosy_bench.cache.fingerprint import path_fingerprint

        return f"{local.resolve().name}@{path_fingerprint(local, memo_dir)[:12]}"
    revision = hub_revision(str(model_id))
    return f"{model_id}@{revision[:12]}" if revision else str(model_id)


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
