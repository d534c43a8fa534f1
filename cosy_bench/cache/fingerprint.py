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
* :func:`file_fingerprint`: of one file (a weights file, a checkpoint, a concept list): its
  full SHA-256, remembered by the same stat signature in the same memo (the memo of its
  folder), so a 7 GB checkpoint is read once.
* :func:`path_fingerprint`: of a file or of a whole folder (a local diffusers model, a local
  CLIP checkpoint folder): every file under it except hidden ones (``.cache/``, ``.git/``,
  ``.DS_Store``: tool metadata, not content).
* :func:`module_fingerprint`: of a network's weights as loaded (its state dict: names,
  dtypes, shapes, bytes), whatever they came from (shipped file, path, URL, torchvision
  name, seeded random init): a weights file overwritten in place changes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from torch import nn

from cosy_bench.cache.checked import tensors_digest

log = logging.getLogger("cosy_bench")


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of the bytes of ``path``."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _signature(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


#: content hashes of this process by (resolved path, stat signature): a file named by several
#: keys of one run (an explainer's settings and its own key) is read once
_SEEN: dict[tuple[str, tuple[int, ...]], str] = {}


def default_memo_dir() -> Path:
    """``<default cache>/fingerprints`` (``$COSY_CACHE_DIR``): the memo of keys built without a
    run's cache at hand (a generator's or MILAN's own ``cache_key``)."""
    from cosy_bench.cache.store import default_cache_dir

    return default_cache_dir() / "fingerprints"


#: ``verify_inputs``: every file is hashed again, whatever the memo says (:func:`verify_inputs`)
_VERIFY = False


def verify_inputs(on: bool) -> None:
    """``verify_inputs=true``: from now on, hash every input file again once in this process
    instead of trusting the memo's digest for an unchanged stat signature; a memo entry
    that disagrees is named in a warning and corrected."""
    global _VERIFY
    if on and not _VERIFY:
        _SEEN.clear()  # hashed before verification was asked for: hash again
    _VERIFY = bool(on)


def _memo_entries(text: str, root: Path) -> dict[str, list]:
    """The entries of a memo's text; ValueError where it is not a memo of ``root``."""
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("root") != str(root):
        raise ValueError(f"not the memo of {root}")
    files = data.get("files")
    if not isinstance(files, dict) or not all(
            isinstance(v, list) and len(v) == 5 and all(isinstance(x, int) for x in v[:4])
            and isinstance(v[4], str) and len(v[4]) == 64 for v in files.values()):
        raise ValueError("entries are not [size, mtime_ns, ctime_ns, inode, sha256]")
    return files


def _read_memo(memo_path: Path, root: Path) -> dict[str, list]:
    """The memo of ``root``: checksummed and bound to its key (``fingerprints/<hash of
    root>.json``) and to ``root``; a damaged one is moved aside (warning) and ignored."""
    from cosy_bench.cache.checked import read_text_checked

    text = read_text_checked(memo_path, check=lambda t: _memo_entries(t, root))
    return {} if text is None else _memo_entries(text, root)


