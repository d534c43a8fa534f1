"""Checksums and keys written with every cache artefact and verified on every read.

* tensors (safetensors): the metadata entry ``cosy_sha256`` holds :func:`tensors_digest` of
  the tensors (names, dtypes, shapes and bytes), ``cosy_key`` the artefact's key;
  :func:`load_tensors_checked` recomputes the one and compares the other.
* text (explanation CSVs, the fingerprints memo): the first line is
  ``#cosy-sha256:<hex of the UTF-8 body> key:<key>``; the body is read and written as bytes,
  so ``\\r``, ``\\r\\n`` and ``\\n`` inside texts survive byte for byte.

The **key** of an artefact is the name it is stored under, ``<kind folder>/<file name>``
(:func:`artefact_key`; the file name is the hash of everything that determines it): a valid
file copied or moved under another artefact's name records a key that is not the one it is
read under, and is treated as damaged. Readers also pass a ``check`` of the structure they
need (names, shapes, dtypes, columns; :mod:`.structure`): a file that fails it is damaged
too.

A damaged file (truncated, zeroed, edited, another artefact's, malformed, not parseable) is
**never used**: :func:`move_aside` logs a warning naming it, renames it to
``<name>.corrupt-<time>-<pid>`` beside it (kept for inspection, ignored by every reader) and
the reader returns None, so the caller recomputes the artefact. A file written by a version
before keys were recorded (:class:`OutdatedArtefact`) is removed instead (a warning names
it) and recomputed: nothing proves which artefact it belongs to.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from pathlib import Path

import torch

log = logging.getLogger("cosy_bench")

DIGEST_KEY = "cosy_sha256"
KEY_KEY = "cosy_key"
TEXT_PREFIX = b"#cosy-sha256:"
_TEXT_KEY = b" key:"


class CorruptArtefact(ValueError):
    """A cache file whose content does not match the checksum, key or structure it must have."""


class OutdatedArtefact(CorruptArtefact):
    """A checksummed cache file written before artefacts recorded their key."""


def artefact_key(path: str | os.PathLike) -> str:
    """The key a cache file is bound to: ``<folder name>/<file name>`` (kind and hash)."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}"


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of named tensors: names, dtypes, shapes and raw bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}\x1f{t.dtype}\x1f{tuple(t.shape)}\x1e".encode())
        if t.numel():
            h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def with_digest(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None,
                key: str | None = None) -> dict:
    """``metadata`` plus the checksum entry of ``tensors`` and, given, the ``key`` entry."""
    return {**(metadata or {}), DIGEST_KEY: tensors_digest(tensors),
            **({KEY_KEY: key} if key is not None else {})}


def _check_key(recorded: str | None, key: str | None) -> None:
    if key is None:
        return
    if recorded is None:
        raise OutdatedArtefact("no recorded key: written by a version before artefacts were "
                               "bound to their keys")
    if recorded != key:
        raise CorruptArtefact(f"it records the key {recorded!r}, not {key!r}: another "
                              "artefact's file copied or moved under this name")


def _check_structure(value, check) -> None:
    if check is None:
        return
    try:
        check(value)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
        raise CorruptArtefact(f"malformed: {err}") from err


def move_aside(path: Path, reason: str) -> Path | None:
    """Rename a cache file that failed verification out of the way (warning names it)."""
    target = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    try:
        os.replace(path, target)
    except FileNotFoundError:
        return None  # another process moved or replaced it first
    except OSError as err:  # a read-only cache: not used all the same
        log.warning("cache file %s failed verification (%s) and could not be moved aside "
                    "(%s): not used", path, reason, err.strerror)
        return None
    log.warning("cache file %s failed verification (%s): moved aside to %s; it will be "
                "recomputed", path, reason, target.name)
    return target


def read_tensors_verified(path: Path, key: str | None = None, check=None
                          ) -> dict[str, torch.Tensor]:
    """The tensors of ``path``; raises :class:`CorruptArtefact` where they do not verify:
    checksum, recorded ``key`` (default :func:`artefact_key`) and ``check(tensors)``
    (raises ValueError, KeyError, ... on a structure the reader cannot use)."""
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
    _check_key(meta.get(KEY_KEY), artefact_key(path) if key is None else key)
    _check_structure(tensors, check)
    return tensors


def load_tensors_checked(path: Path, move: bool = True, check=None
                         ) -> dict[str, torch.Tensor] | None:
    """The verified tensors of ``path``, or None when it is missing or does not verify
    (checksum, key, ``check``; then moved aside when ``move``)."""
    return _verified_or_none(path, lambda p: read_tensors_verified(p, check=check), move)


def encode_text(text: str, key: str | None = None) -> bytes:
    """The bytes of a checked text file: checksum line (with ``key`` when given), then the
    UTF-8 body unchanged."""
    body = text.encode("utf-8")
    tail = _TEXT_KEY + key.encode("utf-8") if key is not None else b""
    return TEXT_PREFIX + hashlib.sha256(body).hexdigest().encode() + tail + b"\n" + body


def decode_text(data: bytes, key: str | None = None) -> str:
    """The body of a checked text file; raises :class:`CorruptArtefact` where it does not
    verify (checksum; the recorded key, when ``key`` is given)."""
    head, sep, body = data.partition(b"\n")
    if not sep or not head.startswith(TEXT_PREFIX):
        raise CorruptArtefact("no checksum line")
    digest, _, recorded = head[len(TEXT_PREFIX):].partition(_TEXT_KEY)
    if hashlib.sha256(body).hexdigest().encode() != digest:
        raise CorruptArtefact("checksum mismatch: truncated or edited after it was written")
    try:
        text = body.decode("utf-8")
        recorded_key = recorded.decode("utf-8") if _TEXT_KEY in head else None
    except UnicodeDecodeError as err:
        raise CorruptArtefact(f"not UTF-8: {err}") from err
    _check_key(recorded_key, key)
    return text


def read_text_checked(path: Path, move: bool = True, check=None) -> str | None:
    """The verified text of ``path``, or None when it is missing or does not verify
    (checksum, key :func:`artefact_key`, ``check(text)``; then moved aside when ``move``)."""
    def read(p: Path) -> str:
        text = decode_text(p.read_bytes(), artefact_key(p))
        _check_structure(text, check)
        return text

    return _verified_or_none(path, read, move)


def _verified_or_none(path: Path, read, move: bool):
    """``read(path)``; None where the file is missing or does not verify (moved aside then,
    when ``move``)."""
    try:
        return read(path)
    except FileNotFoundError:
        return None
    except OutdatedArtefact as err:  # an older version's file: no damage worth keeping
        if move:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                log.warning("cache file %s (%s): removed; it will be recomputed", path, err)
        return None
    except CorruptArtefact as err:
        if move:
            move_aside(path, str(err))
        return None
