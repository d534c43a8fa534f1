"""W&B as a newcomer meets it (issue #23, item 6): ``WANDB_MODE=offline`` does not switch
logging on by itself and the run says at start what it does; the leaderboard's ``n`` is an
integer; W&B's "Only 108 Image will be uploaded." never shows (the list is capped)."""

from __future__ import annotations

import logging

from helpers import record_by_hand
from test_loggers import _finished_records, _wandb_summary, wandb_offline  # noqa: F401 - a fixture

from cosy_bench.loggers import NoLogger, WandbLogger, _value, auto_logger


def test_auto_logger_says_what_it_does(monkeypatch, caplog):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    with caplog.at_level(logging.INFO, logger="cosy_bench"):
        assert isinstance(auto_logger(), NoLogger)
    assert "W&B logging off: WANDB_MODE=offline is set" in caplog.text
    assert "logger=wandb logs this run offline" in caplog.text
    caplog.clear()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    with caplog.at_level(logging.INFO, logger="cosy_bench"):
        assert isinstance(auto_logger(), WandbLogger)
    assert "W&B logging on: logger=auto and WANDB_API_KEY is set" in caplog.text


def test_leaderboard_counts_are_integers():
    assert _value("25") == 25 and type(_value("25")) is int
    assert type(_value("0.97")) is float and _value("") is None and _value("toy_cnn") == "toy_cnn"


def test_more_images_than_wandb_keeps_warn_nowhere(tmp_path, wandb_offline, caplog):  # noqa: F811
    import wandb

    record = record_by_hand(tmp_path, n_images=60)  # 2 concepts x 60 images > 108
    out = tmp_path / "run"
    out.mkdir()
    with caplog.at_level(logging.WARNING):
        WandbLogger(mode="offline", images_per_concept=60).log_run(record.cfg, record, out)
    assert "will be uploaded" not in caplog.text
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    _finished_records(run_dir)
    summary = _wandb_summary(run_dir)
    assert summary["images/_type"] == "images/separated"
    assert summary["images/count"] == wandb.Image.MAX_ITEMS  # the first 108 of 120
