"""Content fingerprints of image folders and weights (cache/fingerprint.py)."""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from PIL import Image

from cosy_bench.cache import fingerprint
from cosy_bench.cache.fingerprint import file_digest, folder_fingerprint, module_fingerprint


def _folder(root, seed: int, n: int = 4):
    root.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return sorted(root.iterdir())


def test_replacing_contents_keeping_names_sizes_and_mtimes_changes_the_fingerprint(tmp_path):
    files = _folder(tmp_path / "imgs", 0)
    memo = tmp_path / "memo"
    before = folder_fingerprint(tmp_path / "imgs", files, memo)
    stamps = {f: (os.stat(f).st_atime_ns, os.stat(f).st_mtime_ns) for f in files}
    sizes = [f.stat().st_size for f in files]
    _folder(tmp_path / "imgs", 1)  # other pixels, same names, same sizes (8x8 noise PNGs)
    for f in files:
        os.utime(f, ns=stamps[f])  # even the time stamps put back
    assert [f.stat().st_size for f in files] == sizes
    assert folder_fingerprint(tmp_path / "imgs", files, memo) != before


def test_touching_files_keeps_the_fingerprint_and_hashes_once(tmp_path, monkeypatch):
    files = _folder(tmp_path / "imgs", 0)
    memo = tmp_path / "memo"
    read = []
    real = fingerprint.file_digest
    monkeypatch.setattr(fingerprint, "file_digest", lambda p: read.append(p) or real(p))
    first = folder_fingerprint(tmp_path / "imgs", files, memo)
    assert len(read) == 4
    assert folder_fingerprint(tmp_path / "imgs", files, memo) == first
    assert len(read) == 4  # remembered by (size, mtime, ctime, inode): nothing re-read
    os.utime(files[0])
    assert folder_fingerprint(tmp_path / "imgs", files, memo) == first
    assert len(read) == 5  # only the touched file re-hashed


def test_the_fingerprint_covers_the_file_list(tmp_path):
    files = _folder(tmp_path / "imgs", 0)
    memo = tmp_path / "memo"
    assert folder_fingerprint(tmp_path / "imgs", files[:3], memo) != folder_fingerprint(
        tmp_path / "imgs", files, memo)
    assert file_digest(files[0]) != file_digest(files[1])


def test_module_fingerprint_follows_the_weights_not_their_name():
    torch.manual_seed(0)
    a = torch.nn.Linear(4, 3)
    b = torch.nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    assert module_fingerprint(a) == module_fingerprint(b)
    with torch.no_grad():
        b.weight[0, 0] += 1e-3
    assert module_fingerprint(a) != module_fingerprint(b)


def test_file_and_path_fingerprints_follow_content_not_size_or_mtime(tmp_path):
    from cosy_bench.cache.fingerprint import file_fingerprint, path_fingerprint

    memo = tmp_path / "memo"
    f = tmp_path / "model" / "unet" / "w.bin"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"a" * 32)
    assert file_fingerprint(f, memo) == file_digest(f)
    folder = path_fingerprint(tmp_path / "model", memo)
    assert path_fingerprint(tmp_path / "model", memo) == folder
    (tmp_path / "model" / ".cache").mkdir()
    (tmp_path / "model" / ".cache" / "lock").write_text("tool metadata")
    assert path_fingerprint(tmp_path / "model", memo) == folder  # hidden files are not content
    st = f.stat()
    time.sleep(0.02)  # past the file system's coarse clock tick: the ctime moves
    f.write_bytes(b"b" * 32)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert file_fingerprint(f, memo) == file_digest(f)  # the memo did not hand back the old one
    assert path_fingerprint(tmp_path / "model", memo) != folder
    assert path_fingerprint(f, memo) == file_digest(f)
