"""Concept sets for CLIP-Dissect (and the random explainer): lists of candidate labels.

Every function returns a list of strings; select one by config
(``explainer.concepts._target_``) or pass a list or a text-file path.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

from cosy_bench.cache import default_cache_dir, write_text_atomic

#: The CLIP-Dissect authors' concept lists (the 20k/10k/3k most common English words).
COMMON_WORDS_URL = ("https://raw.githubusercontent.com/Trustworthy-ML-Lab/CLIP-dissect/main/"
                    "data/{n}.txt")
BRODEN_URL = ("https://raw.githubusercontent.com/Trustworthy-ML-Lab/CLIP-dissect/main/data/"
              "broden_labels_clean.txt")


def text_file(path: str) -> list[str]:
    """One concept per line (blank lines and duplicates dropped, order kept)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"concept file not found: {path} (explainer.concepts.path)")
    names = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
    names = list(dict.fromkeys(n for n in names if n))
    if not names:
        raise ValueError(f"concept file {path} is empty")
    return names


def _cached_download(url: str, filename: str, config_key: str) -> Path:
    target = default_cache_dir() / "concept_sets" / filename
    if not target.exists():
        try:
            with urllib.request.urlopen(url, timeout=60) as resp:
                write_text_atomic(target, resp.read().decode("utf-8"))
        except Exception as err:
            raise RuntimeError(
                f"concept set {filename} is not cached at {target} and could not be downloaded "
                f"from {url} ({err}). Give a local copy with {config_key}=/path/{filename}, or "
                "use an offline set: explainer/concepts=imagenet_classes or toyworld."
            ) from err
    return target


def common_words(n: str | int = "20k", path: str | None = None) -> list[str]:
    """The ``n`` ("20k", "10k", "3k") most common English words, from ``path`` or downloaded
    once into the cache."""
    n = f"{n // 1000}k" if isinstance(n, int) else str(n)
    if path:
        return text_file(path)
    return text_file(str(_cached_download(COMMON_WORDS_URL.format(n=n), f"{n}.txt",
                                          "explainer.concepts.path")))


def broden_labels(path: str | None = None) -> list[str]:
    """Broden's concept labels (cleaned, as CLIP-Dissect uses them)."""
    if path:
        return text_file(path)
    return text_file(str(_cached_download(BRODEN_URL, "broden_labels_clean.txt",
                                          "explainer.concepts.path")))


def imagenet_classes(weights: str = "ResNet18_Weights.IMAGENET1K_V1") -> list[str]:
    """ImageNet-1k class names from torchvision's weights metadata (offline)."""
    from cosy_bench.models.classes import torchvision_categories

    return list(dict.fromkeys(torchvision_categories(weights)))


def toyworld() -> list[str]:
    """The toy world's atomic concepts."""
    from cosy_bench.toyworld.vocab import CONCEPTS

    return list(CONCEPTS)


def resolve(spec) -> list[str]:
    """A list, a text-file path, or an already-instantiated list."""
    if isinstance(spec, str):
        return text_file(spec)
    names = [str(s) for s in spec]
    if not names:
        raise ValueError("the concept set is empty (explainer.concepts)")
    return names