def _content_digests(root: str | os.PathLike, files: list[Path], memo_dir: Path | None,
                     workers: int = 8) -> list[list[str]]:
    """``[relative path, SHA-256]`` of ``files`` under ``root``, hashes remembered in
    ``memo_dir`` (None: :func:`default_memo_dir`) by each file's stat signature. A memo that
    cannot be written (read-only cache) only costs re-hashing next time."""
    from cosy_bench.cache.store import stable_hash, write_text_checked

    memo_dir = default_memo_dir() if memo_dir is None else Path(memo_dir)
    root = Path(root).resolve()
    memo_path = memo_dir / f"{stable_hash(str(root))}.json"
    memo = _read_memo(memo_path, root)
    rels = [os.path.relpath(Path(f).resolve(), root) for f in files]
    sigs = [_signature(os.stat(f)) for f in files]
    todo = [i for i, (rel, sig) in enumerate(zip(rels, sigs, strict=True))
            if _VERIFY or not (isinstance(memo.get(rel), list) and memo[rel][:-1] == sig)]
    if todo:
        seen = {i: _SEEN.get((str(root / rels[i]), tuple(sigs[i]))) for i in todo}
        fresh = [i for i in todo if seen[i] is None]
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(fresh) or 1))) as pool:
            digests = dict(zip(fresh, pool.map(file_digest, [files[i] for i in fresh]),
                               strict=True))
        wrong = [rels[i] for i in fresh if memo.get(rels[i], [None])[:-1] == sigs[i]
                 and memo[rels[i]][-1] != digests[i]]
        if wrong:
            log.warning("content-hash memo %s: %d files (%s) changed without a new stat "
                        "signature; hashed again and corrected", memo_path, len(wrong),
                        ", ".join(wrong[:3]))
        changed = False
        for i in todo:
            digest = seen[i] or digests[i]
            changed |= memo.get(rels[i]) != [*sigs[i], digest]
            memo[rels[i]] = [*sigs[i], digest]
            _SEEN[(str(root / rels[i]), tuple(sigs[i]))] = digest
        try:
            if changed or not memo_path.exists():
                write_text_checked(memo_path, json.dumps({"root": str(root), "files": memo}))
        except OSError as err:
            log.debug("content-hash memo %s not written: %s", memo_path, err)
    return [[rel, memo[rel][-1]] for rel in rels]


def folder_fingerprint(root: str | os.PathLike, files: list[Path], memo_dir: Path | None,
                       workers: int = 8) -> str:
    """SHA-256 (hex, 16) over (path relative to ``root``, content hash) of ``files``; content
    hashes are remembered in ``memo_dir`` by each file's stat signature."""
    from cosy_bench.cache.store import stable_hash

    return stable_hash(_content_digests(root, files, memo_dir, workers))


def file_fingerprint(path: str | os.PathLike, memo_dir: Path | None = None) -> str:
    """SHA-256 (hex) of the bytes of the file ``path``, remembered by its stat signature in
    the memo of its folder (``memo_dir``; None: :func:`default_memo_dir`)."""
    path = Path(path).expanduser().resolve()
    return _content_digests(path.parent, [path], memo_dir)[0][1]


def path_fingerprint(path: str | os.PathLike, memo_dir: Path | None = None) -> str:
    """Content fingerprint of a file (:func:`file_fingerprint`) or of a folder (every
    non-hidden file under it, :func:`folder_fingerprint`)."""
    path = Path(path).expanduser().resolve()
    if path.is_file():
        return file_fingerprint(path, memo_dir)
    files = sorted(p for p in path.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    return folder_fingerprint(path, files, memo_dir)


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


def short_value(value: str, limit: int = 40) -> str:
    """A short, file-name-safe stand-in for a config value in folder names and tables: a
    path (or any value over ``limit`` characters) becomes its base name plus 6 hex digits of
    the whole value's SHA-1 (``/data/imagenet/val`` -> ``val-3f2a9c``); others unchanged."""
    text = str(value)
    if "/" not in text and "\\" not in text and len(text) <= limit:
        return text
    base = re.sub(r"[^\w.+-]+", "_", Path(text.rstrip("/\\")).name or "root")[:limit]
    return f"{base}-{hashlib.sha1(text.encode()).hexdigest()[:6]}"


def short_overrides(dirname: str, limit: int = 200) -> str:
    """Hydra's ``override_dirname`` (``key=value,key=value``) with each value through
    :func:`short_value`, the overrides with short values first (``model=``, ``explainer=``:
    what tells the jobs of a sweep apart); a result over ``limit`` bytes is cut and ends in
    a hash of the whole (no path component over 255 bytes). The full values stay in the
    job's ``.hydra/config.yaml``."""
    items = re.split(r",(?=[\w.+~/-]+=)", str(dirname)) if dirname else []
    plain, shortened = [], []
    for item in items:
        key, sep, value = item.partition("=")
        short = f"{key}{sep}{short_value(value)}" if sep else short_value(item)
        (plain if short == item else shortened).append(short)
    out = ",".join(plain + shortened)
    if len(out.encode()) > limit:
        digest = hashlib.sha1(str(dirname).encode()).hexdigest()[:8]
        out = out.encode()[: limit - 9].decode(errors="ignore") + "-" + digest
    return out
