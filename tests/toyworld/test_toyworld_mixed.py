"""The toy CNN's ``mixed`` layer: polysemantic units in superposition (issue #20 item 1)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cosy_bench.toyworld.mixed import (
    MIXED_TRUTH,
    MIXED_UNITS,
    SHIPPED_MIXED,
    membership,
    truth_concepts,
)
from cosy_bench.toyworld.model import SHIPPED_WEIGHTS, load_toy_cnn, preprocess, save_toy_cnn
from cosy_bench.toyworld.render import render_batch_with_classes
from cosy_bench.toyworld.training.evaluate import TEST_STREAM, auroc_columns
from cosy_bench.toyworld.vocab import CONCEPT_INDEX, CONCEPTS, FAMILY_OF


def test_units_are_fewer_than_concepts_and_each_holds_several_families():
    assert len(MIXED_UNITS) < len(CONCEPTS)
    assert sorted(c for u in MIXED_UNITS for c in u) == sorted(CONCEPTS)
    for unit in MIXED_UNITS:
        assert len(unit) >= 2 and len({FAMILY_OF[c] for c in unit}) == len(unit)
    assert MIXED_TRUTH[0] == "red|grass" and truth_concepts(MIXED_TRUTH[-1]) == list(
        MIXED_UNITS[-1])
    assert membership().sum(0).tolist() == [float(len(u)) for u in MIXED_UNITS]


@pytest.fixture(scope="module")
def fresh():
    images, labels, _ = render_batch_with_classes(400, TEST_STREAM + 4242)
    return preprocess(images), labels


def test_each_unit_fires_for_each_of_its_planted_concepts_on_fresh_scenes(fresh):
    x, labels = fresh
    model = load_toy_cnn("toy_cnn")
    acts = {}
    hook = model.mixed.register_forward_hook(lambda m, i, o: acts.setdefault("mixed", o))
    with torch.no_grad():
        model(x)
    hook.remove()
    out = acts["mixed"].numpy()
    assert out.shape == (400, len(MIXED_UNITS))
    for k, unit in enumerate(MIXED_UNITS):
        idx = [CONCEPT_INDEX[c] for c in unit]
        au = auroc_columns(np.repeat(out[:, [k]], len(idx), axis=1), labels[:, idx])
        assert np.all(au >= 0.78), (unit, au)
        # and for other concepts it is no detector
        other = np.delete(np.arange(len(CONCEPTS)), idx)
        assert np.nanmax(auroc_columns(np.repeat(out[:, [k]], len(other), 1),
                                       labels[:, other])) < 0.8


def test_the_trunk_and_its_file_are_unchanged_by_the_head():
    model = load_toy_cnn("toy_cnn")
    shipped = load_file(str(SHIPPED_WEIGHTS))
    assert not any(k.startswith("mixed.") for k in shipped)
    state = model.state_dict()
    assert all(torch.equal(state[k].to(v.dtype), v) for k, v in shipped.items())
    head = load_file(str(SHIPPED_MIXED))
    assert torch.equal(state["mixed.weight"].half(), head["weight"])
    # random initialisation of the other layers does not depend on the head (made last)
    from cosy_bench.toyworld.model import ToyCNN

    torch.manual_seed(3)
    plain = ToyCNN().state_dict()
    torch.manual_seed(3)
    with_head = ToyCNN(mixed=True).state_dict()
    assert set(plain) == set(shipped)
    assert all(torch.equal(plain[k], with_head[k]) for k in plain)
    assert set(with_head) - set(shipped) == {"mixed.weight", "mixed.bias"}


def test_save_leaves_the_head_out(tmp_path):
    save_toy_cnn(load_toy_cnn("toy_cnn"), tmp_path / "t.safetensors")
    assert not any(k.startswith("mixed.") for k in load_file(str(tmp_path / "t.safetensors")))


def test_shipped_json_holds_the_measured_figures():
    record = json.loads(SHIPPED_MIXED.with_suffix(".json").read_text(encoding="utf-8"))
    assert record["command"].startswith("python -m cosy_bench.toyworld.training.mixed --seed 0")
    test = record["test"]
    assert test["planted_auroc_min"] >= 0.8 and test["linear_recoverability_mean"] >= 0.9
    assert set(test["linear_recoverability"]) == set(CONCEPTS)
    assert record["units"] == MIXED_TRUTH and record["file_bytes"] == SHIPPED_MIXED.stat().st_size


def test_training_cli_runs_and_its_head_loads(tmp_path, capsys):
    from cosy_bench.toyworld.training.mixed import main

    out = tmp_path / "m.safetensors"
    report = main(["--seed", "1", "--scenes", "200", "--steps", "20", "--eval-size", "150",
                   "--out", str(out)])
    assert "linear recoverability" in capsys.readouterr().out
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved == json.loads(json.dumps(report)) and saved["steps"] == 20
    assert len(saved["test"]["units"]) == len(MIXED_UNITS)
    model = load_toy_cnn("toy_cnn", mixed=str(out))
    assert torch.equal(model.mixed.weight.half(), load_file(str(out))["weight"])


def test_missing_or_wrong_head_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="training.mixed"):
        load_toy_cnn("toy_cnn", mixed=str(tmp_path / "none.safetensors"))
    save_toy_cnn(load_toy_cnn("toy_cnn"), tmp_path / "trunk.safetensors")
    with pytest.raises(ValueError, match="no mixed head"):
        load_toy_cnn("toy_cnn", mixed=str(tmp_path / "trunk.safetensors"))
