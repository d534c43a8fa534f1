"""Concept sets for CLIP-Dissect (and the random explainer): lists of candidate labels.

Every function returns a list of strings; select one by config
(``explainer.concepts._target_``) or pass a list or a text-file path.
"""

from __future__ import annotations

from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from cosy_bench.cache.store import default_cache_dir, download_text

#: The CLIP-Dissect authors' concept lists (the 20k/10k/3k most common English words).
COMMON_WORDS_URL = ("https://raw.githubusercontent.com/Trustworthy-ML-Lab/CLIP-dissect/main/"
                    "data/{n}.txt")
BRODEN_URL = ("https://raw.githubusercontent.com/Trustworthy-ML-Lab/CLIP-dissect/main/data/"
              "broden_labels_clean.txt")


def read_lines(path: Path, key: str) -> list[str]:
    """The stripped lines of the UTF-8 text file ``path``; a file in another encoding (Latin-1,
    UTF-16, ...) is a ValueError naming the file, the config ``key`` and the fix."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{key}: {path} is not UTF-8 text (byte {err.object[err.start:err.end]!r} "
                         f"at offset {err.start}; Latin-1 or another encoding?): save it as "
                         "UTF-8, e.g. `iconv -f latin1 -t utf-8 OLD > NEW`") from None
    return [ln.strip() for ln in text.splitlines()]


def text_file(path: str) -> list[str]:
    """One concept per line (blank lines and duplicates dropped, order kept)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"concept file not found: {path} (concepts.path)")
    names = read_lines(p, "concepts.path")
    names = list(dict.fromkeys(n for n in names if n))
    if not names:
        raise ValueError(f"concept file {path} is empty")
    return names


def _cached_download(url: str, filename: str, config_key: str) -> Path:
    return download_text(
        url, default_cache_dir() / "concept_sets" / filename, f"concept set {filename} is",
        f"Give a local copy with {config_key}=/path/{filename}, or use an offline set: "
        "concepts=imagenet_classes (ImageNet models), or concepts=toyworld (the toy world)")


def common_words(n: str | int = "20k", path: str | None = None) -> list[str]:
    """The ``n`` ("20k", "10k", "3k") most common English words, from ``path`` or downloaded
    once into the cache."""
    n = f"{n // 1000}k" if isinstance(n, int) else str(n)
    if path:
        return text_file(path)
    return text_file(str(_cached_download(COMMON_WORDS_URL.format(n=n), f"{n}.txt",
                                          "concepts.path")))


def broden_labels(path: str | None = None) -> list[str]:
    """Broden's concept labels (cleaned, as CLIP-Dissect uses them)."""
    if path:
        return text_file(path)
    return text_file(str(_cached_download(BRODEN_URL, "broden_labels_clean.txt",
                                          "concepts.path")))


def imagenet_classes(weights: str = "ResNet18_Weights.IMAGENET1K_V1",
                     path: str | None = None) -> list[str]:
    """ImageNet-1k class names from torchvision's weights metadata (offline); ``path``: a
    text file instead (one concept per line), the key every concept set has."""
    if path:
        return text_file(path)
    from cosy_bench.models.classes import torchvision_categories

    return list(dict.fromkeys(torchvision_categories(weights)))


def toyworld(path: str | None = None) -> list[str]:
    """The toy world's atomic concepts; ``path`` must stay null (a toy-world job of a sweep
    that gives ``concepts.path`` for its real models is refused)."""
    from cosy_bench.toyworld.inputs import refuse_real_inputs

    refuse_real_inputs("concepts=toyworld", **{"concepts.path": path})
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


def load_concept_set(spec, ctx) -> list[str]:
    """``None``: the model's class names; ``"ground_truth"``: the distinct ground-truth labels
    of the layer; a config with ``_target_`` (a ``concepts`` group entry): the list it builds;
    a list: itself; another string: a text file, one concept per line."""
    if isinstance(spec, (DictConfig, dict)) and "_target_" in spec:
        names = [str(n) for n in instantiate(spec)]
        if not names:
            raise ValueError(f"the concept set {spec['_target_']} is empty (explainer.concepts)")
        return names
    if spec == "ground_truth":
        truth = ctx.model.ground_truth(ctx.layer)
        if not truth:
            raise ValueError(f"explainer.concepts=ground_truth, but layer {ctx.layer.name!r} of "
                             f"{ctx.model.name!r} has no ground truth")
        return list(dict.fromkeys(truth))
    if spec is None:
        names = ctx.model.class_names
        if not names:
            raise ValueError(f"model {ctx.model.name!r} has no class names to draw concepts "
                             "from; set explainer.concepts to a list or a text file")
        return list(names)
    if isinstance(spec, str):
        path = Path(spec).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"concept file not found: {spec} (explainer.concepts)")
        names = [n for n in read_lines(path, "explainer.concepts") if n]
    else:
        names = [str(n) for n in spec]
    if not names:
        raise ValueError("the concept set is empty (explainer.concepts)")
    return names
