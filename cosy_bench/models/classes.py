"""Class names of classifiers, resolved lazily (only explainers that need them ask)."""

from __future__ import annotations

from pathlib import Path

from cosy_bench.cache.store import default_cache_dir, download_text

PLACES365_URL = ("https://raw.githubusercontent.com/csailvision/places365/master/"
                 "categories_places365.txt")


def torchvision_categories(weights: str) -> list[str]:
    """Class names stored in a torchvision weights enum (offline)."""
    from torchvision.models import get_weight

    return list(get_weight(weights).meta["categories"])


def places365_categories(path: str | None = None, url: str = PLACES365_URL,
                         raw: bool = False) -> list[str]:
    """Places365 category names (``/a/airfield 0`` -> ``airfield``, ``/b/bakery/shop 1`` ->
    ``bakery shop``; ``raw``: as the CLIP-Dissect authors read them, ``bakery/shop``).

    Read from ``path``, else from the cache, else downloaded once into the cache.
    """
    target = Path(path) if path else default_cache_dir() / "meta" / "categories_places365.txt"
    if path and not target.exists():
        raise FileNotFoundError(f"Places365 category file not found: {path} "
                                "(model.class_names.path)")
    download_text(url, target, "Places365 class names are",
                  "Put the file there or set model.class_names.path.", timeout=30)
    names = []
    for line in target.read_text(encoding="utf-8").splitlines():
        if line.strip():
            label = line.split()[0]
            if raw:
                names.append(label[3:])
                continue
            parts = label.strip("/").split("/")[1:]  # drop the initial letter folder
            names.append(" ".join(p.replace("_", " ") for p in parts))
    return names


def from_file(path: str) -> list[str]:
    """One class name per line."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"class-name file not found: {path} (model.class_names.path)")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"model.class_names.path: {path} is not UTF-8 text (byte "
                         f"{err.object[err.start:err.end]!r} at offset {err.start}): save it "
                         "as UTF-8, e.g. `iconv -f latin1 -t utf-8 OLD > NEW`") from None
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def attribute(ref: str) -> list[str]:
    """A list of names held by a module attribute, ``"package.module:NAME"``."""
    import importlib

    module, _, attr = ref.partition(":")
    return list(getattr(importlib.import_module(module), attr))
