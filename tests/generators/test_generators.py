"""Generators: per-image seeds, the tiny offline diffusers pipeline, clear loading errors, and
the synthesis predict loop."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
from PIL import Image

from cosy_bench.generators.base import image_seed
from cosy_bench.generators.diffusers import DiffusersGenerator, TinyDiffusersGenerator
from cosy_bench.loops.synthesis import WorkItem, pending, synthesize

# ------------------------------------------------------------------------------ seeds


def test_image_seed_is_a_pure_function():
    assert image_seed("cat", "a cat", 3) == image_seed("cat", "a cat", 3)
    seed = image_seed("cat", "a cat", 3)
    assert isinstance(seed, int) and 0 <= seed < 2**63  # valid for torch.Generator


def test_image_seed_differs_per_concept_prompt_and_index():
    concepts = ["cat", "dog", "cats", "a b"]
    prompts = ["a cat", "a dog", "a painting of cat", "realistic photo of a close up of cat"]
    seeds = {(c, p, i): image_seed(c, p, i) for c in concepts for p in prompts for i in range(8)}
    assert len(set(seeds.values())) == len(seeds)
    # no ambiguity where concept and prompt meet
    assert image_seed("a b", "c", 0) != image_seed("a", "b c", 0)


def test_image_seed_is_stable_across_processes():
    """Not Python's salted ``hash``: other processes (other PYTHONHASHSEEDs) agree."""
    code = ("from cosy_bench.generators.base import image_seed;"
            "print(image_seed('red/\"car\" ☕', 'a painting of red/\"car\" ☕', 7))")
    here = image_seed('red/"car" ☕', 'a painting of red/"car" ☕', 7)
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONIOENCODING": "utf-8"}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env, check=True, timeout=60)
        assert int(out.stdout.strip()) == here


# ------------------------------------------------------------------------ tiny pipeline


@pytest.fixture(scope="module")
def tiny() -> TinyDiffusersGenerator:
    gen = TinyDiffusersGenerator()  # the defaults of generator=tiny
    gen.setup("cpu")
    return gen


def _px(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_tiny_generator_makes_rgb_images_offline(tiny):
    images = tiny.generate(["a red circle", "a blue square"], [1, 2])
    assert len(images) == 2
    for im in images:
        assert im.mode == "RGB" and im.size == (64, 64)
    assert _px(images[0]).std() > 0  # not a blank image


def test_tiny_generator_is_deterministic(tiny):
    seed = image_seed("cat", "a cat", 0)
    first = tiny.generate(["a cat"], [seed])[0]
    again = tiny.generate(["a cat"], [seed])[0]
    fresh = TinyDiffusersGenerator()  # another instance: same random weights
    other = fresh.generate(["a cat"], [seed])[0]
    assert np.array_equal(_px(first), _px(again))
    assert np.array_equal(_px(first), _px(other))
    different = tiny.generate(["a cat"], [image_seed("cat", "a cat", 1)])[0]
    assert np.abs(_px(first) - _px(different)).max() > 30  # the seed matters


def _alone_and_batched(gen):
    prompts = ["a dog", "a cat", "a bird"]
    seeds = [image_seed(p.split()[1], p, i) for i, p in enumerate(prompts)]
    batched = gen.generate(prompts, seeds)
    alone = [gen.generate([p], [s])[0] for p, s in zip(prompts, seeds, strict=True)]
    return [(_px(a), _px(b)) for a, b in zip(alone, batched, strict=True)]


def test_tiny_generator_is_batch_independent_up_to_rounding(tiny):
    for alone, batched in _alone_and_batched(tiny):
        diff = np.abs(alone - batched)
        assert diff.max() <= 2
        assert (diff > 0).mean() < 1e-3


def test_tiny_generator_is_exactly_batch_independent(tiny):
    for alone, batched in _alone_and_batched(tiny):
        assert np.array_equal(alone, batched)


def test_generator_cache_keys_tell_settings_apart():
    keys = {TinyDiffusersGenerator().cache_key, TinyDiffusersGenerator(seed=1).cache_key,
            TinyDiffusersGenerator(num_inference_steps=3).cache_key,
            TinyDiffusersGenerator(sample_size=16).cache_key}
    assert len(keys) == 4
    assert TinyDiffusersGenerator().cache_key == TinyDiffusersGenerator().cache_key


def _rewrite_keeping_size_and_mtime(path: Path, data: bytes) -> None:
    st = path.stat()
    time.sleep(0.02)  # past the file system's coarse clock tick: the ctime moves
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def test_a_local_model_folder_keys_the_images_by_content_and_variant(tmp_path, monkeypatch):
    monkeypatch.setenv("COSY_CACHE_DIR", str(tmp_path / "cache"))
    weights = tmp_path / "my-sd" / "unet" / "diffusion_pytorch_model.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"a" * 64)
    gen = DiffusersGenerator(model_id=str(tmp_path / "my-sd"), dtype="float32")
    before = gen.cache_key
    assert gen.cache_key == before
    _rewrite_keeping_size_and_mtime(weights, b"b" * 64)  # other weights, same size and mtime
    assert gen.cache_key != before
    assert DiffusersGenerator(model_id=str(tmp_path / "my-sd"), variant="fp16").cache_key \
        != gen.cache_key
    hub = DiffusersGenerator(model_id="stabilityai/stable-diffusion-xl-base-1.0").cache_key
    assert "model_content" not in hub  # a hub id is not a local path: keyed by its name


def test_diffusers_generator_with_a_missing_local_path_says_how_to_run_offline(tmp_path):
    missing = str(tmp_path / "no" / "such" / "pipeline")
    gen = DiffusersGenerator(model_id=missing, num_inference_steps=1, dtype="float32",
                             variant=None)
    with pytest.raises(FileNotFoundError) as err:  # a missing folder, not "not in the cache"
        gen.setup("cpu")
    msg = str(err.value)
    assert missing in msg and "no such folder" in msg
    assert "generator=tiny" in msg
    assert gen.name == missing.replace("/", "--")  # the id never becomes a path as is


# ---------------------------------------------------------------------- synthesis loop


def _trainer() -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_model_summary=False, enable_progress_bar=False)


