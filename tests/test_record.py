"""Reporting: the summary table, the leaderboard, W&B offline logging, and the acceptance
sweep (4 runs, then the leaderboard prints 4 rows)."""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CONF, HAS_TOY_MODEL
from PIL import Image

from cosy_bench.explainers.base import Explanations
from cosy_bench.leaderboard import collect, format_table
from cosy_bench.leaderboard import main as leaderboard_main
from cosy_bench.loggers import NoLogger, WandbLogger, auto_logger
from cosy_bench.loops.synthesis import WorkItem
from cosy_bench.record import RunRecord, names_concept, summarize

# ------------------------------------------------------------------------- summaries


def test_summarize_mean_std_n():
    stat = summarize(torch.tensor([0.5, 1.0, 0.0]))
    assert stat["n"] == 3
    assert stat["mean"] == pytest.approx(0.5)
    assert stat["std"] == pytest.approx(np.std([0.5, 1.0, 0.0]))  # ddof 0, as README says
    # non-finite values are left out of the statistics (and not counted)
    stat = summarize(torch.tensor([1.0, float("nan"), 3.0]))
    assert stat == {"mean": 2.0, "std": 1.0, "n": 2}
    assert summarize(torch.tensor([])) == {"mean": None, "std": None, "n": 0}


def test_names_concept():
    assert names_concept("Red Circles", "red circle")
    assert names_concept("striped red circle", "red circle")
    assert not names_concept("red square", "red circle")
    assert not names_concept("anything", "")


def _report(compose, tmp_path: Path, n_images: int = 2) -> RunRecord:
    """A report built by hand: 3 neurons of resnet18's logits, two concepts with images."""
    cfg = compose(["model=resnet18", "debug=smoke", "layer=output", "explainer=ground_truth",
                   f"paths.cache_dir={tmp_path / 'cache'}"])
    items = {}
    for c, concept in enumerate(["tench", "goldfish"]):
        its = []
        for i in range(n_images):
            path = tmp_path / "images" / f"{c}_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (16, 16), (40 * c, 20 * i, 90)).save(path)
            its.append(WorkItem(concept, f"a {concept}", i, 1000 * c + i, str(path)))
        items[concept] = its
    scores = {"auc": torch.tensor([0.9, 0.7, 0.2], dtype=torch.float64),
              "mad": torch.tensor([2.0, 1.0, -0.5], dtype=torch.float64)}
    expl = Explanations({0: "tench", 1: "goldfish", 2: "goldfish"})
    truth = ["tench", "goldfish", "great white shark"]
    stats = {"images_generated": 4, "control_activations_computed": True, "control_skipped": 0}
    return RunRecord.build(cfg, [0, 1, 2], ["tench", "goldfish", "goldfish"], scores, expl, truth,
                        stats, n_control=16, items=items)


def test_report_writes_its_files_and_prints_the_table(compose, tmp_path, capsys):
    report = _report(compose, tmp_path)
    out = tmp_path / "run"
    report.write(out)
    printed = capsys.readouterr().out
    assert "CoSy results: resnet18 / output / ground_truth" in printed
    assert "0.6000 ±" in printed  # auc mean
    summary = json.loads((out / "summary.json").read_text())
    assert summary["auc"]["mean"] == pytest.approx(0.6)
    assert summary["mad"]["n"] == 3
    assert summary["ground_truth_match"] == pytest.approx(2 / 3)
    assert summary["run"]["n_control"] == 16 and summary["run"]["images_generated"] == 4
    lines = (out / "results.csv").read_text().splitlines()
    assert lines[0] == "neuron,explanation,ground_truth,auc,mad"
    assert lines[3].startswith("2,goldfish,great white shark,0.2")


# ----------------------------------------------------------------------- leaderboard


def _summary(model, layer, method, auc, mad=None, gt=None) -> dict:
    out = {"auc": {"mean": auc[0], "std": auc[1], "n": 50},
           "run": {"model": model, "layer": layer, "explainer": method, "generator": "sdxl",
                   "prompt": "p5", "n_neurons": 50}}
    if mad is not None:
        out["mad"] = {"mean": mad[0], "std": mad[1], "n": 50}
    if gt is not None:
        out["ground_truth_match"] = gt
    return out


@pytest.fixture
def runs_dir(tmp_path) -> Path:
    summaries = {
        "sweep/0_a": _summary("resnet18", "avgpool", "milan", (0.61, 0.23), (0.69, 1.35)),
        "sweep/1_b": _summary("resnet18", "avgpool", "clip_dissect", (0.93, 0.11),
                              (3.85, 1.88)),
        "sweep/2_c/nested": _summary("resnet18", "avgpool", "invert", (0.934, 0.106),
                                     (3.2349, 1.72)),
        "other/3": _summary("alexnet", "fc", "invert", (0.5, 0.0), gt=1.0),
    }
    for sub, summary in summaries.items():
        (tmp_path / sub).mkdir(parents=True)
        (tmp_path / sub / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "sweep" / "multirun.yaml").write_text("noise: 1\n")
    return tmp_path


