"""A real install: the wheel ships the configs and the Hydra plugin, and ``cosy-bench`` runs
from a directory outside the checkout (issue #13, item 1).

The wheel is built offline (``--no-build-isolation``) and installed with ``--no-deps`` into a
fresh venv whose ``.pth`` line puts this environment's site-packages on its path (so torch is
not downloaded again). A path line of a ``.pth`` does not run that folder's own ``.pth``
files, so the editable install of this checkout is not seen: cosy_bench comes from the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from helpers import REPO

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 600):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv bin folder, environment, a working folder outside the checkout)."""
    tmp = tmp_path_factory.mktemp("install")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(COSY_CACHE_DIR=str(tmp / "cache"), WANDB_MODE="disabled",
               PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    # a clean copy: setuptools would reuse an old build/ folder of the checkout
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "outputs", "multirun", "wandb", "__pycache__",
        ".*cache"))
    dist = tmp / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "-w", str(dist), str(src)], cwd=tmp, env=env)
    wheel = next(dist.glob("cosy_bench-*.whl"))
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp, env=env)
    bin_dir = venv / "bin"
    purelib = _run([str(bin_dir / "python"), "-c",
                    "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   cwd=tmp, env=env).stdout.strip()
    # the dependencies come from this interpreter's site folders (a venv made with
    # --system-site-packages has two); the wheel in the new venv comes first on sys.path
    here = dict.fromkeys([sysconfig.get_paths()["purelib"],
                          *(p for p in sys.path if p.endswith(("site-packages", "dist-packages")))])
    Path(purelib, "_parent_env.pth").write_text("\n".join(here) + "\n", encoding="utf-8")
    _run([str(bin_dir / "python"), "-m", "pip", "install", "--no-deps", str(wheel)],
         cwd=tmp, env=env)
    work = tmp / "elsewhere"
    work.mkdir()
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return bin_dir, env, work


def test_the_wheel_holds_cosy_bench_from_the_wheel(installed):
    bin_dir, env, work = installed
    out = _run([str(bin_dir / "python"), "-c",
                "import cosy_bench, hydra_plugins.cosy_bench_plugins as p; "
                "from cosy_bench.app.config import config_dir; "
                "print(cosy_bench.__file__); print(config_dir()); print(p.__file__)"],
               cwd=work, env=env).stdout.split()
    venv = str(bin_dir.parent)
    assert all(line.startswith(venv) for line in out), out
    assert out[1].endswith(os.path.join("cosy_bench", "conf"))


def test_help_lists_the_groups_outside_the_checkout(installed):
    bin_dir, env, work = installed
    out = _run([str(bin_dir / "cosy-bench"), "--help"], cwd=work, env=env).stdout
    assert out.startswith("cosy-bench: a benchmark suite")
    for line in ("model: densenet161", "explainer: clip_dissect", "generator: diffusers",
                 "cosy-bench -sc install=bash"):
        assert line in out
    cfg = _run([str(bin_dir / "python"), "-m", "cosy_bench", "model=resnet18", "layer=stage9",
                "--cfg", "job"], cwd=work, env=env).stdout
    assert "name: stage9" in cfg  # the layer plugin is installed with the wheel


def test_a_toy_world_run_outside_the_checkout(installed):
    bin_dir, env, work = installed
    proc = _run([str(bin_dir / "cosy-bench"), "explainer=ground_truth", "n_images=2",
                 "dataset.n=64", "neurons.ids=[0,1]", "logger=none"], cwd=work, env=env)
    (results,) = work.glob("outputs/*/*/results.csv")
    lines = results.read_text().splitlines()
    assert lines[0].startswith("neuron,rank,explanation") and len(lines) == 3
    assert "auc" in proc.stdout
