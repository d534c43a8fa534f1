"""The pipeline end to end (explain -> choose neurons -> synthesise -> activations -> score ->
report) on a real architecture with random weights (`debug=smoke`), its caches and its
errors on bad input.

End-to-end runs share one module-scoped cache, so that after the first run most of them
only build the model and read the cache.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cosy_bench.cache.store import (
    Cache,
    atomic_path,
    save_tensors_atomic,
    stable_hash,
    write_text_atomic,
)
from cosy_bench.explainers.base import Explanations
from cosy_bench.generators.diffusers import TinyDiffusersGenerator
from cosy_bench.pipeline import check_finite, choose_neurons, run
from cosy_bench.synthetic import work_items

# a ground-truth run on the logits: every neuron has a known, distinct label
GT_OUTPUT = ["layer=output", "explainer=ground_truth"]


def small(cache_dir, *extra: str) -> list[str]:
    """``debug=smoke`` spelt out, for runs that choose another control set (debug=smoke sets
    ``dataset.n``, which only the synthetic set takes: see test_smoke_with_an_image_folder)."""
    return ["model=resnet18", "model.weights=null", "generator=tiny", "logger=none",
            "n_images=2", "neurons.sample=3", "neurons.seed=42", "batch_size=16",
            f"paths.cache_dir={cache_dir}", *GT_OUTPUT, *extra]

WEIRD_TEXTS = {
    3: 'red/green "striped" cat, it\'s a \\ back/slash',
    141: "éléphant café ☕ 日本の猫 — ümlaut",
    511: ("a very long explanation " * 13)[:299] + "!",  # 300 characters
}


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def first_run(compose, smoke, cache_dir, tmp_path_factory):
    """The first run on an empty cache: resnet18 logits, ground-truth explanations."""
    cfg = compose(smoke(cache_dir, *GT_OUTPUT))
    out = tmp_path_factory.mktemp("run1")
    report = run(cfg, out)
    return cfg, report, out


# ------------------------------------------------------------------ what a run leaves


def test_run_leaves_explanations_results_and_summary(first_run):
    cfg, report, out = first_run
    assert {p.name for p in out.iterdir()} >= {"explanations.csv", "results.csv",
                                               "summary.json", "config.yaml"}

    expl = _read_csv(out / "explanations.csv")
    assert list(expl[0])[:3] == ["neuron", "rank", "explanation"]
    assert len(expl) == 1000  # every logit is explained
    assert expl[0]["explanation"] == "tench"

    rows = _read_csv(out / "results.csv")
    assert list(rows[0]) == ["neuron", "rank", "explanation", "ground_truth", "auc",
                             "auc_ci_low", "auc_ci_high", "mad"]
    assert len(rows) == 3  # debug=smoke samples 3 neurons
    neurons = [int(r["neuron"]) for r in rows]
    assert neurons == sorted(neurons) and len(set(neurons)) == 3
    for r in rows:
        assert r["explanation"] == r["ground_truth"] == expl[int(r["neuron"])]["explanation"]
        assert 0.0 <= float(r["auc"]) <= 1.0
        assert float(r["auc_ci_low"]) <= float(r["auc"]) <= float(r["auc_ci_high"])
        assert math.isfinite(float(r["mad"]))

    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    for scorer in ("auc", "mad"):
        stat = summary[scorer]
        assert set(stat) == {"mean", "std", "n", "ci_low", "ci_high"}
        values = np.array([float(r[scorer]) for r in rows])
        assert stat["n"] == 3
        assert stat["mean"] == pytest.approx(values.mean(), abs=1e-12)
        assert stat["std"] == pytest.approx(values.std(ddof=0), abs=1e-12)  # README: ddof 0
    assert summary["ground_truth_match"] == 1.0
    meta = summary["run"]
    assert meta["model"] == "resnet18" and meta["layer"] == "output"
    assert meta["explainer"] == "ground_truth" and meta["generator"] == "tiny"
    assert meta["prompt"] == "p5" and meta["n_images"] == 2
    assert meta["n_neurons"] == 3 and meta["n_control"] == 16
    assert meta["images_generated"] == 3 * 2  # 3 distinct explanations, 2 images each
    assert meta["control_activations_computed"] is True
    assert meta["control_skipped"] == 0
    assert report.summary == summary

    saved = (out / "config.yaml").read_text(encoding="utf-8")
    assert "${" not in saved  # resolved
    assert "explainer_name: ground_truth" in saved


def test_second_identical_run_hits_every_cache(first_run, compose, smoke, cache_dir, tmp_path,
                                               caplog):
    cfg, report1, out1 = first_run
    images = sorted((cache_dir / "images").rglob("*.png"))
    assert len(images) == 6
    mtimes = [p.stat().st_mtime_ns for p in images]

    caplog.set_level(logging.INFO, logger="cosy_bench")
    cfg2 = compose(smoke(cache_dir, *GT_OUTPUT))
    report2 = run(cfg2, tmp_path)

    stats = report2.summary["run"]
    assert stats["images_generated"] == 0
    assert stats["control_activations_computed"] is False
    assert stats["concept_activation_sets_computed"] == 0
    log = caplog.text
    assert re.search(r"control activations: cache hit", log)
    assert re.search(r"explanations \(ground_truth\): cache hit", log)
    assert "0 to generate" in log
    assert [p.stat().st_mtime_ns for p in images] == mtimes  # no image was rewritten
    # the same results, to the last digit
    assert (tmp_path / "results.csv").read_text() == (out1 / "results.csv").read_text()
    assert report2.summary["auc"] == report1.summary["auc"]


def test_utest_scorer_adds_its_columns(first_run, compose, smoke, cache_dir, tmp_path):
    _, report1, _ = first_run
    cfg = compose(smoke(cache_dir, *GT_OUTPUT, "scorer=[auc,mad,utest]"))
    report = run(cfg, tmp_path)
    rows = _read_csv(tmp_path / "results.csv")
    assert list(rows[0])[:4] == ["neuron", "rank", "explanation", "ground_truth"]
    assert list(rows[0])[4:] == ["auc", "auc_ci_low", "auc_ci_high", "mad", "utest_u", "utest_p"]
    # same seeded sample of neurons, same cached activations, same scores
    assert [int(r["neuron"]) for r in rows] == [r["neuron"] for r in report1.rows]
    for row, row1 in zip(rows, report1.rows, strict=True):
        assert float(row["auc"]) == pytest.approx(row1["auc"])
        # U = AUC * n * m (n = 16 control images, m = 2 synthetic ones)
        assert float(row["utest_u"]) == pytest.approx(float(row["auc"]) * 16 * 2)
        assert 0.0 <= float(row["utest_p"]) <= 1.0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["utest_u"]["n"] == summary["utest_p"]["n"] == 3
    assert report.summary["run"]["images_generated"] == 0


def test_precomputed_invert_csv_evaluates_exactly_its_neurons(compose, smoke, cache_dir,
                                                              tmp_path):
    """INVERT format (``neuron,concept,concept_id,metric``); texts with ``/``, quotes,
    unicode and 300 characters go through synthesis and caching untouched."""
    csv_path = tmp_path / "resnet18-avgpool.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["neuron", "concept", "concept_id", "metric"])
        for k, text in WEIRD_TEXTS.items():
            w.writerow([k, text, f"n{k:08d}", 0.9])
    cfg = compose(smoke(cache_dir, "layer=avgpool", "explainer=precomputed",
                        f"explainer.path={csv_path}", "neurons.sample=null"))
    out = tmp_path / "run"
    report = run(cfg, out)

    rows = _read_csv(out / "results.csv")
    assert [int(r["neuron"]) for r in rows] == sorted(WEIRD_TEXTS)
    assert {int(r["neuron"]): r["explanation"] for r in rows} == WEIRD_TEXTS
    assert "ground_truth" not in rows[0]  # avgpool units have no known label
    expl = Explanations.from_csv((out / "explanations.csv").read_text(encoding="utf-8"))
    assert expl.texts == WEIRD_TEXTS
    assert report.summary["auc"]["n"] == 3
    assert report.summary["run"]["images_generated"] == 3 * 2
    # no cache file is named after an explanation
    for path in cache_dir.rglob("*"):
        rel = path.relative_to(cache_dir)
        assert all(len(part) <= 64 and part.isascii() for part in rel.parts), rel
        assert not any(word in str(rel) for word in ("striped", "long", "café"))


def test_explainer_labelling_neurons_the_layer_lacks_is_an_error(compose, smoke, cache_dir,
                                                                 tmp_path):
    csv_path = tmp_path / "too_many.csv"
    csv_path.write_text("neuron,concept\n0,cat\n600,dog\n", encoding="utf-8")
    cfg = compose(smoke(cache_dir, "layer=avgpool", "explainer=precomputed",
                        f"explainer.path={csv_path}"))
    with pytest.raises(ValueError, match=r"\[600\].*0\.\.511"):
        run(cfg, tmp_path / "run")


# ------------------------------------------------------------------------ neurons


def test_neuron_ids_out_of_range_is_a_clear_error(first_run, compose, smoke, cache_dir,
                                                  tmp_path):
    cfg = compose(smoke(cache_dir, *GT_OUTPUT, "neurons.ids=[1,5000]"))
    with pytest.raises(ValueError) as err:
        run(cfg, tmp_path)
    msg = str(err.value)
    assert "neurons.ids" in msg and "5000" in msg and "0..999" in msg
    assert not (tmp_path / "results.csv").exists()


def test_choose_neurons():
    from omegaconf import OmegaConf

    explained = list(range(1000))
    cfg = OmegaConf.create({"sample": 50, "seed": 42, "ids": None})
    first = choose_neurons(cfg, explained, 1000)
    assert first == choose_neurons(cfg, explained[::-1], 1000)  # same pick, any order
    assert len(first) == 50 and first == sorted(first) and len(set(first)) == 50
    other = choose_neurons(OmegaConf.create({"sample": 50, "seed": 43, "ids": None}),
                           explained, 1000)
    assert other != first
    # all explained neurons where the sample is as large
    few = [4, 2, 9]
    assert choose_neurons(cfg, few, 10) == [2, 4, 9]
    assert choose_neurons(OmegaConf.create({"sample": None, "seed": 42, "ids": None}),
                          explained, 1000) == explained
    # explicit ids win over the sample
    ids = OmegaConf.create({"sample": 50, "seed": 42, "ids": [7, 3, 7]})
    assert choose_neurons(ids, explained, 1000) == [3, 7]
    with pytest.raises(ValueError, match="out of range"):
        choose_neurons(OmegaConf.create({"sample": None, "seed": 0, "ids": [-1]}), explained,
                       1000)
    with pytest.raises(ValueError, match="no explanation"):
        choose_neurons(OmegaConf.create({"sample": None, "seed": 0, "ids": [5]}), few, 10)


def test_seeded_sample_is_the_same_in_every_run(first_run, compose, smoke, cache_dir):
    _, report, _ = first_run
    cfg = compose(smoke(cache_dir, *GT_OUTPUT))
    assert cfg.neurons.seed == 42
    again = choose_neurons(cfg.neurons, list(range(1000)), 1000)
    assert [r["neuron"] for r in report.rows] == again


# ---------------------------------------------------------------------- bad inputs


def test_missing_dataset_folder_names_the_path_and_the_key(first_run, compose, smoke,
                                                           cache_dir, tmp_path):
    missing = tmp_path / "nonexistent" / "images"
    cfg = compose(small(cache_dir, "dataset=image_folder", f"dataset.root={missing}"))
    with pytest.raises(Exception) as err:
        run(cfg, tmp_path / "run")
    msg = str(err.value)
    assert str(missing) in msg and "dataset.root" in msg
    assert not (tmp_path / "run" / "results.csv").exists()


def test_missing_dataset_folder_fails_before_any_image_is_generated(compose, tmp_path):
    """With SDXL a wrong control path must not cost hours of synthesis first."""
    cache = tmp_path / "fresh_cache"
    cfg = compose(small(cache, "dataset=image_folder", "neurons.ids=[1]", "n_images=1",
                        f"dataset.root={tmp_path / 'nonexistent'}"))
    with pytest.raises(Exception, match="dataset.root"):
        run(cfg, tmp_path / "run")
    assert not list(cache.rglob("*.png"))


@pytest.mark.parametrize(("dataset", "variable"), [("imagenet_val", "IMAGENET_VAL_DIR"),
                                                   ("places365_val", "PLACES365_VAL_DIR")])
def test_real_control_set_without_a_path_names_the_key_and_the_variable(compose, monkeypatch,
                                                                        dataset, variable):
    from hydra.utils import instantiate

    monkeypatch.delenv(variable, raising=False)
    cfg = compose(["model=resnet18", f"dataset={dataset}"])
    with pytest.raises(Exception) as err:
        instantiate(cfg.dataset)
    msg = str(err.value)
    assert "dataset.root" in msg and variable in msg


def test_empty_dataset_folder_is_an_error(first_run, compose, smoke, cache_dir, tmp_path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("not an image")
    cfg = compose(small(cache_dir, "dataset=image_folder", f"dataset.root={empty}"))
    with pytest.raises(Exception) as err:
        run(cfg, tmp_path / "run")
    msg = str(err.value)
    assert str(empty) in msg and "no images" in msg


def _png(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)


def test_corrupt_image_is_skipped_with_a_warning_and_counted(first_run, compose, smoke,
                                                             cache_dir, tmp_path, caplog):
    folder = tmp_path / "control"
    (folder / "b").mkdir(parents=True)
    for i in range(3):
        _png(folder / f"{i}.png", i)
    _png(folder / "b" / "3.png", 3)
    (folder / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    caplog.set_level(logging.INFO)
    cfg = compose(small(cache_dir, "dataset=image_folder", f"dataset.root={folder}"))
    report = run(cfg, tmp_path / "run")
    meta = report.summary["run"]
    assert meta["control_skipped"] == 1
    assert meta["n_control"] == 4
    assert meta["images_generated"] == 0  # small() shares debug=smoke's cache keys
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("broken.jpg" in r.getMessage() for r in warnings)
    assert any("1 unreadable" in r.getMessage() for r in warnings)
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["run"]["control_skipped"] == 1


def test_smoke_with_an_image_folder(first_run, compose, smoke, cache_dir, tmp_path):
    folder = tmp_path / "control"
    folder.mkdir()
    for i in range(3):
        _png(folder / f"{i}.png", i)
    cfg = compose(smoke(cache_dir, *GT_OUTPUT, "dataset=image_folder", f"dataset.root={folder}"))
    report = run(cfg, tmp_path / "run")
    assert report.summary["run"]["n_control"] == 3


def test_unreadable_dataset_is_an_error(tmp_path):
    import lightning as L

    from cosy_bench.data.datasets import ImageFiles
    from cosy_bench.loops.activations import collect_activations
    from cosy_bench.models.layers import LayerExtractor, LayerSpec

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(2))
    extractor = LayerExtractor(net, LayerSpec("out", None))
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False)
    with pytest.raises(ValueError, match="could be read"):
        collect_activations(extractor, ImageFiles([bad]), lambda im: torch.zeros(3), trainer)
    with pytest.raises(ValueError, match="empty"):
        collect_activations(extractor, ImageFiles([]), lambda im: torch.zeros(3), trainer)


def test_ground_truth_on_a_layer_without_labels_is_an_error(compose, smoke, cache_dir,
                                                            tmp_path):
    cfg = compose(smoke(cache_dir, "layer=avgpool", "explainer=ground_truth"))
    with pytest.raises(ValueError) as err:
        run(cfg, tmp_path)
    msg = str(err.value)
    assert "ground_truth" in msg and "'avgpool'" in msg and "resnet18" in msg
    assert "'output'" in msg  # where ground truth exists


def test_check_finite_names_the_neurons():
    acts = torch.zeros(5, 3)
    check_finite("control", acts, [7, 42, 99])  # all finite: no error
    acts[2, 1] = float("nan")
    acts[0, 2] = float("inf")
    with pytest.raises(ValueError) as err:
        check_finite("control", acts, [7, 42, 99])
    msg = str(err.value)
    assert "control" in msg and "[42, 99]" in msg and "7" not in msg


def test_nan_activations_stop_the_run_naming_the_neuron(first_run, compose, smoke, cache_dir,
                                                        tmp_path, monkeypatch):
    from cosy_bench import context

    original = context.collect_activations

    def nan_in_neuron_654(*args, **kwargs):
        acts, index = original(*args, **kwargs)
        acts = acts.clone()
        acts[3, 654] = float("nan")
        return acts, index

    monkeypatch.setattr(context, "collect_activations", nan_in_neuron_654)  # control
    # a control set of its own, so that its activations are computed (not read from cache)
    cfg = compose(smoke(cache_dir, *GT_OUTPUT, "neurons.ids=[89,654]", "dataset.n=12"))
    with pytest.raises(ValueError) as err:
        run(cfg, tmp_path)
    assert "654" in str(err.value) and "89" not in str(err.value)
    assert "NaN" in str(err.value)


# -------------------------------------------------------------------------- cache


def test_atomic_path_leaves_nothing_behind_on_error(tmp_path):
    target = tmp_path / "kind" / "key.bin"
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_path(target) as tmp:
            assert tmp.parent == target.parent and tmp != target
            tmp.write_bytes(b"half written")
            raise RuntimeError("interrupted")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # no temporary file either


def test_atomic_path_keeps_the_old_file_when_interrupted(tmp_path):
    target = tmp_path / "key.txt"
    write_text_atomic(target, "complete")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert target.read_text() == "complete"
    assert [p.name for p in tmp_path.iterdir()] == ["key.txt"]


def test_failed_tensor_save_leaves_no_file(tmp_path):
    target = tmp_path / "acts.safetensors"
    with pytest.raises(Exception):  # noqa: B017 - whatever safetensors raises
        save_tensors_atomic(target, {"a": torch.zeros(2), "b": "not a tensor"})  # type: ignore[dict-item]
    assert list(tmp_path.iterdir()) == []
    save_tensors_atomic(target, {"a": torch.arange(3.0)})
    loaded = Cache(tmp_path).load_tensors(target)
    assert torch.equal(loaded["a"], torch.arange(3.0))
    assert Cache(tmp_path).load_tensors(tmp_path / "missing.safetensors") is None


def test_stable_hash():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})
    assert re.fullmatch(r"[0-9a-f]{16}", stable_hash("☕/\"x\"" * 100))


def test_explanation_texts_never_become_paths(tmp_path):
    cache = Cache(tmp_path)
    gen = TinyDiffusersGenerator()  # no weights are loaded by work_items
    items = work_items(cache, gen, "realistic photo of a close up of", list(WEIRD_TEXTS.values()),
                       n_images=2)
    assert list(items) == list(WEIRD_TEXTS.values())
    folders = set()
    for concept, its in items.items():
        assert [it.index for it in its] == [0, 1]
        assert its[0].prompt == f"realistic photo of a close up of {concept}"
        for it in its:
            rel = Path(it.path).relative_to(tmp_path)
            assert len(rel.parts) == 4 and rel.parts[0] == "images"
            assert all(len(p) <= 32 and p.isascii() for p in rel.parts)
            folders.add(Path(it.path).parent)
    assert len(folders) == 3  # one folder per prompt


def test_explanations_csv_round_trips_any_text():
    texts = {**WEIRD_TEXTS, 7: 'line one\nline "two", with comma'}
    expl = Explanations(texts, extra={"metric": {3: "0.9", 7: "0.1"}})
    back = Explanations.from_csv(expl.to_csv())
    assert back.texts == texts
    assert back.extra["metric"][3] == "0.9" and back.extra["metric"][141] == ""
    assert list(csv.reader(io.StringIO(expl.to_csv())))[0] == ["neuron", "explanation",
                                                                "metric"]
