"""A usable cache folder or a clear error; killed jobs' debris cleared (cache/hygiene.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cosy_bench.cache.claims import lock_path, writer_tag
from cosy_bench.cache.hygiene import check_cache_dir, clean_debris
from cosy_bench.cache.store import atomic_path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_cache_dir_that_is_a_file_names_the_key(tmp_path):
    f = tmp_path / "cache"
    f.write_text("x")
    with pytest.raises(NotADirectoryError, match=r"paths\.cache_dir=.*is a file"):
        check_cache_dir(f)
    assert check_cache_dir(tmp_path / "new" / "cache").is_dir()


def test_an_unwritable_cache_dir_names_the_key(tmp_path):
    target = tmp_path / "ro"
    target.mkdir()
    target.chmod(0o500)
    if os.access(target, os.W_OK):  # root writes anywhere: use a read-only file system
        target = Path("/sys")
        if not target.is_dir():
            pytest.skip("running as root (which writes anywhere) on a system without /sys: no "
                        "read-only folder to test an unwritable cache_dir with")
    with pytest.raises(PermissionError, match=r"paths\.cache_dir=.*not a writable folder"):
        check_cache_dir(target)


def test_dead_writers_temporaries_and_stale_claims_are_removed(tmp_path):
    host = writer_tag().split("@")[1]
    dead = tmp_path / "images" / f".00001.png.{_dead_pid()}@{host}.abc123.tmp"
    live = tmp_path / "images" / f".00002.png.{writer_tag()}.def456.tmp"
    other_host = tmp_path / f".x.safetensors.{_dead_pid()}@00000000.zz.tmp"
    old = tmp_path / ".y.safetensors.q1w2e3.tmp"  # untagged (older versions)
    for p in (dead, live, other_host, old):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"partial")
    os.utime(old, (time.time() - 700, time.time() - 700))
    stale = lock_path(tmp_path / "acts.safetensors")
    stale.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(),
                                 "time": time.time(), "token": "t"}))
    held = lock_path(tmp_path / "other.safetensors")
    held.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                "time": time.time(), "token": "u"}))
    assert clean_debris(tmp_path, stale_after=600) == {"temporary": 2, "claims": 1}
    assert not dead.exists() and not old.exists() and not stale.exists()
    assert live.exists() and other_host.exists() and held.exists()


def test_atomic_writes_tag_their_temporary_file_with_the_writer(tmp_path):
    with atomic_path(tmp_path / "a.bin") as tmp:
        assert f".a.bin.{writer_tag()}." in tmp.name and tmp.name.endswith(".tmp")
        tmp.write_bytes(b"x")
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]
