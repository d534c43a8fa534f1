"""``launch/gpu_check.sh --dry-run``: every step of the GPU check runs on the CPU at tiny
sizes and the script prints its table (issue #19)."""

from __future__ import annotations

import os
import subprocess

import pytest
from helpers import REPO

SCRIPT = REPO / "launch" / "gpu_check.sh"


def test_gpu_check_help_and_bad_arguments():
    out = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--dry-run" in out.stdout
    bad = subprocess.run(["bash", str(SCRIPT), "--fast"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown argument --fast" in bad.stderr


@pytest.mark.slow
def test_gpu_check_dry_run_prints_one_table_of_passing_steps(tmp_path):
    # every explainer of the headline sweep runs on the real path in test_real_formats.py:
    # here the script's sweep command (sizes, trainer, overrides) composes and runs, with
    # INVERT over both models
    env = {**os.environ, "OUT": str(tmp_path / "out"), "GPU_CHECK_DRY": "1",
           "GPU_CHECK_EXPLAINERS": "invert"}
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env,
                          timeout=1500)
    table = (tmp_path / "out" / "table.tsv").read_text().splitlines()
    steps = [line.split("\t")[0] for line in table[1:]]
    assert steps == ["install", "sweep", "synthesis_sdxl", "synthesis_cascade",
                     "activations_gpu_decode"]
    assert proc.returncode == 0, proc.stdout + "".join(
        (tmp_path / "out" / f"{s}.log").read_text()[-2000:] for s in steps)
    assert "dry run, CPU" in proc.stdout and all("\tok" in line for line in table[1:])
    assert len(list((tmp_path / "out" / "sweep").glob("*/summary.json"))) == 2
