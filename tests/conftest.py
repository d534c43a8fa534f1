"""Shared fixtures: Hydra composition (lightning-hydra-template style), offline model
building, small end-to-end settings. The functions behind them, and the other helpers the
tests import, are in ``helpers.py``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from helpers import compose_config, no_network, smoke_overrides
from omegaconf import DictConfig

# subprocesses (`python -m cosy_bench ...`) run this checkout, not another installed copy
_REPO = str(Path(__file__).resolve().parents[1])
os.environ["PYTHONPATH"] = os.pathsep.join(
    [_REPO, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])


@pytest.fixture(scope="session")
def compose() -> Callable[[Sequence[str]], DictConfig]:
    """``compose(["model=resnet18", "debug=smoke"])`` -> the run's config."""
    return compose_config


@pytest.fixture(scope="session")
def toy_cache(tmp_path_factory) -> Path:
    """One cache for the toy-world runs of several test files (control activations and
    synthetic images are keyed by content, so sharing them changes no result); tests of the
    cache itself use caches of their own."""
    return tmp_path_factory.mktemp("toy-cache")


@pytest.fixture(scope="session")
def smoke() -> Callable[..., list[str]]:
    return smoke_overrides


@pytest.fixture(scope="session")
def model_bundle() -> Callable[..., object]:
    """``model_bundle("resnet18")``: the model with random weights, built once per session
    with the network blocked. Extra overrides make separate entries (generic models)."""
    from cosy_bench.models import create_model

    built: dict[tuple, object] = {}

    def get(model: str, *extra: str):
        key = (model, *extra)
        if key not in built:
            cfg = compose_config([f"model={model}", "model.weights=null", *extra])
            with no_network():
                built[key] = create_model(cfg.model, seed=0)
        return built[key]

    return get
