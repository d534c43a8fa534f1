"""What a write into the cache does when the disk is full, and the kill points of the
fault-injection bench.

* :func:`no_space_error`: a full disk (``ENOSPC``) or an exhausted quota (``EDQUOT``) while
  writing an artefact becomes an OSError naming the cache folder, the file, the bytes it
  needs (where known) and the bytes left, and the fix.
* :func:`fault_point`: ``COSY_FAULT_KILL_AT=<n>:<stage>`` (set only by
  ``python -m cosy_bench.bench faults``) kills this process with SIGKILL inside its ``n``-th
  atomic write (:func:`cosy_bench.cache.store.atomic_path`): ``opened`` right after the
  temporary file is created, ``written`` after its content is written, before the rename.
  So the cleanup of a killed writer's temporary file is exercised, not only planted.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
from pathlib import Path

#: the environment variable of :func:`fault_point`
KILL_AT = "COSY_FAULT_KILL_AT"
STAGES = ("opened", "written")
_writes = 0


def fault_point(stage: str) -> None:
    """Kill this process (SIGKILL) here if ``$COSY_FAULT_KILL_AT`` names this write and
    ``stage``; each ``opened`` counts one atomic write."""
    global _writes
    spec = os.environ.get(KILL_AT)
    if not spec:
        return
    if stage == "opened":
        _writes += 1
    n, _, where = spec.partition(":")
    if where == stage and n.isdigit() and int(n) == _writes:
        os.kill(os.getpid(), signal.SIGKILL)


def _free_bytes(folder: Path) -> int | None:
    for parent in (folder, *folder.parents):
        try:
            return shutil.disk_usage(parent).free
        except OSError:
            continue
    return None


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def no_space_error(err: OSError, path: str | os.PathLike, need: int | None = None) -> OSError:
    """``err`` itself, or, for a full disk or quota, an OSError of the same errno that names
    the cache folder of ``path``, the file, ``need`` bytes (where known), the space left and
    the fix."""
    if err.errno not in (errno.ENOSPC, errno.EDQUOT):
        return err
    path = Path(path)
    free = _free_bytes(path.parent)
    what = "no space left on the device" if err.errno == errno.ENOSPC else "disk quota exceeded"
    needs = f" it needs about {_size(need)}," if need else ""
    left = f" {_size(free)} are free there" if free is not None else ""
    return OSError(err.errno, f"{what} of the cache folder {path.parent} while writing "
                   f"{path.name}:{needs}{left}. Free space there, or set paths.cache_dir "
                   "(or $COSY_CACHE_DIR) to a folder on a disk with more room", str(path))
