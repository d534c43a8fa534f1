"""What a run says: third-party noise quietened (open_clip's INFO lines on the root logger,
Lightning's banners), the summary table in run.log, where the results are."""

from __future__ import annotations

import logging
import os

from cosy_bench.app.logs import announce_results, quiet


def _record(name: str, level: int, pathname: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, pathname, 1, "msg", None, None)


def test_quiet_drops_open_clip_info_and_lightning_banners():
    quiet()
    quiet()  # idempotent: one filter each
    root = logging.getLogger()
    assert len(root.filters) == len({type(f) for f in root.filters})
    clip_file = os.path.join("site-packages", "open_clip", "factory.py")
    assert not root.filter(_record("root", logging.INFO, clip_file))
    assert root.filter(_record("root", logging.WARNING, clip_file))
    assert root.filter(_record("root", logging.INFO, os.path.join("cosy_bench", "x.py")))
    banner = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    banner.setLevel(logging.INFO)  # a job's logging setup may reset the level
    assert not banner.filter(_record(banner.name, logging.INFO, "rank_zero.py"))
    assert banner.filter(_record(banner.name, logging.WARNING, "rank_zero.py"))


def test_the_summary_goes_to_run_log_and_the_last_line_says_where(tmp_path, capsys):
    log_file = tmp_path / "run.log"
    handler = logging.FileHandler(log_file)
    root = logging.getLogger()
    root.addHandler(handler)
    old = root.level
    root.setLevel(logging.INFO)
    try:
        announce_results("CoSy results: m / l / e\n  auc 0.9", tmp_path)
    finally:
        root.removeHandler(handler)
        root.setLevel(old)
        handler.close()
    text = log_file.read_text()
    assert "CoSy results: m / l / e\n  auc 0.9" in text
    assert text.rstrip().splitlines()[-1].endswith(
        f"results in {tmp_path.resolve()} (results.csv, summary.json, explanations.csv, "
        "config.yaml)")
