"""Keeping a cache folder usable: a clear error when it cannot be, and the debris of killed
jobs cleared when a run starts on it.

A writer killed with ``kill -9`` leaves its temporary file ``.NAME.<pid>@<host>.XXXX.tmp``
(see :func:`cosy_bench.cache.claims.writer_tag`) and perhaps its claim ``NAME.lock``.
:func:`clean_debris` removes temporary files whose writer is dead (same host) or that are
older than the stale-claim age (any host, or written before writers were tagged), and
claims that are stale (see :func:`cosy_bench.cache.claims.claim_is_stale`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import tempfile
import time
from pathlib import Path

from cosy_bench.cache.claims import _break, _pid_alive, claim_is_stale, writer_tag

log = logging.getLogger("cosy_bench")

_TAGGED = re.compile(r"\.(\d+)@([0-9a-f]{8})\.[^.]+\.tmp$")


def check_cache_dir(path: str | os.PathLike, key: str = "paths.cache_dir") -> Path:
    """``path`` as a usable cache folder (created if missing), or an error naming ``key``."""
    path = Path(os.path.expanduser(str(path)))
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{key}={str(path)!r} is a file, not a folder: set {key} to "
                                 "a folder (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test.", suffix=".tmp"):
            pass
    except OSError as err:
        raise PermissionError(f"{key}={str(path)!r} is not a writable folder ({err.strerror}): "
                              f"set {key} to a folder this user may write") from err
    with os.scandir(path) as entries:  # the kinds: activations, images, ...
        for entry in entries:
            if entry.is_symlink():
                raise symlink_error(path, Path(entry.path), key)
    return path


def symlink_error(root: Path, link: Path, key: str = "paths.cache_dir") -> OSError:
    """The error for a symbolic link inside the cache folder ``root``: refused, since the
    cache writes, moves aside and removes files only inside ``root`` (``root`` itself may be
    a link)."""
    return NotADirectoryError(
        f"{link} inside the cache folder {key}={str(root)!r} is a symbolic link to "
        f"{os.readlink(link)!r}: the cache refuses links inside it (it would write, move "
        "aside and remove files through them). Replace the link by the folder it points to, "
        f"or point {key} itself at the other disk")


def _dead_writer(name: str) -> bool:
    match = _TAGGED.search(name)
    if match is None:
        return False
    own_host = writer_tag().split("@", 1)[1]
    return match.group(2) == own_host and not _pid_alive(int(match.group(1)))


def clean_debris(root: str | os.PathLike, stale_after: float = 600.0) -> dict[str, int]:
    """Remove killed writers' temporary files and stale claims under ``root``; returns
    ``{"temporary": n, "claims": m}`` removed (logged when any). A symbolic link to a folder
    anywhere under ``root`` is an error (:func:`symlink_error`)."""
    removed = {"temporary": 0, "claims": 0}
    now = time.time()
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            if os.path.islink(os.path.join(folder, name)):
                raise symlink_error(Path(root), Path(folder) / name)
        for name in files:
            path = Path(folder) / name
            if name.startswith(".") and name.endswith(".tmp"):
                with contextlib.suppress(FileNotFoundError):
                    if _dead_writer(name) or now - path.stat().st_mtime > stale_after:
                        path.unlink()
                        removed["temporary"] += 1
            elif name.endswith(".lock") and claim_is_stale(path, stale_after):
                _break(path, stale_after)
                removed["claims"] += not path.exists()
    if any(removed.values()):
        log.info("cache %s: removed %d temporary files and %d stale claims left by killed "
                 "jobs (host %s)", root, removed["temporary"], removed["claims"],
                 socket.gethostname())
    return removed
