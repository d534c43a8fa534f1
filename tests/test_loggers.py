"""cosy_bench.loggers: W&B offline runs read back from what the SDK wrote (the run's files
and its transaction log), not mocked."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import record_by_hand
from PIL import Image

from cosy_bench.loggers import NoLogger, WandbLogger, auto_logger

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

    report = record_by_hand(tmp_path, n_images=3)
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
    # flat keys the runs table groups and filters by; the whole config under "cfg"
    assert {k: config[k] for k in ("model", "layer", "explainer", "generator", "prompt",
                                   "weights", "dataset")} == {
        "model": "resnet18", "layer": "output", "explainer": "ground_truth",
        "generator": "tiny", "prompt": "p5", "weights": "random", "dataset": "synthetic"}
    assert config["cfg"]["model"]["name"] == "resnet18"
    assert config["cfg"]["explainer_name"] == "ground_truth"
    # the summary's intervals and the run block
    assert summary["auc/ci_low"] == pytest.approx(report.summary["auc"]["ci_low"])
    assert summary["run/n_control"] == 16 and summary["run/images_generated"] == 4
    assert summary["run/control_skipped"] == 0 and summary["run/n_neurons"] == 3
    assert summary["auc/histogram/_type"] == "histogram"
    assert sum(summary["auc/histogram/values"]) == 3
    # a few generated images per concept: 2 of the 3 of each of the 2 concepts
    images = list((run_dir / "files" / "media" / "images").rglob("*.png"))
    assert len(images) == 4
    assert list((run_dir / "files" / "media" / "table").rglob("*.table.json"))
    # the per-neuron table has image columns: its artifact holds the table and the images
    (table,) = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"
                and r.artifact.type == "run_table"]
    entries = {e.path: e.local_path for e in table.manifest.contents}
    written = json.loads(Path(entries["neurons.table.json"]).read_text())
    assert written["columns"][-2:] == ["synthetic", "top_control"]
    for row in written["data"]:
        for cell in row[-2:]:
            assert cell["_type"] == "image-file" and cell["path"] in entries
            with Image.open(entries[cell["path"]]) as im:  # an image, not the string "Image"
                assert im.format == "PNG" and im.size == (cell["width"], cell["height"])
    assert [row[0] for row in written["data"]] == [0, 1, 2]


def _logged_table(run_dir: Path) -> dict:
    (path,) = (run_dir / "files" / "media" / "table").rglob("neurons*.table.json")
    return json.loads(path.read_text())


def test_explainer_columns_reach_wandb_with_one_type(tmp_path, wandb_offline):
    """Explanations read back from the explanation cache (a csv) gave string columns, fresh
    ones floats: the same W&B column changed type from run to run."""
    from helpers import compose_config

    from cosy_bench.explainers.base import Explanations
    from cosy_bench.record import RunRecord, RunResult

    cfg = compose_config(["model=resnet18", "debug=smoke", "layer=output"])
    fresh = Explanations({0: "tench", 1: "goldfish"}, {"invert_auc": {0: 0.93, 1: 0.5}})
    scores = {"auc": torch.tensor([0.6, 0.7], dtype=torch.float64)}
    values = []
    for i, expl in enumerate((fresh, Explanations.from_csv(fresh.to_csv()))):
        record = RunRecord.build(RunResult(cfg, [0, 1], ["tench", "goldfish"], scores, expl,
                                           None, {}, 4))
        out = tmp_path / f"run{i}"
        out.mkdir()
        WandbLogger(mode="offline").log_run(cfg, record, out)
        (run_dir,) = (out / "wandb").glob("offline-run-*")
        _finished_records(run_dir)
        table = _logged_table(run_dir)
        values.append(table["data"][0][table["columns"].index("invert_auc")])
    assert values == [0.93, 0.93] and all(type(v) is float for v in values)


def test_sweep_group_holds_the_date():
    from cosy_bench.loggers import sweep_group

    assert sweep_group("multirun/2025-01-31/12-00-00") == "2025-01-31_12-00-00"
    assert sweep_group("multirun/2025-02-01/12-00-00") != sweep_group(
        "multirun/2025-01-31/12-00-00")


@pytest.mark.slow
def test_wandb_sweep_logs_dated_groups_resolved_layers_quietly_and_a_summary_run(tmp_path):
    """A one-job ``-m`` sweep with W&B offline and ``report.wandb=true``: the run's group is
    the sweep's date and time, its config names the resolved layer (the model's default,
    not null), W&B prints no banner, and a summary run with the leaderboard table joins the
    same group; the sweep's report is written."""
    sweep = tmp_path / "multirun" / "2025-01-31" / "12-00-00"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="offline", HYDRA_FULL_ERROR="1",
               **{v: str(tmp_path / "wandb_home" / v.lower()) for v in
                  ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR")})
    cmd = [sys.executable, "-m", "cosy_bench", "-m", "explainer=random", "model=resnet18",
           "debug=smoke", "logger=wandb", "report.wandb=true", f"hydra.sweep.dir={sweep}",
           f"paths.cache_dir={tmp_path / 'cache'}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    banner = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("wandb:")]
    assert banner == []
    assert (sweep / "report" / "index.html").exists()

    (job,) = [p.parent for p in sweep.glob("*/summary.json")]
    (run_dir,) = (job / "wandb").glob("offline-run-*")
    records = _finished_records(run_dir)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.run_group == "2025-01-31_12-00-00"
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["layer"] == "avgpool" and config["cfg"]["layer"]["name"] is None
    summary = _wandb_summary(run_dir)
    assert summary["run/n_control"] == 16 and summary["run/images_generated"] == 6
    # the sweep's own run: its summary metrics and its per-neuron table with image columns
    result = json.loads((job / "summary.json").read_text())
    assert summary["auc/mean"] == pytest.approx(result["auc"]["mean"])
    assert summary["mad/mean"] == pytest.approx(result["mad"]["mean"])
    (table,) = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"
                and r.artifact.type == "run_table"]
    entries = {e.path: e.local_path for e in table.manifest.contents}
    written = json.loads(Path(entries["neurons.table.json"]).read_text())
    assert written["columns"][-2:] == ["synthetic", "top_control"]
    assert written["data"] and all(row[-2]["_type"] == "image-file" for row in written["data"])

    (summary_dir,) = (sweep / "report" / "wandb").glob("offline-run-*")
    records = _finished_records(summary_dir)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.run_group == "2025-01-31_12-00-00" and run.job_type == "report"
    board = _wandb_summary(summary_dir)
    assert board["leaderboard/_type"] == "table-file" and board["leaderboard/nrows"] == 1


def test_auto_logger(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert isinstance(auto_logger(project="p"), NoLogger)
    monkeypatch.setenv("WANDB_MODE", "offline")  # a mode, not a choice to log (#23.6)
    assert isinstance(auto_logger(project="p"), NoLogger)
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert isinstance(auto_logger(project="p"), WandbLogger)
    assert NoLogger().log_run(None, None, Path(".")) is None




def test_units_block_reaches_wandb(compose, tmp_path, wandb_offline):
    """units=sae: the truth rule's figures and the dictionary's R^2 are in the W&B summary."""
    from hydra.utils import instantiate

    report = record_by_hand(tmp_path, n_images=2)
    report.summary["units"] = {"kind": "sae", "monosemantic_fraction": 0.75, "n_with_truth": 4,
                               "ground_truth_match": None, "sae": {"r2": 0.9, "l0": 8.0}}
    cfg = compose(["model=resnet18", "debug=smoke", "logger=wandb", "logger.mode=offline"])
    out = tmp_path / "run"
    out.mkdir()
    instantiate(cfg.logger).log_run(report.cfg, report, out, group="g")
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    summary = _wandb_summary(run_dir)
    assert summary["units/kind"] == "sae" and summary["units/monosemantic_fraction"] == 0.75
    assert summary["units/sae/r2"] == 0.9 and "units/ground_truth_match" not in summary
