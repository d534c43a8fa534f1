"""The typed config: the schema of the top-level keys and of the groups a run reads as
numbers and lists, checked by :func:`validate` before any work starts (the Hydra app calls
it first, and so does :func:`cosy_bench.pipeline.run`).

Each group is a dataclass; a field's type is what the key must hold and its metadata the
allowed range and what the key means. A wrong value stops the run with one message naming
every bad key, its value and what is allowed, e.g.
``n_images=abc: expected an integer >= 1 (synthetic images per explanation), got 'abc'``.
Imports nothing else of cosy_bench.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field

from omegaconf import DictConfig, ListConfig, OmegaConf


def _f(doc: str, minimum: int | None = None, non_empty: bool = False,
       choices: tuple[str, ...] | None = None, optional_key: bool = False,
       words: tuple[str, ...] = ()):
    """A schema field; ``words``: strings an integer field also accepts (``auto``)."""
    return field(default=None, metadata={"doc": doc, "min": minimum, "non_empty": non_empty,
                                         "choices": choices, "optional_key": optional_key,
                                         "words": words})


@dataclass
class RunSchema:
    """Top-level keys (``conf/config.yaml``)."""

    n_images: int = _f("synthetic images per explanation", minimum=1, words=("auto",))
    seed: int = _f("seed of random initialisations")
    batch_size: int = _f("images per batch of the activation pass", minimum=1)
    generator_batch_size: int = _f("images per batch of the synthesis pass", minimum=1)
    num_workers: int = _f("data loader workers", minimum=0, words=("auto",))
    precision: str | None = _f("autocast of the activation pass", optional_key=True,
                               choices=("float32", "bfloat16", "float16"))
    scorer: list[str] = _f("scores to compute", non_empty=True)
    verify_inputs: bool = _f("hash every input file again instead of trusting the content-hash "
                             "memo", optional_key=True)


@dataclass
class NeuronsSchema:
    """``neurons``: which neurons are evaluated."""

    ids: list[int] | None = _f("explicit neuron indices, or null", minimum=0, non_empty=True)
    sample: int | None = _f("size of a seeded sample of neurons, or null for all", minimum=1)
    seed: int = _f("seed of the neuron sample")


@dataclass
class PathsSchema:
    """``paths``: where the shared cache lives."""

    cache_dir: str = _f("folder of the cache shared by all runs")


@dataclass
class DatasetSchema:
    """``dataset`` and ``probe``: the image sets (keys only some options have)."""

    limit: int | None = _f("a seeded subset of this many images, or null", minimum=1,
                           optional_key=True)
    n: int = _f("number of images", minimum=2, optional_key=True)
    decode: str = _f("how image folders decode JPEGs: full (as the model's preprocessing), "
                     "reduced (1/2-1/8 scale), gpu (decode_jpeg and the transform on the "
                     "model's device)", choices=("full", "reduced", "gpu"), optional_key=True)


#: group (dotted prefix, "" for the top level) -> its schema
SCHEMA: dict[str, type] = {"": RunSchema, "neurons": NeuronsSchema, "paths": PathsSchema,
                           "dataset": DatasetSchema, "probe": DatasetSchema}


class ConfigError(ValueError):
    """A config value the schema does not allow."""


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _expected(kind, meta) -> str:
    base = typing.get_origin(kind) in (typing.Union, types.UnionType)
    args = [a for a in typing.get_args(kind) if a is not type(None)] if base else [kind]
    inner, nullable = args[0], base
    if typing.get_origin(inner) is list:
        item = typing.get_args(inner)[0]
        what = "a non-empty list" if meta["non_empty"] else "a list"
        what += " of integers" if item is int else " of names"
        if meta["min"] is not None:
            what += f" >= {meta['min']}"
        if meta["choices"]:
            what += f" from {list(meta['choices'])}"
    elif inner is bool:
        what = "true or false"
    elif inner is int:
        what = "an integer" + (f" >= {meta['min']}" if meta["min"] is not None else "")
        what += "".join(f" or {w!r}" for w in meta.get("words", ()))
    else:
        what = "a string" + (f" from {list(meta['choices'])}" if meta["choices"] else "")
    return what + (" or null" if nullable else "")


def _ok(value, kind, meta) -> bool:
    base = typing.get_origin(kind) in (typing.Union, types.UnionType)
    if base and value is None:
        return True
    inner = [a for a in typing.get_args(kind) if a is not type(None)][0] if base else kind
    lo = meta["min"]
    if typing.get_origin(inner) is list:
        if isinstance(value, (dict, DictConfig)):
            value = list(value)  # scorer: {auc: {...}, mad: {...}} names its scores
        elif not isinstance(value, (list, tuple, ListConfig)):
            value = [value]  # scorer=auc: one name
        items = list(value)
        if meta["non_empty"] and not items:
            return False
        item = typing.get_args(inner)[0]
        if item is int:
            return all(_is_int(v) and (lo is None or v >= lo) for v in items)
        return all(isinstance(v, str) and (not meta["choices"] or v in meta["choices"])
                   for v in items)
    if inner is bool:
        return isinstance(value, bool)
    if inner is int:
        if isinstance(value, str) and value in meta.get("words", ()):
            return True
        return _is_int(value) and (lo is None or value >= lo)
    return isinstance(value, str) and bool(value) and (not meta["choices"]
                                                       or value in meta["choices"])


def problems(cfg: DictConfig) -> list[str]:
    """Every value of ``cfg`` the schema does not allow, one message each."""
    out = []
    missing = object()
    for group, schema in SCHEMA.items():
        if group and not isinstance(cfg.get(group), DictConfig):
            continue
        hints = typing.get_type_hints(schema)
        for f in dataclasses.fields(schema):
            key = f"{group}.{f.name}" if group else f.name
            value = OmegaConf.select(cfg, key, default=missing, throw_on_missing=False)
            if value is missing:
                if not f.metadata["optional_key"]:
                    problems_ = f"{key} is missing: expected {_expected(hints[f.name], f.metadata)}"
                    out.append(f"{problems_} ({f.metadata['doc']})")
                continue
            if isinstance(value, ListConfig):
                value = OmegaConf.to_container(value, resolve=True)
            if not _ok(value, hints[f.name], f.metadata):
                out.append(f"{key}={value!r}: expected {_expected(hints[f.name], f.metadata)} "
                           f"({f.metadata['doc']}), got {value!r}")
    return out


def validate(cfg: DictConfig) -> DictConfig:
    """``cfg`` if it fits :data:`SCHEMA`; else a :class:`ConfigError` naming every bad key."""
    bad = problems(cfg)
    if bad:
        raise ConfigError("invalid config:\n  " + "\n  ".join(bad))
    return cfg
