"""Every shipped weights file has the JSON README promises beside it: its training command
and measured figures (issue #13: toy_milan.safetensors had none)."""

from __future__ import annotations

import json

import pytest
from helpers import REPO

WEIGHTS = REPO / "cosy_bench" / "toyworld" / "weights"
SHIPPED = sorted(p.name for p in WEIGHTS.glob("*.safetensors"))


def test_the_four_toy_files_are_shipped():
    assert SHIPPED == ["toy_clip.safetensors", "toy_cnn.safetensors", "toy_milan.safetensors",
                       "toy_mixed.safetensors"]


@pytest.mark.parametrize("name", SHIPPED)
def test_a_json_with_the_training_command_sits_beside_each_file(name):
    record = json.loads((WEIGHTS / name).with_suffix(".json").read_text(encoding="utf-8"))
    assert record["command"].startswith("python -m cosy_bench.toyworld.")
    assert "--seed 0" in record["command"]


def test_toy_milan_json_holds_readmes_figures():
    record = json.loads((WEIGHTS / "toy_milan.json").read_text(encoding="utf-8"))
    assert record["held_out_units"] == 88
    assert round(record["held_out_accuracy"] * 100, 1) == 98.9  # README: 98.9%
    assert record["temperature"] == 0.1
    assert record["file_bytes"] == (WEIGHTS / "toy_milan.safetensors").stat().st_size


def test_the_training_script_writes_the_json(tmp_path):
    from cosy_bench.toyworld.training.milan import write_record

    out = tmp_path / "m.safetensors"
    out.write_bytes(b"12345")
    path = write_record(out, {"command": "python -m cosy_bench.toyworld.training.milan "
                                         "--seed 0", "held_out_accuracy": 0.5})
    assert json.loads(path.read_text()) == {
        "command": "python -m cosy_bench.toyworld.training.milan --seed 0",
        "held_out_accuracy": 0.5, "file": "m.safetensors", "file_bytes": 5}
