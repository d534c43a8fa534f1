"""cosy_bench.loggers: W&B offline runs read back from what the SDK wrote (the run's files
and its transaction log), not mocked."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest
from conftest import record_by_hand

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


