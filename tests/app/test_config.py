"""The configs are found from the package, and ``--help`` describes the tool (issue #13)."""

from __future__ import annotations

import subprocess
import sys

from helpers import REPO

from cosy_bench.app.config import config_dir


def test_a_checkout_uses_its_conf_folder():
    assert config_dir() == REPO / "conf"
    assert (config_dir() / "world" / "imagenet.yaml").is_file()


def test_help_describes_the_tool_and_its_groups(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cosy_bench", "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("cosy-bench: a benchmark suite for textual explanations of neurons")
    assert "Most useful commands:" in out and "debug=smoke" in out
    assert 'eval "$(cosy-bench -sc install=bash)"' in out
    assert "== Configuration groups ==" in out and "world: imagenet, places365, toyworld" in out
    assert "powered by Hydra" not in out  # not the stock header
