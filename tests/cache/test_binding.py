"""Artefacts bound to their keys, readers checking structure, the memo checked, full disks
and symlinked folders named, and the bench's kill points (issue 22; cache/checked.py,
cache/structure.py, cache/fingerprint.py, cache/faults.py, cache/hygiene.py)."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cosy_bench.cache.checked import (
    DIGEST_KEY,
    KEY_KEY,
    artefact_key,
    encode_text,
    load_tensors_checked,
    read_text_checked,
    tensors_digest,
)
from cosy_bench.cache.fingerprint import folder_fingerprint, verify_inputs
from cosy_bench.cache.hygiene import check_cache_dir, clean_debris
from cosy_bench.cache.store import atomic_path, save_tensors_atomic, write_text_checked
from cosy_bench.cache.structure import expect_tensors

REPO = Path(__file__).resolve().parents[2]


def _acts(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"activations": torch.randn(5, 3, generator=g)}


def test_a_valid_tensor_file_copied_under_another_key_is_moved_aside(tmp_path, caplog):
    red, blue = tmp_path / "acts" / "red.safetensors", tmp_path / "acts" / "blue.safetensors"
    save_tensors_atomic(red, _acts(0))
    save_tensors_atomic(blue, _acts(1))
    assert load_tensors_checked(red) is not None  # its own key: read
    shutil.copy(blue, red)  # checksum valid, key of blue
    with caplog.at_level(logging.WARNING, logger="cosy_bench"):
        assert load_tensors_checked(red) is None
    assert str(red) in caplog.text and "'acts/blue.safetensors'" in caplog.text
    assert not red.exists() and list(red.parent.glob("red.safetensors.corrupt-*"))


def test_a_valid_text_file_copied_under_another_key_is_moved_aside(tmp_path, caplog):
    a, b = tmp_path / "explanations" / "a.csv", tmp_path / "explanations" / "b.csv"
    write_text_checked(a, "neuron,explanation\n0,red\n")
    write_text_checked(b, "neuron,explanation\n0,blue\n")
    assert a.read_bytes().split(b"\n")[0].endswith(b" key:explanations/a.csv")
    shutil.copy(b, a)
    with caplog.at_level(logging.WARNING, logger="cosy_bench"):
        assert read_text_checked(a) is None
    assert str(a) in caplog.text and "records the key" in caplog.text


def test_files_of_versions_without_keys_are_removed_and_recomputed(tmp_path, caplog):
    old = tmp_path / "activations" / "x.safetensors"
    old.parent.mkdir()
    save_file(_acts(0), str(old), metadata={DIGEST_KEY: tensors_digest(_acts(0))})
    text = tmp_path / "explanations" / "y.csv"
    text.parent.mkdir()
    text.write_bytes(encode_text("neuron,explanation\n0,red\n"))  # checksum, no key
    with caplog.at_level(logging.WARNING, logger="cosy_bench"):
        assert load_tensors_checked(old) is None and read_text_checked(text) is None
    assert not old.exists() and not text.exists()  # removed, nothing moved aside
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == []
    assert "no recorded key" in caplog.text and str(old) in caplog.text


def test_the_key_is_the_kind_folder_and_the_file_name(tmp_path):
    path = tmp_path / "activations" / "abc.safetensors"
    save_tensors_atomic(path, _acts(0))
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()[KEY_KEY] == artefact_key(path) == "activations/abc.safetensors"
    moved = tmp_path / "elsewhere" / "activations" / "abc.safetensors"
    shutil.copytree(tmp_path / "activations", moved.parent)
    assert load_tensors_checked(moved) is not None  # a whole cache moved keeps its keys


def test_a_checksum_valid_file_of_the_wrong_structure_is_moved_aside(tmp_path, caplog):
    path = tmp_path / "activations" / "a.safetensors"
    save_tensors_atomic(path, {"activations": torch.zeros(4, 3, dtype=torch.int64)})
    spec = {"activations": (2, "float")}
    with caplog.at_level(logging.WARNING, logger="cosy_bench"):
        assert load_tensors_checked(path, check=lambda t: expect_tensors(t, spec)) is None
    assert str(path) in caplog.text and "malformed: activations is torch.int64" in caplog.text
    save_tensors_atomic(path, {"activations": torch.zeros(4, 2)})
    check = lambda t: expect_tensors(t, spec, {"activations": (None, 3)})  # noqa: E731
    assert load_tensors_checked(path, check=check) is None
    save_tensors_atomic(path, {"activations": torch.zeros(4, 3)})
    assert load_tensors_checked(path, check=check) is not None


def test_expect_tensors_names_every_problem():
    with pytest.raises(ValueError) as err:
        expect_tensors({"a": torch.zeros(2), "b": torch.zeros(2, 2, dtype=torch.bool)},
                       {"a": (2, "float"), "b": (2, "int"), "c": (0, "int")})
    text = str(err.value)
    assert "expected ['a', 'b', 'c']" in text and "a has 1 dimensions" in text
    assert "b is torch.bool, expected a int dtype" in text


def _images(root: Path, seed: int) -> list[Path]:
    import numpy as np
    from PIL import Image

    root.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return sorted(root.iterdir())


def test_the_memo_is_checksummed_bound_to_its_folder_and_verified_on_request(tmp_path, caplog):
    files = _images(tmp_path / "imgs", 0)
    memo_dir = tmp_path / "fingerprints"
    right = folder_fingerprint(tmp_path / "imgs", files, memo_dir)
    (memo,) = memo_dir.glob("*.json")
    head, body = memo.read_text().split("\n", 1)
    assert head.startswith("#cosy-sha256:") and json.loads(body)["root"] == str(
        (tmp_path / "imgs").resolve())
    data = json.loads(body)
    stale = {**data, "files": {k: [*v[:4], "0" * 64] for k, v in data["files"].items()}}
    memo.write_text(head + "\n" + json.dumps(stale))  # edited: checksum line does not match
    with caplog.at_level(logging.WARNING, logger="cosy_bench"):
        assert folder_fingerprint(tmp_path / "imgs", files, memo_dir) == right
    assert str(memo) in caplog.text and "checksum mismatch" in caplog.text

    write_text_checked(memo, json.dumps(stale))  # a stale memo with a valid checksum
    from cosy_bench.cache import fingerprint

    fingerprint._SEEN.clear()  # another process: only the memo remembers
    assert folder_fingerprint(tmp_path / "imgs", files, memo_dir) != right  # stat trusted
    caplog.clear()
    verify_inputs(True)
    try:
        with caplog.at_level(logging.WARNING, logger="cosy_bench"):
            assert folder_fingerprint(tmp_path / "imgs", files, memo_dir) == right
    finally:
        verify_inputs(False)
    assert str(memo) in caplog.text and "3 files" in caplog.text
    assert folder_fingerprint(tmp_path / "imgs", files, memo_dir) == right  # corrected

    other = _images(tmp_path / "other", 1)
    folder_fingerprint(tmp_path / "other", other, memo_dir)
    memos = sorted(memo_dir.glob("*.json"))
    other_memo = next(m for m in memos if m != memo)
    shutil.copy(other_memo, memo)  # the memo of another folder under this one's name
    caplog.clear()
    fingerprint._SEEN.clear()
    with caplog.at_level(logging.WARNING, logger="cosy_bench"):
        assert folder_fingerprint(tmp_path / "imgs", files, memo_dir) == right
    assert str(memo) in caplog.text and "records the key" in caplog.text


def test_a_full_disk_names_the_cache_folder_and_the_space_needed(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    target = tmp_path / "cache" / "activations" / "a.safetensors"
    with pytest.raises(OSError) as err, atomic_path(target, need=3 * 2**20) as tmp:
        tmp.write_bytes(b"x")
        with open("/dev/full", "wb") as full:  # the kernel's ENOSPC
            full.write(b"x" * 4096)
            full.flush()
    assert err.value.errno == errno.ENOSPC
    text = str(err.value)
    assert str(target.parent) in text and "a.safetensors" in text and "3.0 MiB" in text
    assert "paths.cache_dir" in text and "free there" in text
    assert list(target.parent.iterdir()) == []  # the temporary file removed


KILLED_WRITER = """
import sys, torch
from cosy_bench.cache.store import save_tensors_atomic
for i in range(3):
    save_tensors_atomic(sys.argv[1] + f"/{i}.safetensors", {"a": torch.zeros(2)})
