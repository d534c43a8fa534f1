"""Acceptance of issue 22 on the toy world: a valid artefact under another artefact's name, a
stale digest in the fingerprints memo and a checksum-valid garbage explanations CSV are each
named in a warning and recomputed, giving the results of a clean run."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from PIL import Image

from cosy_bench.cache.store import write_text_checked
from cosy_bench.pipeline import run

pytestmark = pytest.mark.slow


def toy(cache: Path, *extra: str, folder: Path | None = None) -> list[str]:
    data = ["dataset.n=120"] if folder is None else ["dataset=image_folder",
                                                     f"dataset.root={folder}"]
    return ["explainer=ground_truth", "neurons.ids=[0,3,9,17]", "n_images=6", "logger=none",
            *data, f"paths.cache_dir={cache}", *extra]


def _results(out: Path) -> bytes:
    return (out / "results.csv").read_bytes()


def test_a_concept_activation_file_copied_over_another_is_named_and_recomputed(
        compose, tmp_path, caplog):
    cfg = compose(toy(tmp_path / "cache"))
    run(cfg, tmp_path / "r1")
    files = sorted((tmp_path / "cache" / "concept_activations").glob("*.safetensors"))
    assert len(files) == 4
    shutil.copy(files[0], files[1])  # the file of one concept under the name of another
    with caplog.at_level(logging.WARNING, logger="cosy_bench"):
        second = run(cfg, tmp_path / "r2")
    assert _results(tmp_path / "r2") == _results(tmp_path / "r1")
    assert str(files[1]) in caplog.text and "records the key" in caplog.text
    assert list(files[1].parent.glob(files[1].name + ".corrupt-*"))
    assert second.summary["run"]["concept_activation_sets_computed"] == 1


def test_a_checksum_valid_garbage_explanations_csv_is_named_and_recomputed(compose, tmp_path,
                                                                           caplog):
    cfg = compose(toy(tmp_path / "cache"))
    run(cfg, tmp_path / "r1")
    (csv,) = (tmp_path / "cache" / "explanations").glob("*.csv")
    write_text_checked(csv, "garbage\nnot,a,table\n")  # valid checksum and key, no columns
    with caplog.at_level(logging.WARNING, logger="cosy_bench"):
        run(cfg, tmp_path / "r2")
    assert _results(tmp_path / "r2") == _results(tmp_path / "r1")
    assert str(csv) in caplog.text and "malformed" in caplog.text
    with caplog.at_level(logging.WARNING, logger="cosy_bench"):
        caplog.clear()
        run(cfg, tmp_path / "r3")  # the recomputed file is read back, no warning
    assert _results(tmp_path / "r3") == _results(tmp_path / "r1") and not caplog.text


def _control_images(folder: Path, seed: int, n: int = 24) -> None:
    from cosy_bench.toyworld.data import ToyControlSet

    folder.mkdir(exist_ok=True)
    for i, image in enumerate(ToyControlSet(n=n, seed=seed).images):
        Image.fromarray(image).save(folder / f"img{i:03d}.png")


def _stale_memo(memo: Path, old: dict) -> None:
    """Put the digests of ``old`` back into ``memo``, keeping its current stat fields."""
    head, body = memo.read_text().split("\n", 1)
    data = json.loads(body)
    for rel, entry in data["files"].items():
        entry[-1] = old[rel][-1]
    memo.write_text(head + "\n" + json.dumps(data))  # the checksum line no longer matches


def test_a_stale_digest_in_the_fingerprints_memo_is_named_and_rehashed(compose, tmp_path,
                                                                       caplog):
    folder, cache = tmp_path / "control", tmp_path / "cache"
    _control_images(folder, seed=1)
    cfg = compose(toy(cache, folder=folder))
    run(cfg, tmp_path / "r1")  # the first images' activations are cached
    (memo,) = (cache / "fingerprints").glob("*.json")
    first = json.loads(memo.read_text().split("\n", 1)[1])["files"]
    _control_images(folder, seed=2)  # other images, same names
    run(cfg, tmp_path / "r2")
    assert _results(tmp_path / "r2") != _results(tmp_path / "r1")

    _stale_memo(memo, first)  # the old contents' digests with the new files' stat fields
    with caplog.at_level(logging.WARNING, logger="cosy_bench"):
        run(cfg, tmp_path / "r3")
    assert _results(tmp_path / "r3") == _results(tmp_path / "r2")
    assert str(memo) in caplog.text and "checksum mismatch" in caplog.text

    # the same stale memo with a valid checksum: only verify_inputs=true finds it
    text = memo.read_text().split("\n", 1)[1]
    data = json.loads(text)
    for rel, entry in data["files"].items():
        entry[-1] = first[rel][-1]
    write_text_checked(memo, json.dumps(data))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cosy_bench"):
        run(compose(toy(cache, "verify_inputs=true", folder=folder)), tmp_path / "r4")
    assert _results(tmp_path / "r4") == _results(tmp_path / "r2")
    assert str(memo) in caplog.text and "changed without a new stat signature" in caplog.text
