"""Content fingerprints: what cache keys hold instead of names, paths and counts.

* :func:`file_digest`: SHA-256 of a file's bytes.
* :func:`folder_fingerprint`: of a list of files under a root (a control or probe image
  folder): the SHA-256 of every file, **full** content hashes (not a sample: a sampled hash
  would miss a replaced image outside the sample), remembered per file by its stat
  signature (size, mtime, ctime, inode) in ``<cache>/fingerprints/``, so a 50,000-image
  folder is hashed once and later runs only ``stat`` its files. A file rewritten in any way
  changes its ctime (which no user tool can set back), so it is hashed again. The
  fingerprint is a hash of (relative path, content hash) pairs: touching files re-hashes
  them but keeps the key; changing a byte changes it.
* :func:`module_fingerprint`: of a network's weights as loaded (its state dict: names,
  dtypes, shapes, bytes), whatever they came from (shipped file, path, URL, torchvision
  name, seeded random init): a weights file overwritten in place changes it.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from torch import nn

from cosy_bench.cache.checked import tensors_digest


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of the bytes of ``path``."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _signature(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def folder_fingerprint(root: str | os.PathLike, files: list[Path], memo_dir: Path,
                       workers: int = 8) -> str:
    """SHA-256 (hex, 16) over (path relative to ``root``, content hash) of ``files``; content
    hashes are remembered in ``memo_dir`` by each file's stat signature."""
    from cosy_bench.cache.store import stable_hash, write_text_atomic

    root = Path(root).resolve()
    memo_path = memo_dir / f"{stable_hash(str(root))}.json"
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
        if not isinstance(memo, dict):
            memo = {}
    except (FileNotFoundError, ValueError):
        memo = {}
    rels = [os.path.relpath(Path(f).resolve(), root) for f in files]
    sigs = [_signature(os.stat(f)) for f in files]
    todo = [i for i, (rel, sig) in enumerate(zip(rels, sigs, strict=True))
            if not (isinstance(memo.get(rel), list) and memo[rel][:-1] == sig)]
    if todo:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo)))) as pool:
            digests = list(pool.map(file_digest, [files[i] for i in todo]))
        for i, digest in zip(todo, digests, strict=True):
            memo[rels[i]] = [*sigs[i], digest]
        write_text_atomic(memo_path, json.dumps(memo))
    return stable_hash([[rel, memo[rel][-1]] for rel in rels])


def dataset_fingerprint(dataset, memo_dir: Path) -> str | None:
    """Content fingerprint of a dataset read from files (``files`` under ``root``); None for
    datasets made from their parameters alone (their ``name`` says everything)."""
    files, root = getattr(dataset, "files", None), getattr(dataset, "root", None)
    if files is None or root is None:
        return None
    return folder_fingerprint(root, list(files), memo_dir)


def module_fingerprint(module: nn.Module) -> str:
    """SHA-256 (hex) of a network's state dict."""
    return tensors_digest(dict(module.state_dict()))
