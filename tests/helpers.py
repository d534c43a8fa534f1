"""Helpers the tests import (``from helpers import compose_config``): config composition
as the Hydra app does it, offline model settings, two-rank runs, hand-made run records and
activations. The fixtures stay in ``conftest.py``.

Everything here works on a machine without network, GPU or the toy world: tests that need
the toy world live in its own files.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"

# The default config (model=toy_cnn, generator/dataset=toyworld) needs the toy world; the
# tests of these files name a real architecture with random weights instead.
HAS_TOY_MODEL = (CONF / "model" / "toy_cnn.yaml").exists()


def config_options(group: str) -> list[str]:
    """The options of a config group, from the yaml files of ``conf/<group>/``."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def config_groups() -> list[str]:
    """Every config group under ``conf/`` except Hydra's own ``hydra`` group."""
    return sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra")


def _pin_hydra_interpolations(cfg: DictConfig) -> None:
    """Replace every ``${hydra:...}`` interpolation by its value now.

    ``HydraConfig`` is a process-wide singleton: without this, a config composed earlier in
    a test would resolve ``explainer_name`` from the config composed last.
    """
    raw = OmegaConf.to_container(cfg, resolve=False)

    def walk(node, prefix: str):
        if isinstance(node, dict):
            for key, value in node.items():
                yield from walk(value, f"{prefix}.{key}" if prefix else str(key))
        elif isinstance(node, str) and "${hydra:" in node:
            yield prefix

    for key in list(walk(raw, "")):
        OmegaConf.update(cfg, key, OmegaConf.select(cfg, key), merge=False)


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose ``conf/config.yaml`` with ``overrides`` as the Hydra app would.

    ``HydraConfig`` is set so that ``${hydra:runtime.choices.*}`` resolves, and, as in
    ``hydra.main``, the task config handed to the pipeline carries no ``hydra`` node.
    """
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose("config", overrides=list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
        _pin_hydra_interpolations(cfg)
    return cfg


def smoke_overrides(cache_dir: str | Path, *extra: str, model: str = "resnet18") -> list[str]:
    """A small offline end-to-end configuration on a real architecture with random weights."""
    return [f"model={model}", "debug=smoke", f"paths.cache_dir={cache_dir}", *extra]


@contextlib.contextmanager
def no_network() -> Iterator[None]:
    """Any attempt to open a network connection fails (offline loading is really offline)."""

    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in this test")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket.socket, "connect_ex", refuse)
        mp.setattr(socket, "create_connection", refuse)
        mp.setattr(socket, "getaddrinfo", refuse)
        yield


# Generic entries become concrete models with these overrides.
GENERIC_MODEL_OVERRIDES: dict[str, tuple[str, ...]] = {
    "torchvision": ("model.arch=resnet18",
                    "model.weights_meta=ResNet18_Weights.IMAGENET1K_V1"),
    "timm": ("model.arch=resnet18",),
}


_DIST_VARS = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "RANK")


def run_two_ranks(script: Path, *args: str, timeout: float = 240) -> list[str]:
    """Run ``python script *args`` as two gloo ranks started as torchrun would (LOCAL_RANK etc.
    in the environment); assert both exit 0 and return their logs."""
    from cosy_bench.distributed.session import free_port

    env = {k: v for k, v in os.environ.items() if k not in (*_DIST_VARS, "WANDB_API_KEY",
                                                            "WANDB_MODE")}
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), NODE_RANK="0",
               WORLD_SIZE="2", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    procs = [subprocess.Popen([sys.executable, str(script), *args],
                              env={**env, "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in range(2)]
    try:
        logs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, text in zip(procs, logs, strict=True):
        assert p.returncode == 0, text[-3000:]
    return logs


def record_by_hand(tmp_path: Path, n_images: int = 2, with_activations: bool = True):
    """A run record built by hand: 3 neurons of resnet18's logits, two concepts with images;
    ``with_activations``: with control/concept activations (DeLong CIs, top control images
    from a 16-image synthetic control set)."""
    import torch
    from PIL import Image

    from cosy_bench.data import SyntheticControlSet
    from cosy_bench.explainers.base import Explanations
    from cosy_bench.loops.synthesis import WorkItem
    from cosy_bench.record import RunRecord, RunResult

    cfg = compose_config(["model=resnet18", "debug=smoke", "layer=output",
                          "explainer=ground_truth", f"paths.cache_dir={tmp_path / 'cache'}"])
    items = {}
    for c, concept in enumerate(["tench", "goldfish"]):
        its = []
        for i in range(n_images):
            path = tmp_path / "images" / f"{c}_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (16, 16), (40 * c, 20 * i, 90)).save(path)
            its.append(WorkItem(concept, f"a {concept}", i, 1000 * c + i, str(path)))
        items[concept] = its
    scores = {"auc": torch.tensor([0.9, 0.7, 0.2], dtype=torch.float64),
              "mad": torch.tensor([2.0, 1.0, -0.5], dtype=torch.float64)}
    expl = Explanations({0: "tench", 1: "goldfish", 2: "goldfish"})
    truth = ["tench", "goldfish", "great white shark"]
    stats = {"images_generated": 4, "control_activations_computed": True, "control_skipped": 0}
    acts = {}
    if with_activations:
        gen = torch.Generator().manual_seed(0)
        acts = {"control": torch.randn(16, 3, generator=gen),
                "concept": torch.randn(n_images, 3, generator=gen) + 1.0,
                "control_index": torch.arange(16),
                "dataset": SyntheticControlSet(n=16, size=224)}
    return RunRecord.build(RunResult(cfg, [0, 1, 2], ["tench", "goldfish", "goldfish"], scores,
                                     expl, truth, stats, n_control=16, items=items, **acts))


def near_constant_control():
    """(control ``[500, 4]``, concept ``[10, 4]``): identical images in different batches give
    columns that differ in their last bits: column 1 float32 rounding noise around 3.25, column
    2 relative noise 1.7e-6 around -120, column 3 small but really spread, column 0 normal."""
    import torch

    gen = torch.Generator().manual_seed(4)
    control = torch.randn(500, 4, generator=gen)
    control[:, 1] = 3.25 + 1e-6 * torch.randn(500, generator=gen)
    control[:, 2] = -120.0 + 2e-4 * torch.randn(500, generator=gen)
    control[:, 3] = 1e-3 * torch.randn(500, generator=gen)
    return control, control[:10] + 0.5
