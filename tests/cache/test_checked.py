"""Checksums written with every cache artefact and verified on read (cache/checked.py, the
checked reads of cache/store.py and compute_once's recompute of a corrupt file)."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import save_file

from cosy_bench.cache.checked import (
    DIGEST_KEY,
    decode_text,
    encode_text,
    load_tensors_checked,
    read_text_checked,
    tensors_digest,
)
from cosy_bench.cache.claims import compute_once
from cosy_bench.cache.store import Cache, save_tensors_atomic, write_text_checked


def _acts() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"activations": torch.randn(40, 7, generator=g), "index": torch.arange(40),
            "skipped": torch.tensor(0)}


def _aside(folder, name):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(name + ".corrupt-"))


def test_tensors_round_trip_with_their_checksum(tmp_path):
    path = tmp_path / "a.safetensors"
    save_tensors_atomic(path, _acts(), metadata={"note": "kept"})
    back = Cache(tmp_path).load_tensors(path)
    assert all(torch.equal(back[k], v) for k, v in _acts().items())
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["note"] == "kept" and meta[DIGEST_KEY] == tensors_digest(_acts())


def test_digest_sees_values_dtypes_shapes_and_names():
    a = _acts()
    d = tensors_digest(a)
    assert d == tensors_digest(dict(reversed(list(a.items()))))
    changed = {**a, "activations": a["activations"].clone()}
    changed["activations"][3, 4] += 1e-6
    assert tensors_digest(changed) != d
    assert tensors_digest({**a, "index": a["index"].to(torch.int32)}) != d
    assert tensors_digest({**a, "activations": a["activations"].reshape(7, 40)}) != d
    assert tensors_digest({"acts": a["activations"]}) != tensors_digest({"x": a["activations"]})


def test_zeroed_activations_are_moved_aside_with_a_warning_naming_the_file(tmp_path, caplog):
    path = tmp_path / "acts.safetensors"
    save_tensors_atomic(path, _acts())
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    data[header:] = bytes(len(data) - header)  # every tensor byte zeroed, header intact
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="cosy_bench"):
        assert Cache(tmp_path).load_tensors(path) is None
    assert not path.exists() and len(_aside(tmp_path, path.name)) == 1
    assert str(path) in caplog.text and "checksum mismatch" in caplog.text


def test_truncated_safetensors_is_moved_aside_not_raised(tmp_path, caplog):
    path = tmp_path / "acts.safetensors"
    save_tensors_atomic(path, _acts())
    path.write_bytes(path.read_bytes()[:50])  # cut inside the header
    with caplog.at_level(logging.WARNING, logger="cosy_bench"):
        assert load_tensors_checked(path) is None
    assert "unreadable safetensors" in caplog.text and str(path) in caplog.text
    assert not path.exists()


def test_a_file_without_checksum_is_not_trusted(tmp_path):
    path = tmp_path / "old.safetensors"
    save_file(_acts(), str(path))  # written by an older version, or by hand
    assert load_tensors_checked(path) is None
    assert _aside(tmp_path, path.name)


def test_missing_file_is_none_and_moves_nothing(tmp_path):
    assert load_tensors_checked(tmp_path / "none.safetensors") is None
    assert read_text_checked(tmp_path / "none.csv") is None
    assert list(tmp_path.iterdir()) == []


TEXTS = ["neuron,explanation\r\n0,red\rcircle\r\n", "a\r\nb\nc\r", "\"q\",\t,é☕\n", ""]


@pytest.mark.parametrize("text", TEXTS)
def test_text_round_trips_byte_for_byte(tmp_path, text):
    path = tmp_path / "e.csv"
    write_text_checked(path, text)
    assert Cache(tmp_path).read_text(path) == text
    assert decode_text(encode_text(text)) == text


def test_truncated_or_edited_text_is_moved_aside(tmp_path, caplog):
    path = tmp_path / "e.csv"
    body = "neuron,explanation\r\n" + "".join(f"{i},concept {i}\r\n" for i in range(25))
    write_text_checked(path, body)
    path.write_bytes(path.read_bytes()[:-30])  # truncated mid-row
    with caplog.at_level(logging.WARNING, logger="cosy_bench"):
        assert Cache(tmp_path).read_text(path) is None
    assert str(path) in caplog.text and _aside(tmp_path, "e.csv")
    path.write_text(body)  # no checksum line: an edited or foreign file
    assert read_text_checked(path) is None


def test_compute_once_recomputes_a_corrupt_artefact(tmp_path):
    path = tmp_path / "acts.safetensors"
    save_tensors_atomic(path, {"activations": torch.zeros(3, 2)})
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    calls = []

    def compute():
        calls.append(1)
        return {"activations": torch.ones(3, 2)}

    cache = Cache(tmp_path)
    value, computed = compute_once(path, compute, save_tensors_atomic, cache.load_tensors)
    assert computed and calls == [1] and torch.equal(value["activations"], torch.ones(3, 2))
    again, computed = compute_once(path, compute, save_tensors_atomic, cache.load_tensors)
    assert not computed and calls == [1] and torch.equal(again["activations"], torch.ones(3, 2))