def test_leaderboard_collects_every_summary(runs_dir):
    rows = collect(runs_dir)
    assert len(rows) == 4
    assert {r["method"] for r in rows} == {"milan", "clip_dissect", "invert"}
    row = next(r for r in rows if r["method"] == "clip_dissect")
    assert row["auc"] == (0.93, 0.11) and row["mad"] == (3.85, 1.88)
    assert row["model"] == "resnet18" and row["layer"] == "avgpool" and row["n"] == 50
    assert len(collect(runs_dir / "sweep")) == 3


def test_leaderboard_table_is_the_papers(runs_dir):
    table = format_table(collect(runs_dir)).splitlines()
    assert len(table) == 2 + 4  # header, rule, one row per run
    header = table[0].split()
    assert header[:6] == ["model", "layer", "method", "n", "AUC", "MAD"]
    assert set(table[1]) <= {"-", " "}
    body = table[2:]
    # sorted by model, layer, method
    assert [line.split()[0] for line in body] == ["alexnet", "resnet18", "resnet18", "resnet18"]
    assert [line.split()[2] for line in body] == ["invert", "clip_dissect", "invert", "milan"]
    invert = body[2]
    assert "0.93 ± 0.11" in invert and "3.23 ± 1.72" in invert
    assert "0.61 ± 0.23" in body[3] and "0.69 ± 1.35" in body[3]
    alexnet = body[0]
    assert "0.50 ± 0.00" in alexnet and " - " in alexnet + " "  # no MAD: a dash
    assert "gt_match" in header and alexnet.rstrip().endswith("1.00")
    # columns line up
    col = table[0].index("AUC")
    assert all(line[col].isdigit() for line in body)


def test_leaderboard_command(runs_dir, capsys, tmp_path):
    assert leaderboard_main([str(runs_dir / "sweep")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 + 3
    empty = tmp_path / "empty"
    empty.mkdir()
    assert leaderboard_main([str(empty)]) == 1
    assert "no summary.json" in capsys.readouterr().out


# ------------------------------------------------------------------------------ W&B


def _wandb_records(run_dir: Path) -> list:
    """Records of an offline run's ``.wandb`` transaction log (LevelDB log format, as the
    W&B SDK writes it: 7-byte file header, 32 KiB blocks, chunked records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (log,) = run_dir.glob("*.wandb")
    data = log.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, buf, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:  # zero padding to the end of the block
            pos += left
            continue
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk
            record = pb.Record()
            record.ParseFromString(buf)
            records.append(record)
            buf = b""
    return records


def _finished_records(run_dir: Path, timeout: float = 60.0) -> list:
    """The records once the run's ``exit`` record is on disk (the W&B service may still be
    writing the log for a moment after ``run.finish()`` returns)."""
    deadline = time.monotonic() + timeout
    while True:
        records = _wandb_records(run_dir)
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        if time.monotonic() > deadline:
            raise AssertionError(f"the offline run in {run_dir} never finished its log")
        time.sleep(0.5)


def _wandb_summary(run_dir: Path) -> dict:
    """The run's summary: ``files/wandb-summary.json`` where the SDK writes one (online, or
    after `wandb sync`), else the summary updates of its transaction log, nested keys joined
    with ``/``."""
    summary_file = run_dir / "files" / "wandb-summary.json"
    if summary_file.exists():
        def flat(node, prefix=""):
            for key, value in node.items():
                if isinstance(value, dict):
                    yield from flat(value, f"{prefix}{key}/")
                else:
                    yield f"{prefix}{key}", value

        return dict(flat(json.loads(summary_file.read_text())))
    summary = {}
    for record in _finished_records(run_dir):
        if record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                key = item.key or "/".join(item.nested_key)
                summary[key] = json.loads(item.value_json)
    return summary


@pytest.fixture
def wandb_offline(monkeypatch, tmp_path):
    """W&B without network, writing nothing outside ``tmp_path``."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for var in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home" / var.lower()))