"""


@pytest.mark.parametrize("stage", ["opened", "written"])
def test_the_bench_kill_point_kills_inside_a_write_and_the_next_run_cleans_up(tmp_path, stage):
    env = {**os.environ, "PYTHONPATH": str(REPO), "COSY_FAULT_KILL_AT": f"2:{stage}"}
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path)], env=env,
                          timeout=120)
    assert proc.returncode == -9  # SIGKILL inside the second write
    (tmp,) = [p for p in tmp_path.iterdir() if p.name.startswith(".1.safetensors.")]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["0.safetensors", tmp.name])
    assert (tmp.stat().st_size == 0) == (stage == "opened")  # killed before or after writing
    assert clean_debris(tmp_path) == {"temporary": 1, "claims": 0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.safetensors"]


def test_a_symlinked_cache_folder_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "activations").symlink_to(elsewhere)
    with pytest.raises(NotADirectoryError, match="is a symbolic link to") as err:
        check_cache_dir(cache)
    assert str(cache / "activations") in str(err.value) and "paths.cache_dir" in str(err.value)
    (cache / "activations").unlink()
    (cache / "images" / "gen").mkdir(parents=True)
    (cache / "images" / "gen" / "prompt").symlink_to(elsewhere)
    check_cache_dir(cache)  # the top level is clean
    with pytest.raises(NotADirectoryError, match="symbolic link"):
        clean_debris(cache)
    link = tmp_path / "link-to-cache"
    link.symlink_to(cache / "images")  # the cache root itself may be a link
    assert check_cache_dir(link) == link
