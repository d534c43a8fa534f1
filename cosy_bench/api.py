"""The notebook API: :func:`evaluate` runs the suite as the CLI does and :func:`score` scores
explanations a user already has, with no config.

``from cosy_bench import evaluate, score`` imports this module on first use, so that
``import cosy_bench`` stays light.

>>> record = evaluate("explainer=invert", "layer=concepts", "n_images=10")  # doctest: +SKIP
>>> record.results[["neuron", "explanation", "auc", "mad"]].head()            # doctest: +SKIP
>>> record.summary["auc"]["mean"]                                             # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from cosy_bench.app.config import config_dir
from cosy_bench.app.failures import record_failure
from cosy_bench.app.inputs import check_inputs
from cosy_bench.record import RunRecord
from cosy_bench.schema import validate
from cosy_bench.scorers import registry

__all__ = ["compose_config", "evaluate", "score"]


def _pin_hydra_values(cfg: DictConfig) -> None:
    """Replace every ``${hydra:...}`` interpolation of ``cfg`` by its value now (Hydra's
    config is a process-wide singleton: a later composition would change them)."""
    def walk(node, prefix: str):
        if isinstance(node, dict):
            for key, value in node.items():
                yield from walk(value, f"{prefix}.{key}" if prefix else str(key))
        elif isinstance(node, str) and "${hydra:" in node:
            yield prefix

    for key in list(walk(OmegaConf.to_container(cfg, resolve=False), "")):
        OmegaConf.update(cfg, key, OmegaConf.select(cfg, key), merge=False)


def compose_config(*overrides: str, config_name: str = "config") -> tuple[DictConfig, str]:
    """The config the CLI composes for ``overrides`` (same ``conf/`` folder, defaults and
    plugins) and the CLI's default run folder for it (``hydra.run.dir``).

    Returns ``(cfg, run_dir)``; ``cfg`` carries no ``hydra`` node, as the CLI's task config.
    """
    from hydra_plugins.cosy_bench_plugins import register

    register()  # layer=NAME, as the CLI
    bad = [o for o in overrides if not isinstance(o, str)]
    if bad:
        raise TypeError(f"overrides are strings such as 'explainer=invert', got {bad!r}")
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        run_dir = str(cfg.hydra.run.dir)
        with open_dict(cfg):
            del cfg["hydra"]
        _pin_hydra_values(cfg)
    return cfg, run_dir


def evaluate(*overrides: str, output_dir: str | Path | None = None,
             log: bool = True) -> RunRecord:
    """Run one evaluation as ``python -m cosy_bench <overrides>`` does and return its record.

    Args:
        overrides: Hydra overrides, as on the command line (``"explainer=invert"``,
            ``"layer=concepts"``, ``"n_images=10"``, ``"neurons.ids=[0,3]"``).
        output_dir: the run folder; default the CLI's (``outputs/DATE/TIME``, relative to
            the working directory).
        log: hand the record to the run's ``logger`` (W&B where configured), as the CLI.

    Returns:
        The :class:`~cosy_bench.record.RunRecord`: ``record.results`` (pandas DataFrame, one
        row per neuron: the columns of ``results.csv``), ``record.summary`` (the dict of
        ``summary.json``) and ``record.folder``. The config is validated and the inputs
        checked before any work (:mod:`cosy_bench.schema`, :mod:`cosy_bench.app.inputs`);
        a failure writes ``error.txt`` into the run folder and raises.
    """
    from cosy_bench.distributed.session import session

    cfg, default_dir = compose_config(*overrides)
    validate(cfg)
    out = Path(output_dir if output_dir is not None else default_dir)
    try:
        check_inputs(cfg)
        with session(cfg.trainer, out) as ranks:
            record = instantiate(cfg.task)(cfg, out)
    except Exception as exc:
        record_failure(out, exc)
        raise
    if isinstance(record, RunRecord) and ranks.is_rank_zero:
        record.folder = out
        if log:
            instantiate(cfg.logger).log_run(cfg, record, out)
    return record


def _as_tensor(name: str, x, shape: str) -> torch.Tensor:
    try:
        t = torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be a tensor or array {shape}, got {type(x).__name__}") \
            from err
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D {shape}, got shape {tuple(t.shape)}")
    return t


def score(control, concept: Mapping[str, object], explanations: Sequence[str],
          scorers: Sequence[str] = ("auc", "mad")):
    """Score explanations you already have against activations, with no config.

    Args:
        control: ``[N, K]`` activations of the ``K`` neurons on ``N`` control images
            (tensor or numpy array).
        concept: ``{explanation: [M, K]}``: activations of all ``K`` neurons on the ``M``
            images made for that explanation (``M`` may differ between explanations).
        explanations: ``K`` strings, neuron ``k``'s explanation (a key of ``concept``).
        scorers: activation scorers of :data:`cosy_bench.scorers.REGISTRY`.

    Returns:
        pandas DataFrame, one row per neuron: ``neuron``, ``explanation`` and the scorers'
        columns (float64). Neuron ``k`` is scored on column ``k`` of its explanation's
        activations; AUC, MAD and the U test sort each control column once.
    """
    import pandas as pd

    from cosy_bench.pipeline import score_by_count
    from cosy_bench.scorers.sorted import sort_control

    control = _as_tensor("control", control, "[N, K]")
    k = control.shape[1]
    explanations = [str(e) for e in explanations]
    if len(explanations) != k:
        raise ValueError(f"{len(explanations)} explanations for K = {k} neurons (control has "
                         f"shape {tuple(control.shape)}): give one explanation per neuron")
    missing = sorted(set(explanations) - set(concept))
    if missing:
        raise ValueError(f"concept has no activations for explanations {missing[:5]}: give "
                         "concept[explanation] = [M, K] activations on its images")
    per_concept = {}
    for text in dict.fromkeys(explanations):
        acts = _as_tensor(f"concept[{text!r}]", concept[text], "[M, K]")
        if acts.shape[1] != k:
            raise ValueError(f"concept[{text!r}] has {acts.shape[1]} neurons but control has "
                             f"{k}: give the activations of all K neurons, [M, K]")
        per_concept[text] = acts.to(control.device)
    names = list(dict.fromkeys(scorers))
    text = [n for n in names if registry.get(n).text]
    if text:
        raise ValueError(f"{text} score texts against known concepts, not activations")
    neurons = list(range(k))
    columns = score_by_count(names, sort_control(control), control, per_concept, neurons,
                             explanations)
    frame = pd.DataFrame({"neuron": neurons, "explanation": explanations})
    for name, values in columns.items():
        frame[name] = values.cpu().numpy()
    return frame
