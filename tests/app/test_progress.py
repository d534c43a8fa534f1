"""Sweep progress (issue #23, item 1): job i of n, elapsed time and an ETA from the finished
jobs' pace; the closing summary holds the leaderboard, the failed jobs' count and the report
(its path, or the command that writes it)."""

from __future__ import annotations

import json
import logging

from cosy_bench.app.progress import SweepProgress, clock, closing_summary


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_clock_format():
    assert clock(0) == "0:00" and clock(75.3) == "1:15" and clock(3725) == "1:02:05"


def test_eta_from_the_finished_jobs(caplog):
    now = Clock()
    progress = SweepProgress(4, now=now)
    assert progress.eta() is None
    with caplog.at_level(logging.INFO, logger="cosy_bench"):
        progress.started(0, ["explainer=invert", "layer=conv3"])
        now.t += 30
        line = progress.done(0, failed=False, auc=0.97312)
        assert line == ("job 1/4 done in 0:30, mean AUC 0.9731 | 1/4 finished, elapsed 0:30, "
                        "ETA 1:30 for 3 more")
        progress.started(1, ["explainer=random"])
        now.t += 90  # slower: the ETA follows the mean pace, (30 + 90) / 2 per job
        line = progress.done(1, failed=True)
        assert line.startswith("job 2/4 failed (listed at the end) in 1:30 | 2/4 finished")
        assert line.endswith("elapsed 2:00, ETA 2:00 for 2 more")
        for num in (2, 3):
            progress.started(num, [])
            now.t += 10
            line = progress.done(num, failed=False, auc=None)
    assert line.endswith("4/4 finished, elapsed 2:20, all done")
    assert "job 1/4 started: explainer=invert layer=conv3" in caplog.text
    assert [r.levelname for r in caplog.records if "failed" in r.message] == ["WARNING"]


def _run(folder, method: str, auc: float):
    folder.mkdir(parents=True)
    summary = {"auc": {"mean": auc, "std": 0.01, "n": 3, "ci_low": auc - 0.02,
                       "ci_high": auc + 0.02},
               "run": {"model": "toy_cnn", "layer": "concepts", "explainer": method,
                       "generator": "toyworld", "prompt": "p5", "weights": "toy_cnn",
                       "dataset": "toyworld", "n_neurons": 3}}
    (folder / "summary.json").write_text(json.dumps(summary))


def test_closing_summary_has_the_table_the_failures_and_the_report(tmp_path):
    _run(tmp_path / "0_explainer=invert", "invert", 0.97)
    _run(tmp_path / "1_explainer=random", "random", 0.51)
    text = closing_summary(tmp_path, None, n_failed=2)
    lines = text.splitlines()
    assert lines[0] == f"sweep finished: 2 run(s) with results in {tmp_path.resolve()}"
    assert lines[2].split()[:5] == ["model", "layer", "method", "n", "AUC"]
    assert [ln.split()[2] for ln in lines[4:6]] == ["invert", "random"]
    assert "0.97 ± 0.01" in lines[4] and "2 job(s) failed: the list follows" in text
    assert lines[-1].startswith(f"report: python -m cosy_bench.report {tmp_path}")
    index = tmp_path / "report" / "index.html"
    assert closing_summary(tmp_path, index).splitlines()[-1] == f"report: {index.resolve()}"
