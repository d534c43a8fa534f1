"""Tests of the toy CNN: layers, shipped weights, loader errors and the training command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cosy_bench.toyworld.model import (
    MEAN,
    SHIPPED_WEIGHTS,
    STD,
    ToyCNN,
    load_toy_cnn,
    preprocess,
    preprocess_transform,
)
from cosy_bench.toyworld.render import render_batch_with_classes
from cosy_bench.toyworld.training.cnn import main as train_main
from cosy_bench.toyworld.training.evaluate import (
    TEST_STREAM,
    activations,
    auroc_columns,
    cosy_auc,
)
from cosy_bench.toyworld.vocab import CLASS_NAMES, CONCEPTS

SHIPPED_JSON = SHIPPED_WEIGHTS.with_suffix(".json")


def test_layers_and_shapes():
    model = load_toy_cnn(None)
    shapes = {}
    hooks = [getattr(model, name).register_forward_hook(
        lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape)))
        for name in ["conv1", "conv2", "conv3", "conv4", "avgpool", "concepts", "fc"]]
    out = model(torch.zeros(2, 3, 64, 64))
    for h in hooks:
        h.remove()
    assert out.shape == (2, len(CLASS_NAMES))
    assert shapes == {
        "conv1": (2, 32, 32, 32), "conv2": (2, 64, 16, 16), "conv3": (2, 96, 8, 8),
        "conv4": (2, 128, 8, 8), "avgpool": (2, 128, 1, 1), "concepts": (2, len(CONCEPTS)),
        "fc": (2, len(CLASS_NAMES)),
    }
    assert isinstance(model.avgpool, torch.nn.AdaptiveAvgPool2d) and not model.training


def test_random_init_is_seeded():
    a, b, c = load_toy_cnn(None), load_toy_cnn(None), load_toy_cnn(None, seed=1)
    assert torch.equal(a.conv1[0].weight, b.conv1[0].weight)
    assert not torch.equal(a.conv1[0].weight, c.conv1[0].weight)


def test_preprocess_matches_transform():
    images, _, _ = render_batch_with_classes(2, 0)
    batch = preprocess(images)
    single = preprocess_transform()(Image.fromarray(images[1]))
    assert batch.shape == (2, 3, 64, 64)
    assert torch.allclose(batch[1], single, atol=1e-6)
    assert len(MEAN) == len(STD) == 3


def test_auroc_helpers():
    scores = np.array([[0.1], [0.4], [0.35], [0.8]])
    labels = np.array([[0], [0], [1], [1]], dtype=bool)
    assert auroc_columns(scores, labels)[0] == pytest.approx(0.75)
    assert cosy_auc(np.array([0.0, 1.0, 2.0]), np.array([1.0, 3.0])) == pytest.approx(
        (1.5 + 3) / 6)


def test_missing_weights_error(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError) as err:
        load_toy_cnn(str(missing))
    assert str(missing) in str(err.value)
    assert "python -m cosy_bench.toyworld.training.cnn" in str(err.value)


def test_shipped_model_meets_its_documented_metrics():
    assert SHIPPED_WEIGHTS.stat().st_size < 2_000_000
    report = json.loads(SHIPPED_JSON.read_text())
    assert report["test"]["concept_auroc_min"] >= 0.95
    model = load_toy_cnn("toy_cnn")
    # Fresh scenes from a stream no training or documented evaluation used.
    images, labels, classes = render_batch_with_classes(400, TEST_STREAM + 777)
    logits, concept_logits = activations(model, images)
    accuracy = float((logits.argmax(1) == classes).mean())
    assert accuracy >= report["test"]["accuracy"] - 0.05
    aurocs = auroc_columns(concept_logits, labels)
    assert np.all(aurocs >= 0.9), dict(zip(CONCEPTS, aurocs.round(3), strict=True))


def test_shipped_model_beats_random_init():
    images, _, classes = render_batch_with_classes(100, TEST_STREAM + 778)
    logits, _ = activations(load_toy_cnn(None), images)
    assert float((logits.argmax(1) == classes).mean()) < 0.3


def test_training_command_runs(tmp_path, capsys):
    def args(path, workers):
        return ["--seed", "1", "--steps", "3", "--batch-size", "8", "--out", str(path),
                "--eval-size", "64", "--no-cosy-check", "--workers", str(workers),
                "--log-every", "1"]

    out = tmp_path / "w" / "tiny.safetensors"
    report = train_main(args(out, 0))
    printed = capsys.readouterr().out
    assert "step 3/3" in printed and "test accuracy" in printed
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["steps"] == 3 and saved["seed"] == 1
    assert saved["command"].startswith("python -m cosy_bench.toyworld.training.cnn --seed 1")
    assert set(saved["test"]["concept_auroc"]) == set(CONCEPTS)
    assert 0.0 <= saved["test"]["accuracy"] <= 1.0 and saved == json.loads(json.dumps(report))
    model = load_toy_cnn(str(out))
    assert isinstance(model, ToyCNN) and not model.training
    # Deterministic given the seed (batches rendered in a worker or not).
    again = tmp_path / "again.safetensors"
    train_main(args(again, 1))
    a, b = load_toy_cnn(str(out)).state_dict(), load_toy_cnn(str(again)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_shipped_units_score_high_on_true_explanations():
    """A small CoSy run: prompt images of a unit's concept vs random control scenes."""
    from cosy_bench.generators.base import image_seed
    from cosy_bench.prompts import make_prompt
    from cosy_bench.toyworld.data import ToyControlSet
    from cosy_bench.toyworld.generator import ToyWorldGenerator

    model, generator = load_toy_cnn("toy_cnn"), ToyWorldGenerator()
    control_logits, control_concepts = activations(model, ToyControlSet(n=300).images)
    cases = [("concepts", "stripes"), ("concepts", "red"), ("concepts", "grass"),
             ("output", "blue star"), ("output", "white heart")]
    for layer, text in cases:
        prompt = make_prompt("p5", text)
        images = np.stack([generator.render(prompt, image_seed(text, prompt, i)).image
                           for i in range(20)])
        logits, concepts = activations(model, images)
        if layer == "concepts":
            control, synthetic = control_concepts, concepts
            unit, wrong_unit = CONCEPTS.index(text), CONCEPTS.index("snow")
        else:
            control, synthetic = control_logits, logits
            unit, wrong_unit = CLASS_NAMES.index(text), CLASS_NAMES.index("green cross")
        true_auc = cosy_auc(control[:, unit], synthetic[:, unit])
        wrong_auc = cosy_auc(control[:, wrong_unit], synthetic[:, wrong_unit])
        assert true_auc >= 0.9, (layer, text, true_auc)
        assert wrong_auc <= 0.75, (layer, text, wrong_auc)


def test_damaged_weights_name_the_file(tmp_path):
    from cosy_bench.toyworld.model import SHIPPED_WEIGHTS, load_toy_cnn

    path = tmp_path / "toy.safetensors"
    path.write_bytes(SHIPPED_WEIGHTS.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"toy CNN weights .*toy\.safetensors are damaged"):
        load_toy_cnn(str(path))
