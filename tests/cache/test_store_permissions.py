"""The atomic writer of cosy_bench/cache/store.py gives files the mode a plain ``open`` would
(0666 less the umask), not mkstemp's owner-only 0600 (issue #13, item 5)."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from cosy_bench.cache.store import save_tensors_atomic, write_text_atomic


@pytest.fixture
def umask():
    def set_mask(mask: int) -> None:
        os.umask(mask)

    old = os.umask(0o022)
    os.umask(old)
    yield set_mask
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_atomic_files_get_the_umask_mode(tmp_path, umask, mask):
    umask(mask)
    text, tensors = tmp_path / "a" / "summary.json", tmp_path / "b" / "acts.safetensors"
    write_text_atomic(text, "{}")
    save_tensors_atomic(tensors, {"x": torch.zeros(2)})
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what run.log gets
    expected = 0o666 & ~mask
    for path in (text, tensors, plain):
        assert stat.S_IMODE(path.stat().st_mode) == expected, path
    assert text.read_text() == "{}"
    assert list(text.parent.iterdir()) == [text]  # no temporary file left
