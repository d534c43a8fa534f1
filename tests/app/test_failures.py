"""Failed runs leave a trace (issue #13, item 4): every job's folder holds its error
(error.txt, the traceback in run.log), the sweep runs the other jobs and ends with the list
of the failed ones."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
from helpers import REPO

from cosy_bench.app.failures import ERROR_FILE, UserInputError, record_failure


def _raise(exc: Exception) -> Exception:
    try:
        raise exc
    except Exception as caught:
        return caught


@pytest.mark.parametrize("exc", [ValueError("neurons.ids [9] out of range"),
                                 UserInputError("set dataset.root")])
def test_record_failure_writes_error_txt_and_the_log_file(tmp_path, exc):
    log_file = tmp_path / "run.log"
    handler = logging.FileHandler(log_file)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        path = record_failure(tmp_path, _raise(exc))
    finally:
        root.removeHandler(handler)
        handler.close()
    assert path == tmp_path / ERROR_FILE
    text = path.read_text()
    assert text.startswith(f"{type(exc).__name__}: {exc}\n") and "Traceback" in text
    logged = log_file.read_text()
    assert str(exc) in logged and "Traceback" in logged and "_raise" in logged


@pytest.mark.slow
def test_a_sweep_runs_every_job_and_lists_the_failed_ones(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled",
           "COSY_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "cosy_bench", "-m", "model=resnet18", "debug=smoke",
         "layer=output", "explainer=ground_truth,precomputed", "neurons.ids=[0,1],[0,5000]",
         "report.write=true"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1
    jobs = {p.name.split("_")[0]: p for p in tmp_path.glob("multirun/*/*/[0-9]*") if p.is_dir()}
    assert sorted(jobs) == ["0", "1", "2", "3"]
    assert (jobs["0"] / "results.csv").exists() and not (jobs["0"] / ERROR_FILE).exists()
    for num in "123":
        assert (jobs[num] / ERROR_FILE).exists(), num
    # out-of-range ids are found by the input check, before any model is built (#23.2)
    input_error = (jobs["1"] / "run.log").read_text()
    bad_ids = "neurons.ids [5000]: layer 'output' of 'resnet18' has 1000 neurons (0..999)"
    assert "Traceback" in input_error and bad_ids in input_error
    assert "model resnet18, layer" not in input_error
    assert "explainer.path is not set" in (jobs["2"] / ERROR_FILE).read_text()
    report = proc.stderr[proc.stderr.index("3 of 4 jobs failed:"):]
    assert "job 1 (" in report and "MissingInputsError: 1 input(s)" in report
    assert report.count("explainer.path is not set") == 2 and "job 0 (" not in report
    # each message once on the console: in the list of failed jobs, not also per job
    console = proc.stdout + proc.stderr  # Hydra's log lines go to stdout
    assert console.count(bad_ids) == 2 and "Traceback" not in console  # jobs 1 and 3
    assert proc.stdout.count("failed (listed at the end)") == 3
    # the closing summary (the table of the job that ran, the report) precedes the list
    summary = proc.stdout[proc.stdout.index("sweep finished: 1 run(s) with results"):]
    assert "3 job(s) failed: the list follows" in summary and "report: " in summary
    # the sweep's report callback still runs: it lists the failed jobs too
    (index,) = tmp_path.glob("multirun/*/*/report/index.html")
    assert "failed" in index.read_text()