def test_synthesis_loop_writes_each_image_once(tiny, tmp_path):
    prompt = "a painting of cat"
    items = [WorkItem("cat", prompt, i, image_seed("cat", prompt, i),
                      str(tmp_path / "imgs" / f"{i:05d}.png")) for i in range(3)]
    assert pending(items) == items
    assert synthesize(tiny, items, _trainer(), batch_size=2) == 3
    assert pending(items) == []
    assert sorted(p.name for p in (tmp_path / "imgs").iterdir()) == [
        "00000.png", "00001.png", "00002.png"]  # no temporary file left behind
    # the file holds the image of its own (prompt, seed), whatever the batch
    direct = tiny.generate([prompt], [items[2].seed])[0]
    with Image.open(items[2].path) as saved:
        assert np.abs(_px(saved.convert("RGB")) - _px(direct)).max() <= 2
    mtime = Path(items[0].path).stat().st_mtime_ns
    assert synthesize(tiny, items, _trainer(), batch_size=2) == 0  # all cached
    assert Path(items[0].path).stat().st_mtime_ns == mtime


def test_a_saved_pipeline_loads_without_deprecation_or_low_cpu_mem_usage_warnings(
        tmp_path, caplog, recwarn):
    """Issue #19, item 9: the installed diffusers' dtype keyword (not the deprecated
    ``torch_dtype``), and ``accelerate`` present, so loading a saved pipeline (fp16 variant,
    as ``generator=sdxl`` loads it) warns neither about the keyword nor about
    ``low_cpu_mem_usage``."""
    import importlib.util
    import logging

    from cosy_bench.generators.diffusers import build_tiny_pipeline, dtype_keyword

    assert importlib.util.find_spec("accelerate") is not None
    build_tiny_pipeline(seed=0, sample_size=16).save_pretrained(tmp_path / "p", variant="fp16")
    gen = DiffusersGenerator(model_id=str(tmp_path / "p"), num_inference_steps=1,
                             dtype="float16", variant="fp16")
    with caplog.at_level(logging.WARNING):
        gen.setup("cpu")
    said = caplog.text + " ".join(str(w.message) for w in recwarn)
    assert "torch_dtype" not in said and "low_cpu_mem_usage" not in said, said
    assert dtype_keyword() in ("dtype", "torch_dtype")
    assert gen.generate(["a red circle"], [0])[0].size[0] > 0
