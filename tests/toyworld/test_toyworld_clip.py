"""The toy CLIP: shipped weights load through open_clip's factory offline and meet their
documented zero-shot accuracy; training runs and its output loads; loss and captions are right.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from cosy_bench.toyworld import clip as toy_clip
from cosy_bench.toyworld.render import render_batch, render_scene
from cosy_bench.toyworld.training import captions as toy_captions
from cosy_bench.toyworld.training import clip as train_clip
from cosy_bench.toyworld.vocab import CONCEPTS, FAMILIES

#: How far below the documented accuracy a fresh sample of a few hundred images may fall.
MARGIN = 0.08


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """The shipped toy CLIP, loaded offline into a fresh cache folder."""
    cache = tmp_path_factory.mktemp("toy_clip_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        model, preprocess, tokenizer = toy_clip.load_toy_clip(cache_dir=cache)
    return model, preprocess, tokenizer, cache


def test_config_is_registered_with_open_clip():
    assert toy_clip.TOY_CLIP_NAME in open_clip.list_models()
    cfg = open_clip.get_model_config(toy_clip.TOY_CLIP_NAME)
    assert cfg["vision_cfg"]["image_size"] == 64
    assert cfg["text_cfg"]["vocab_size"] == 49408
    tokenizer = open_clip.get_tokenizer(toy_clip.TOY_CLIP_NAME)
    assert isinstance(tokenizer, open_clip.SimpleTokenizer)
    assert tokenizer(["stripes"]).shape == (1, cfg["text_cfg"]["context_length"])


def test_shipped_files_are_small_and_documented():
    weights = toy_clip.WEIGHTS_PATH
    metrics = json.loads(toy_clip.METRICS_PATH.read_text())
    assert weights.stat().st_size + toy_clip.METRICS_PATH.stat().st_size < 5 * 2**20
    assert metrics["weights_bytes"] == weights.stat().st_size
    assert metrics["model_config"] == toy_clip.model_config()
    assert set(metrics["eval"]["zero_shot"]) == set(FAMILIES)
    assert set(metrics["eval"]["auroc"]) == set(CONCEPTS)


def test_shipped_clip_loads_through_factory_into_cache(shipped):
    model, preprocess, tokenizer, cache = shipped
    assert isinstance(model, open_clip.CLIP)
    checkpoints = list((cache / "toy_clip").glob("*.safetensors"))
    assert len(checkpoints) == 1
    assert not list((cache / "toy_clip").glob("*.tmp"))
    # The materialised file is a plain open_clip checkpoint equal to the model's weights.
    state = open_clip.load_checkpoint(open_clip.create_model(toy_clip.TOY_CLIP_NAME),
                                      str(checkpoints[0]))
    assert not state.missing_keys and not state.unexpected_keys
    assert model.visual.preprocess_cfg["mean"] == toy_clip.TOY_CLIP_MEAN
    # Second load reuses the checkpoint.
    mtime = checkpoints[0].stat().st_mtime_ns
    assert toy_clip.materialise_checkpoint(cache_dir=cache) == checkpoints[0]
    assert checkpoints[0].stat().st_mtime_ns == mtime


def test_a_materialised_checkpoint_that_does_not_verify_is_moved_aside_and_rebuilt(tmp_path,
                                                                                 caplog):
    from safetensors import safe_open
    from safetensors.torch import save_file

    target = toy_clip.materialise_checkpoint(cache_dir=tmp_path)
    with safe_open(str(target), framework="pt") as f:
        meta = f.metadata()
        zeroed = {k: torch.zeros_like(f.get_tensor(k)) for k in f.keys()}  # noqa: SIM118
    save_file(zeroed, str(target), metadata=meta)  # zeroed, its old checksum kept
    with caplog.at_level("WARNING", logger="cosy_bench"):
        model, _, _ = toy_clip.load_toy_clip(cache_dir=tmp_path)
    aside = list((tmp_path / "toy_clip").glob(f"{target.name}.corrupt-*"))
    assert len(aside) == 1 and str(target) in caplog.text and "moved aside" in caplog.text
    expected = toy_clip.expand_compact(toy_clip.WEIGHTS_PATH)
    state = model.state_dict()
    assert state["token_embedding.weight"].abs().sum() > 0
    for key, value in expected.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0)
    mtime = target.stat().st_mtime_ns  # rebuilt and now verified: reused as it is
    assert toy_clip.materialise_checkpoint(cache_dir=tmp_path) == target
    assert target.stat().st_mtime_ns == mtime


def test_preprocess_matches_batched_tensor_path(shipped):
    model, preprocess, _, _ = shipped
    images, _, _ = render_batch(3, seed=5, with_masks=False)
    via_pil = torch.stack([preprocess(Image.fromarray(im)) for im in images])
    assert torch.allclose(via_pil, toy_clip.images_to_tensor(images, model), atol=1e-5)


def test_zero_shot_accuracy_meets_documented_figures(shipped):
    model, _, tokenizer, _ = shipped
    documented = json.loads(toy_clip.METRICS_PATH.read_text())["eval"]
    result = toy_clip.evaluate(model, tokenizer, n=400, seed=424242)
    for family, acc in result["zero_shot"].items():
        assert acc >= documented["zero_shot"][family] - MARGIN, (family, acc)
        assert acc >= 0.8 - MARGIN, (family, acc)
    assert result["auroc_mean"] >= documented["auroc_mean"] - 0.05


def test_zero_shot_accuracy_helper_on_colours(shipped):
    model, _, tokenizer, _ = shipped
    renders = [render_scene(99, i, with_masks=False) for i in range(120)]
    images = np.stack([r.image for r in renders])
    idx, targets = toy_clip.family_targets(renders)["colour"]
    colours = FAMILIES["colour"]
    acc = toy_clip.zero_shot_accuracy(model, tokenizer, images[idx], targets, colours)
    assert acc >= 0.7
    # Shuffled class texts break the correspondence: accuracy collapses.
    wrong = toy_clip.zero_shot_accuracy(model, tokenizer, images[idx], targets,
                                        colours[1:] + colours[:1])
    assert wrong < 0.4


def test_unknown_tokens_are_reported(shipped):
    model, _, tokenizer, _ = shipped
    assert toy_clip.unknown_tokens(model, tokenizer, CONCEPTS) == []
    assert toy_clip.unknown_tokens(model, tokenizer, ["red", "saxophone"]) == ["saxophone"]
    # Unknown words share the zero embedding row: their text embeddings coincide.
    dog, cat, red = toy_clip.encode_texts(model, tokenizer, ["dog", "cat", "red"])
    torch.testing.assert_close(dog, cat)
    assert not torch.allclose(dog, red)


def test_compact_roundtrip_is_exact_up_to_float16(tmp_path):
    torch.manual_seed(0)
    model = open_clip.create_model(toy_clip.TOY_CLIP_NAME)
    with torch.no_grad():
        model.token_embedding.weight[100:] = 0
    path = toy_clip.save_compact(model, tmp_path / "m.safetensors")
    state = toy_clip.expand_compact(path)
    for key, value in model.state_dict().items():
        assert state[key].dtype == value.dtype
        torch.testing.assert_close(state[key], value.half().to(value.dtype), rtol=0, atol=0)
    assert path.stat().st_size < 0.6 * sum(v.numel() * 2 for v in model.state_dict().values())


def test_multi_positive_loss_equals_clip_loss_for_one_positive():
    torch.manual_seed(1)
    img = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    txt = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    scale = torch.tensor(10.0)
    loss = train_clip.MultiPositiveClipLoss()
    reference = open_clip.ClipLoss()(img, txt, scale)
    torch.testing.assert_close(loss(img, txt, scale, positives=torch.eye(6, dtype=torch.bool)),
                               reference)
    positives = torch.eye(6, dtype=torch.bool)
    positives[0, 1] = True
    assert not torch.isclose(loss(img, txt, scale, positives=positives), reference)


def test_multi_positive_loss_extra_texts_and_empty_rows():
    torch.manual_seed(2)
    img = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    txt = torch.nn.functional.normalize(torch.randn(7, 8), dim=1)
    scale = torch.tensor(5.0)
    pos = torch.zeros(4, 7)
    pos[torch.arange(4), torch.arange(4)] = 1
    pos[1, 5] = 0.5  # text 6 describes no image: left out of the text-to-image mean
    got = train_clip.MultiPositiveClipLoss()(img, txt, scale, positives=pos)
    logits = scale * img @ txt.T
    target_img = pos / pos.sum(1, keepdim=True)
    li = -(target_img * logits.log_softmax(1)).sum(1).mean()
    cols = [0, 1, 2, 3, 5]
    target_txt = pos.T[cols] / pos.T[cols].sum(1, keepdim=True)
    lt = -(target_txt * logits.T[cols].log_softmax(1)).sum(1).mean()
    torch.testing.assert_close(got, (li + lt) / 2)


def test_concept_weights_are_relative_areas():
    _, scenes, _ = train_clip.render_training_batch(stream=5, start=0, n=40)
    weights = train_clip.concept_weights(scenes)
    labels = np.stack([s.labels for s in scenes])
    np.testing.assert_array_equal(weights > 0, labels)
    n_main_first = 0
    for i, (s, w) in enumerate(zip(scenes, weights, strict=True)):
        area = s.masks.sum(axis=(1, 2))
        for members in FAMILIES.values():
            cols = [CONCEPTS.index(c) for c in members]
            if labels[i, cols].any():
                np.testing.assert_allclose(w[cols], area[cols] / area[cols].max())
        n_main_first += w[CONCEPTS.index(s.spec.main.colour)] == 1.0
    assert n_main_first >= 0.9 * len(scenes)  # the main object is usually the largest


def test_captions_are_true_of_their_scenes():
    images, scenes, captions = train_clip.render_training_batch(stream=3, start=0, n=64)
    truth = toy_captions.truth_matrix(scenes, captions)
    assert images.shape == (64, 64, 64, 3)
    assert truth.diagonal().all()
    texts = {c.text for c in captions}
    assert len(texts) > 20
    # A bare concept word is true of exactly the scenes labelled with that concept.
    for j, c in enumerate(captions):
        if c.text in CONCEPTS:
            column = CONCEPTS.index(c.text)
            np.testing.assert_array_equal(
                truth[:, j], np.array([s.labels[column] for s in scenes]))
    # Tokens of every caption are among the rows training initialises.
    tokenizer = open_clip.get_tokenizer(toy_clip.TOY_CLIP_NAME)
    vocab = set(tokenizer(toy_captions.caption_vocabulary()).flatten().tolist())
    assert set(tokenizer([c.text for c in captions]).flatten().tolist()) <= vocab


def test_shape_pairs_differ_only_in_the_main_shape():
    pairs = 0
    for leader in range(0, 40, 2):
        a, paired_a = train_clip.training_scene(7, leader)
        b, paired_b = train_clip.training_scene(7, leader + 1)
        assert paired_a == paired_b
        if not paired_a:
            continue
        pairs += 1
        assert a.spec.main.shape != b.spec.main.shape
        assert dataclasses.replace(b.spec.main, shape=a.spec.main.shape) == a.spec.main
        assert a.spec.objects[1:] == b.spec.objects[1:]
        n_object_concepts = sum(len(FAMILIES[f]) for f in ("colour", "shape", "pattern"))
        objects = (a.masks[:n_object_concepts].any(axis=0)
                   | b.masks[:n_object_concepts].any(axis=0))
        assert (~objects).sum() > 500  # same textures and noise wherever no object is
        np.testing.assert_array_equal(a.image[~objects], b.image[~objects])
    assert 4 <= pairs <= 16
    # Pure function of (stream, index).
    again, _ = train_clip.training_scene(7, 1)
    np.testing.assert_array_equal(again.image, train_clip.training_scene(7, 1)[0].image)


def test_training_is_deterministic_given_the_seed():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a, _ = train_clip.train(seed=4, steps=2, batch_size=8, log_every=10)
        b, _ = train_clip.train(seed=4, steps=2, batch_size=8, log_every=10)
        c, _ = train_clip.train(seed=5, steps=2, batch_size=8, log_every=10)
    finally:
        torch.set_num_threads(threads)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_training_command_runs_and_result_loads(tmp_path):
    out = tmp_path / "toy_clip_tiny.safetensors"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COSY_CACHE_DIR": str(tmp_path / "cosy")}
    proc = subprocess.run(
        [sys.executable, "-m", "cosy_bench.toyworld.training.clip", "--seed", "3", "--steps", "2",
         "--batch-size", "16", "--eval-images", "40", "--out", str(out),
         "--cache-dir", str(tmp_path / "cache")],
        capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '"zero_shot"' in proc.stdout
    assert out.is_file() and out.with_suffix(".json").is_file()
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["steps"] == 2 and saved["seed"] == 3
    assert set(saved["eval"]["zero_shot"]) == set(FAMILIES)
    assert saved["weights_bytes"] == out.stat().st_size
    model, _, tokenizer = toy_clip.load_toy_clip(cache_dir=tmp_path / "cache", weights=out)
    assert isinstance(model, open_clip.CLIP)
    emb = toy_clip.encode_texts(model, tokenizer, ["red", "stripes"])
    assert emb.shape == (2, toy_clip.model_config()["embed_dim"])
    # Unused embedding rows stayed zero through training: only caption tokens are stored.
    assert len(toy_clip.known_token_ids(model)) == saved["trained_token_rows"]
    assert len(toy_clip.known_token_ids(model)) < 400
