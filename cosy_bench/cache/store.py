"""One cache folder shared by all runs and sweeps.

Every expensive artefact is stored under a key derived from everything that determines it
(``stable_hash`` of a JSON-able description), never from raw explanation text: texts hold
``/``, quotes, unicode and can be hundreds of characters long. Files are written atomically
(temporary file in the same folder, then ``os.replace``), so an interrupted run leaves
nothing half-written that a later run would read. Tensors and texts are written with a
checksum and :class:`Cache` reads only what verifies (:mod:`cosy_bench.cache.checked`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from cosy_bench.cache.checked import (
    artefact_key,
    encode_text,
    load_tensors_checked,
    read_text_checked,
    with_digest,
)
from cosy_bench.cache.claims import wait_for_file, writer_tag
from cosy_bench.cache.faults import fault_point, no_space_error
from cosy_bench.distributed.ranks import agreed, is_distributed, is_rank_zero


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hex digest of a JSON-able object, independent of dict order."""
    blob = json.dumps(obj, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


def default_cache_dir() -> Path:
    return Path(os.environ.get("COSY_CACHE_DIR", Path.home() / ".cache" / "cosy_bench"))


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _reraise(err: OSError, path: Path, need: int | None):
    better = no_space_error(err, path, need)
    if better is err:
        raise err
    raise better from err


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, need: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    A full disk (``ENOSPC``, ``EDQUOT``) raises an OSError naming the folder, the file and
    ``need`` (bytes the file takes, where known) against the space left."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{writer_tag()}.",
                                   suffix=".tmp")
    except OSError as err:
        _reraise(err, path, need)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        fault_point("opened")
        try:
            yield tmp_path
        except OSError as err:
            _reraise(err, path, need)
        fault_point("written")
        # mkstemp makes the file owner-only (0600): give it the mode a plain open() would
        # (0666 less the umask), so a group sharing a cache or an output folder can read it
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    data = text.encode("utf-8")
    with atomic_path(path, len(data)) as tmp:
        tmp.write_bytes(data)


def save_tensors_atomic(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                        metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` atomically with their checksum and key (:func:`artefact_key` of
    ``path``) in the metadata (``cache.checked``)."""
    need = sum(t.numel() * t.element_size() for t in tensors.values())
    with atomic_path(path, need) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata=with_digest(tensors, metadata, artefact_key(path)))


def write_text_checked(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` atomically behind a checksum line holding its key
    (:func:`artefact_key` of ``path``); read it with ``Cache.read_text``."""
    data = encode_text(text, artefact_key(path))
    with atomic_path(path, len(data)) as tmp:
        tmp.write_bytes(data)


def download_text(url: str, target: Path, what: str, hint: str, timeout: float = 60) -> Path:
    """``target``, downloaded once from ``url`` (atomically) if it is not there yet. A failed
    download raises a RuntimeError naming ``what``, ``target``, ``url`` and ``hint`` (how to
    supply the file offline)."""
    if not target.exists():
        import urllib.request

        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                write_text_atomic(target, resp.read().decode("utf-8"))
        except Exception as err:
            raise RuntimeError(f"{what} not cached at {target} and could not be downloaded "
                               f"from {url} ({err}). {hint}") from err
    return target


class Cache:
    """Content-addressed folders under ``root``: ``root/<kind>/<key>...``."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root else default_cache_dir()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, kind: str, key: str, suffix: str = "") -> Path:
        return self.root / kind / f"{key}{suffix}"

    def load_tensors(self, path: Path, check=None) -> dict[str, torch.Tensor] | None:
        """The verified tensors of ``path`` (checksum, key, ``check`` of their structure:
        raises ValueError, KeyError, ... where the reader cannot use them); None if missing
        or damaged (moved aside)."""
        return load_tensors_checked(path, check=check)

    def read_text(self, path: Path, check=None) -> str | None:
        """The verified text of ``path`` (checksum, key, ``check``); None if missing or
        damaged (moved aside)."""
        return read_text_checked(path, check=check)


class RankAgreedCache(Cache):
    """A :class:`Cache` whose reads rank 0 decides under DDP.

    Whether an artefact is cached decides whether a predict loop runs, and every rank must
    run the same loops. Another job may write the cache at any moment, so ranks looking at
    it a few milliseconds apart could disagree; here rank 0 looks and tells the others. Under
    DDP every rank must therefore make the same ``load_tensors`` calls in the same order (they
    do: every rank runs the same pipeline). In a single process it is a plain Cache.
    """

    def load_tensors(self, path: Path, check=None) -> dict[str, torch.Tensor] | None:
        return self._agreed_read(path, functools.partial(load_tensors_checked, check=check))

    def read_text(self, path: Path, check=None) -> str | None:
        return self._agreed_read(path, functools.partial(read_text_checked, check=check))

    @staticmethod
    def _agreed_read(path: Path, read):
        """Rank 0 reads and verifies (moving a corrupt file aside); the others read once it
        said the file is good."""
        if not is_distributed():
            return read(path)
        value = read(path) if is_rank_zero() else None
        if not agreed(value is not None):
            return None
        if is_rank_zero():
            return value
        value = read(wait_for_file(path), move=False)
        if value is None:
            raise RuntimeError(f"cache file {path} verified on rank 0 but not on this rank "
                               "(is paths.cache_dir on a file system all nodes share?)")
        return value
