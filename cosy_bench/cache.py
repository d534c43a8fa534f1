"""One cache folder shared by all runs and sweeps.

Every expensive artefact is stored under a key derived from everything that determines it
(``stable_hash`` of a JSON-able description), never from raw explanation text: texts hold
``/``, quotes, unicode and can be hundreds of characters long. Files are written atomically
(temporary file in the same folder, then ``os.replace``), so an interrupted run leaves
nothing half-written that a later run would read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hex digest of a JSON-able object, independent of dict order."""
    blob = json.dumps(obj, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


def default_cache_dir() -> Path:
    return Path(os.environ.get("COSY_CACHE_DIR", Path.home() / ".cache" / "cosy_bench"))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def save_tensors_atomic(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                        metadata: dict[str, str] | None = None) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)


class Cache:
    """Content-addressed folders under ``root``: ``root/<kind>/<key>...``."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root else default_cache_dir()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, kind: str, key: str, suffix: str = "") -> Path:
        return self.root / kind / f"{key}{suffix}"

    def load_tensors(self, path: Path) -> dict[str, torch.Tensor] | None:
        return load_file(str(path)) if path.exists() else None
