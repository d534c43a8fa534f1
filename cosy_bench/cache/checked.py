"""Checksums written with every cache artefact and verified on every read.

* tensors (safetensors): the metadata entry ``cosy_sha256`` holds :func:`tensors_digest` of
  the tensors (names, dtypes, shapes and bytes); :func:`load_tensors_checked` recomputes it.
* text (explanation CSVs): the first line is ``#cosy-sha256:<hex of the UTF-8 body>``;
  the body is read and written as bytes, so ``\\r``, ``\\r\\n`` and ``\\n`` inside texts
  survive byte for byte.

A file that does not verify (truncated, zeroed, edited, written by an older version without
a checksum, not parseable) is **never used**: :func:`move_aside` logs a warning naming it,
renames it to ``<name>.corrupt-<time>`` beside it (kept for inspection, ignored by every
reader) and the reader returns None, so the caller recomputes the artefact.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import torch

log = logging.getLogger("cosy_bench")

DIGEST_KEY = "cosy_sha256"
TEXT_PREFIX = b"#cosy-sha256:"


class CorruptArtefact(ValueError):
    """A cache file whose content does not match the checksum written with it."""


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of named tensors: names, dtypes, shapes and raw bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}\x1f{t.dtype}\x1f{tuple(t.shape)}\x1e".encode())
        if t.numel():
            h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def with_digest(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None) -> dict:
    """``metadata`` plus the checksum entry of ``tensors``."""
    return {**(metadata or {}), DIGEST_KEY: tensors_digest(tensors)}


def move_aside(path: Path, reason: str) -> Path | None:
    """Rename a cache file that failed verification out of the way (warning names it)."""
    target = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    try:
        os.replace(path, target)
    except FileNotFoundError:
        return None  # another process moved or replaced it first
    log.warning("cache file %s failed verification (%s): moved aside to %s; it will be "
                "recomputed", path, reason, target.name)
    return target


def read_tensors_verified(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of ``path``; raises :class:`CorruptArtefact` where they do not verify."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
    except FileNotFoundError:
        raise
    except Exception as err:  # SafetensorError, OSError, ... : unreadable
        raise CorruptArtefact(f"unreadable safetensors: {err}") from err
    expected = meta.get(DIGEST_KEY)
    if expected is None:
        raise CorruptArtefact(f"no {DIGEST_KEY} checksum in its metadata")
    if tensors_digest(tensors) != expected:
        raise CorruptArtefact("checksum mismatch: its tensors changed after they were written")
    return tensors


def load_tensors_checked(path: Path, move: bool = True) -> dict[str, torch.Tensor] | None:
    """The verified tensors of ``path``, or None when it is missing or does not verify (then
    moved aside when ``move``)."""
    return _verified_or_none(path, read_tensors_verified, move)


def encode_text(text: str) -> bytes:
    """The bytes of a checked text file: checksum line, then the UTF-8 body unchanged."""
    body = text.encode("utf-8")
    return TEXT_PREFIX + hashlib.sha256(body).hexdigest().encode() + b"\n" + body


def decode_text(data: bytes) -> str:
    """The body of a checked text file; raises :class:`CorruptArtefact` where it does not verify."""
    head, sep, body = data.partition(b"\n")
    if not sep or not head.startswith(TEXT_PREFIX):
        raise CorruptArtefact("no checksum line")
    if hashlib.sha256(body).hexdigest().encode() != head[len(TEXT_PREFIX):]:
        raise CorruptArtefact("checksum mismatch: truncated or edited after it was written")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CorruptArtefact(f"not UTF-8: {err}") from err


def read_text_checked(path: Path, move: bool = True) -> str | None:
    """The verified text of ``path``, or None when it is missing or does not verify (then
    moved aside when ``move``)."""
    return _verified_or_none(path, lambda p: decode_text(p.read_bytes()), move)


def _verified_or_none(path: Path, read, move: bool):
    """``read(path)``; None where the file is missing or does not verify (moved aside then,
    when ``move``)."""
    try:
        return read(path)
    except FileNotFoundError:
        return None
    except CorruptArtefact as err:
        if move:
            move_aside(path, str(err))
        return None
