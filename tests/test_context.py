"""Cache keys hold contents, not names (the keys of cosy_bench/context.py): the two silent
stale-result repros of issue 15, on the toy world. Weights overwritten in place, and a control
folder whose images are replaced keeping names, count and time stamps, are recomputed and
give the scores of a fresh cache."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image
from safetensors.torch import load_file, save_file

from cosy_bench.pipeline import run
from cosy_bench.toyworld.data import ToyControlSet
from cosy_bench.toyworld.model import SHIPPED_WEIGHTS
from cosy_bench.toyworld.vocab import CONCEPTS

pytestmark = pytest.mark.slow


def toy(cache: Path, *extra: str) -> list[str]:
    return ["explainer=ground_truth", "neurons.ids=[0,3,9,17]", "n_images=6", "logger=none",
            f"paths.cache_dir={cache}", *extra]


def _results(out: Path) -> bytes:
    return (out / "results.csv").read_bytes()


def _keep_stamps(paths):
    return {p: (os.stat(p).st_atime_ns, os.stat(p).st_mtime_ns) for p in paths}


def test_weights_overwritten_in_place_are_recomputed(compose, tmp_path):
    weights = tmp_path / "weights.safetensors"
    shutil.copy(SHIPPED_WEIGHTS, weights)
    cfg = compose(toy(tmp_path / "cache", f"model.weights={weights}", "dataset.n=150"))
    first = run(cfg, tmp_path / "r1")
    state = load_file(str(weights))
    state["concepts.weight"] = -state["concepts.weight"]  # other weights, same path and size
    stamps = _keep_stamps([weights])
    save_file(state, str(weights))
    os.utime(weights, ns=stamps[weights])
    second = run(cfg, tmp_path / "r2")
    assert second.summary["run"]["control_activations_computed"] is True
    assert _results(tmp_path / "r2") != _results(tmp_path / "r1")
    fresh_cfg = compose(toy(tmp_path / "fresh", f"model.weights={weights}", "dataset.n=150"))
    run(fresh_cfg, tmp_path / "r3")
    assert _results(tmp_path / "r2") == _results(tmp_path / "r3")
    assert first.summary["auc"]["mean"] > 0.8 > second.summary["auc"]["mean"]


def _write_folder(root: Path, seed: int, n: int = 40) -> list[Path]:
    root.mkdir(exist_ok=True)
    images = ToyControlSet(n=n, seed=seed).images
    paths = [root / f"img{i:03d}.png" for i in range(n)]
    for p, img in zip(paths, images, strict=True):
        Image.fromarray(img).save(p)
    return paths


def test_control_folder_contents_replaced_are_recomputed(compose, tmp_path):
    folder = tmp_path / "control"
    paths = _write_folder(folder, seed=1)
    overrides = toy(tmp_path / "cache", "dataset=image_folder", f"dataset.root={folder}")
    run(compose(overrides), tmp_path / "r1")
    stamps = _keep_stamps(paths)
    _write_folder(folder, seed=2)  # same names and count, other scenes
    for p in paths:
        os.utime(p, ns=stamps[p])
    second = run(compose(overrides), tmp_path / "r2")
    assert second.summary["run"]["control_activations_computed"] is True
    assert _results(tmp_path / "r2") != _results(tmp_path / "r1")
    fresh = toy(tmp_path / "fresh", "dataset=image_folder", f"dataset.root={folder}")
    run(compose(fresh), tmp_path / "r3")
    assert _results(tmp_path / "r2") == _results(tmp_path / "r3")
    third = run(compose(overrides), tmp_path / "r4")  # unchanged: a cache hit again
    assert third.summary["run"]["control_activations_computed"] is False


def _labels(report) -> dict[int, str]:
    return {int(row["neuron"]): row["explanation"] for row in report.rows}


def test_a_concept_list_overwritten_in_place_is_recomputed(compose, tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("\n".join(CONCEPTS) + "\n", encoding="utf-8")

    def overrides(cache: Path) -> list[str]:
        return [f"paths.cache_dir={cache}", "logger=none", "explainer=clip_dissect",
                "layer=concepts", "concepts=text_file", f"concepts.path={words}",
                "neurons.ids=[0,8]", "n_images=4", "probe.n=600", "dataset.n=300"]

    first = run(compose(overrides(tmp_path / "cache")), tmp_path / "r1")
    assert _labels(first)[0] == "red"
    stamps = _keep_stamps([words])
    size = words.stat().st_size
    words.write_text("\n".join(c if c != "red" else "sky" for c in CONCEPTS) + "\n",
                     encoding="utf-8")  # "red" gone, same bytes count
    os.utime(words, ns=stamps[words])
    assert words.stat().st_size == size and words.stat().st_mtime_ns == stamps[words][1]
    second = run(compose(overrides(tmp_path / "cache")), tmp_path / "r2")
    assert len(list((tmp_path / "cache" / "explanations").glob("*.csv"))) == 2  # recomputed
    assert _labels(second)[0] != "red" and _labels(second)[8] == "circle"
    fresh = run(compose(overrides(tmp_path / "fresh")), tmp_path / "r3")
    assert _labels(second) == _labels(fresh)
    assert _results(tmp_path / "r2") == _results(tmp_path / "r3")


def test_clip_weights_overwritten_in_place_recompute_the_clip_embeddings(compose, tmp_path):
    """CLIP-Dissect's cached image and text embeddings follow the CLIP weights' contents."""
    import torch
    from safetensors import safe_open

    from cosy_bench.toyworld.clip import WEIGHTS_PATH

    weights = tmp_path / "toy_clip.safetensors"
    shutil.copyfile(WEIGHTS_PATH, weights)

    def overrides(cache: Path) -> list[str]:
        return [f"paths.cache_dir={cache}", "logger=none", "explainer=clip_dissect",
                "layer=concepts", f"+clip.weights={weights}", "neurons.ids=[0,8]",
                "n_images=4", "probe.n=600", "dataset.n=300"]

    first = run(compose(overrides(tmp_path / "cache")), tmp_path / "r1")
    with safe_open(str(weights), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    # other weights, the same file size: the word embeddings rolled by one word
    tensors["token_embedding.values"] = torch.roll(tensors["token_embedding.values"], 1, 0)
    stamps = _keep_stamps([weights])
    size = weights.stat().st_size
    save_file(tensors, weights, metadata=meta)
    os.utime(weights, ns=stamps[weights])
    assert weights.stat().st_size == size
    second = run(compose(overrides(tmp_path / "cache")), tmp_path / "r2")
    for kind in ("clip_images", "clip_texts"):
        assert len(list((tmp_path / "cache" / kind).glob("*.safetensors"))) == 2, kind
    fresh = run(compose(overrides(tmp_path / "fresh")), tmp_path / "r3")
    assert _labels(fresh) != _labels(first)  # the test can tell stale embeddings
    assert _labels(second) == _labels(fresh)
    assert _results(tmp_path / "r2") == _results(tmp_path / "r3")
