"""The typed config (cosy_bench/schema.py): bad values fail before any work, naming the key
and what is allowed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cosy_bench.schema import ConfigError, problems, validate

REPO = Path(__file__).resolve().parent.parent

BAD = {
    "n_images=abc": ("n_images", "an integer >= 1 or 'auto'"),
    "n_images=0": ("n_images", "an integer >= 1"),
    "n_images=-3": ("n_images", "an integer >= 1"),
    "neurons.ids=[]": ("neurons.ids", "a non-empty list of integers >= 0 or null"),
    "neurons.ids=[1,-2]": ("neurons.ids", "a non-empty list of integers >= 0 or null"),
    "neurons.sample=-1": ("neurons.sample", "an integer >= 1 or null"),
    "batch_size=0": ("batch_size", "an integer >= 1"),
    "generator_batch_size=0": ("generator_batch_size", "an integer >= 1"),
    "num_workers=-1": ("num_workers", "an integer >= 0"),
    "dataset.n=1": ("dataset.n", "an integer >= 2"),
}


@pytest.mark.parametrize("override", sorted(BAD))
def test_bad_values_name_the_key_and_the_allowed_values(compose, override):
    key, allowed = BAD[override]
    cfg = compose(["debug=smoke", "model=resnet18", override])
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert f"{key}=" in str(err.value) and allowed in str(err.value)
    assert len(problems(cfg)) == 1


@pytest.mark.parametrize("overrides", [[], ["debug=smoke", "model=resnet18"],
                                       ["scorer=[auc,mad,utest]", "neurons.ids=[0,3]"],
                                       ["neurons=cosy"], ["experiment=sanity"],
                                       ["n_images=auto", "num_workers=auto"]])
def test_shipped_configs_are_valid(compose, overrides):
    assert validate(compose(overrides)) is not None


def test_an_empty_scorer_list_is_named(compose):
    cfg = compose(["scorer=[auc,mad]"])
    cfg.scorer = []
    with pytest.raises(ConfigError, match=r"scorer=\[\]: expected a non-empty list of names"):
        validate(cfg)


def test_the_app_fails_before_any_work(tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "-m", "cosy_bench", "n_images=abc",
                           "neurons.sample=-1", f"paths.cache_dir={cache}",
                           f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "n_images='abc'" in proc.stderr and "neurons.sample=-1" in proc.stderr
    assert not cache.exists()  # nothing was computed, not even the cache folder made