def test_wandb_offline_run_carries_the_summary_metrics(compose, tmp_path, wandb_offline):
    from hydra.utils import instantiate

    report = _report(compose, tmp_path, n_images=3)
    cfg = compose(["model=resnet18", "debug=smoke", "logger=wandb", "logger.mode=offline",
                   "logger.images_per_concept=2"])
    logger = instantiate(cfg.logger)
    assert isinstance(logger, WandbLogger) and logger.mode == "offline"
    out = tmp_path / "run"
    out.mkdir()
    logger.log_run(report.cfg, report, out, group="sweep-2025")

    (run_dir,) = (out / "wandb").glob("offline-run-*")
    summary = _wandb_summary(run_dir)
    for scorer in ("auc", "mad"):
        for stat in ("mean", "std", "n"):
            assert summary[f"{scorer}/{stat}"] == pytest.approx(report.summary[scorer][stat])
    assert summary["auc/mean"] == pytest.approx(0.6)
    assert summary["ground_truth_match"] == pytest.approx(2 / 3)
    assert summary["neurons/_type"] == "table-file"  # the per-neuron table
    # the run's config and group
    records = _finished_records(run_dir)
    (run_record,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run_record.run_group == "sweep-2025"
    config = {item.key: json.loads(item.value_json) for item in run_record.config.update}
    assert config["model"]["name"] == "resnet18"
    assert config["explainer_name"] == "ground_truth"
    # a few generated images per concept: 2 of the 3 of each of the 2 concepts
    images = list((run_dir / "files" / "media" / "images").rglob("*.png"))
    assert len(images) == 4
    assert list((run_dir / "files" / "media" / "table").rglob("*.table.json"))


def test_auto_logger(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert isinstance(auto_logger(project="p"), NoLogger)
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert isinstance(auto_logger(project="p"), WandbLogger)
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert isinstance(auto_logger(project="p"), WandbLogger)
    assert NoLogger().log_run(None, None, Path(".")) is None


# ------------------------------------------------------------------- acceptance sweep


def _stub_default_model(tmp_path: Path) -> list[str]:
    """A multirun composes the default config first: until the toy world's model config
    exists, add a stand-in `model/toy_cnn` on an extra config dir (never used by the jobs)."""
    if HAS_TOY_MODEL:
        return []
    extra = tmp_path / "extra_conf"
    (extra / "model").mkdir(parents=True)
    (extra / "model" / "toy_cnn.yaml").write_text((CONF / "model" / "resnet18.yaml").read_text())
    return ["--config-dir", str(extra)]


@pytest.mark.slow
def test_acceptance_sweep_and_leaderboard(tmp_path):
    """`python -m cosy_bench -m explainer=random,ground_truth model=resnet18,vit_b16
    layer=output debug=smoke` leaves 4 run folders with results.csv and summary.json, and
    the leaderboard prints 4 rows."""
    sweep = tmp_path / "sweep"
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "1"}
    env.pop("WANDB_API_KEY", None)
    cmd = [sys.executable, "-m", "cosy_bench", "-m", "explainer=random,ground_truth",
           "model=resnet18,vit_b16", "layer=output", "debug=smoke",
           f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}",
           *_stub_default_model(tmp_path)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "CoSy results" in proc.stdout  # each run prints its summary table

    summaries = sorted(sweep.rglob("summary.json"))
    assert len(summaries) == 4
    seen = set()
    for path in summaries:
        run_dir = path.parent
        assert (run_dir / "results.csv").exists() and (run_dir / "config.yaml").exists()
        summary = json.loads(path.read_text())
        meta = summary["run"]
        seen.add((meta["model"], meta["explainer"]))
        assert meta["layer"] == "output" and meta["n_neurons"] == 3
        assert summary["auc"]["n"] == 3 and math.isfinite(summary["auc"]["mean"])
        if meta["explainer"] == "ground_truth":
            assert summary["ground_truth_match"] == 1.0
    assert seen == {(m, e) for m in ("resnet18", "vit_b16") for e in ("random", "ground_truth")}

    board = subprocess.run([sys.executable, "-m", "cosy_bench.leaderboard", str(sweep)],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert board.returncode == 0, board.stderr
    lines = board.stdout.strip().splitlines()
    assert len(lines) == 2 + 4
    body = [line.split() for line in lines[2:]]
    assert sorted((b[0], b[2]) for b in body) == sorted(seen)
    assert all(b[1] == "output" for b in body)


def test_sweep_run_folder_names_hold_no_path_separator(tmp_path):
    """The sweep subdir is ``N_<override_dirname>``: it must be one folder name."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    overrides = ["explainer=random", "model=resnet18", "layer=output", "debug=smoke",
                 f"paths.cache_dir={tmp_path / 'cache'}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose("config", overrides=overrides, return_hydra_config=True)
    name = cfg.hydra.job.override_dirname
    assert "model=resnet18" in name and "debug" not in name
    assert os.sep not in name and "/" not in name, name
