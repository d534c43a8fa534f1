"""The run record: what a run folder holds and how to read it back.

A run writes ``explanations.csv`` (neuron, rank, explanation, the explainer's columns),
``results.csv`` (one row per scored neuron and rank (``explainer.top_k``), with DeLong's
``ci_level`` (95%) interval of its AUC in ``auc_ci_low``/``auc_ci_high``), ``summary.json`` (per
score: mean, std, n and the mean's ``ci_level`` interval over the rank-1 rows; the ground-truth
match and coverage, best-of-K, polysemanticity (:mod:`cosy_bench.ranks`); the run's identity
under ``"run"``),
``config.yaml``, ``top_control.csv`` (each neuron's top-8 control images by activation) and
``synthetic_images.csv`` (up to 8 synthetic image files per explanation).
:class:`RunRecord` builds, writes and prints them; :meth:`RunRecord.read` and
:func:`find_runs` read them back for the leaderboard, the W&B logger and the report
(:func:`cosy_bench.report.runs.scan_runs` adds each folder's status): this module is the one
place that knows a run folder's files.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import platform
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from omegaconf import DictConfig, OmegaConf

from cosy_bench import __version__
from cosy_bench.cache.fingerprint import short_value
from cosy_bench.cache.store import write_text_atomic
from cosy_bench.generators.base import generator_id
from cosy_bench.ranks import rank_summary
from cosy_bench.scorers import registry
from cosy_bench.scorers.intervals import auc_delong, interval, mean_ci, normal_quantile
from cosy_bench.scorers.label_similarity import names_concept, positive_text  # noqa: F401

if TYPE_CHECKING:
    from cosy_bench.explainers.base import Explanations
from cosy_bench.units.truth import units_meta

log = logging.getLogger("cosy_bench")

EXPLANATIONS, RESULTS, SUMMARY, CONFIG = ("explanations.csv", "results.csv", "summary.json",
                                          "config.yaml")
TOP_CONTROL, SYNTHETIC = "top_control.csv", "synthetic_images.csv"
#: images per neuron kept for the report: top control images, synthetic images per concept
N_TOP, N_SYNTHETIC = 8, 8


def summarize(values: torch.Tensor, level: float, aggregation: str = "mean",
              name: str | None = None) -> dict:
    """``mean``, ``std`` (ddof 0) and ``n`` of the finite values, and the mean's ``level``
    interval over neurons (``ci_low``, ``ci_high``: Student t, ``std`` with ddof 1);
    ``aggregation="median"`` (a scorer's :attr:`~cosy_bench.scorers.registry.Scorer.aggregation`)
    adds the ``median``; ``name`` clips the interval of a score bounded in [0, 1]
    (:func:`~cosy_bench.scorers.intervals.mean_ci`)."""
    v = values.double()
    v = v[torch.isfinite(v)]
    n = int(v.numel())
    low, high = mean_ci(v, level, score=name) if n >= 2 else (None, None)
    out = {"mean": float(v.mean()) if n else None,
           "std": float(v.std(unbiased=False)) if n else None, "n": n,
           "ci_low": low, "ci_high": high}
    if aggregation == "median":
        out["median"] = float(v.quantile(0.5)) if n else None
    return out


def run_meta(cfg: DictConfig) -> dict:
    """The run's identity, as read by the leaderboard, the report and W&B (``generator``:
    :func:`generator_id`; ``generator_option``: the config group's option)."""
    weights = cfg.model.get("weights")
    return {"model": cfg.model.name, "layer": cfg.layer.name or cfg.model.default_layer,
            "explainer": cfg.explainer_name, "generator": generator_id(cfg),
            "generator_option": cfg.generator_name, "prompt": cfg.prompt.name,
            "weights": "random" if weights is None else short_value(str(weights)),
            "n_images": cfg.n_images, "seed": cfg.seed, **units_meta(cfg)}


def versions() -> dict:
    """What produced a run: cosy_bench, torch and Python versions."""
    return {"cosy_bench": __version__, "torch": torch.__version__,
            "python": platform.python_version()}


def _dataset_names(dataset) -> dict:
    """A control set's short name for tables (``imagenet_val``, ``toyworld``: its ``name`` up
    to the first ``:`` or ``-``) and its full name (which images, for comparisons)."""
    name = getattr(dataset, "name", None)
    if name is None:
        return {"dataset": None, "dataset_id": None}
    return {"dataset": re.split(r"[:-]", str(name))[0], "dataset_id": str(name)}


def _top_control(control: torch.Tensor, neurons: list[int], index: torch.Tensor | None,
                 dataset) -> list[dict]:
    """Each neuron's ``N_TOP`` control images by activation: rows of neuron, rank, the
    dataset index, the activation and the file (empty for in-memory control sets)."""
    k = min(N_TOP, control.shape[0])
    values, rows = torch.topk(control.double(), k, dim=0)  # [k, K]
    idx = rows if index is None else index.long()[rows]
    files = getattr(dataset, "files", None)
    out = []
    for j, neuron in enumerate(neurons):
        for r in range(k):
            i = int(idx[r, j])
            out.append({"neuron": neuron, "rank": r, "index": i,
                        "activation": float(values[r, j]),
                        "path": str(files[i]) if files is not None else ""})
    return out


_CONTROL_SETS: dict[str, object] = {}  # control sets rebuilt from configs, by config


def _control_set(cfg: DictConfig):
    """The control set of a run's config, built once per distinct config (``None`` where it
    cannot be built here, e.g. a dataset folder this machine lacks)."""
    from hydra.utils import instantiate

    spec = OmegaConf.select(cfg, "dataset", default=None)
    if spec is None:
        return None
    key = OmegaConf.to_yaml(spec, resolve=True)
    if key not in _CONTROL_SETS:
        if len(_CONTROL_SETS) >= 4:
            _CONTROL_SETS.pop(next(iter(_CONTROL_SETS)))
        try:
            _CONTROL_SETS[key] = instantiate(spec)
        except Exception as err:  # noqa: BLE001 - any failure means: no control images
            log.warning("control set %s cannot be built here (%s): no control images",
                        spec.get("_target_"), err)
            _CONTROL_SETS[key] = None
    return _CONTROL_SETS[key]


def _synthetic_images(items: dict) -> list[dict]:
    return [{"concept": c, "index": it.index, "path": str(it.path)} for c, its in items.items()
            for it in its[:N_SYNTHETIC]]


@dataclass
class RunResult:
    """What :func:`cosy_bench.pipeline.run` hands :meth:`RunRecord.build`: a scored run of
    ``K`` neurons, ``N`` control images, ``M`` images per explanation.

    neurons: the scored neurons, sorted ``[K]``; texts: their explanations ``[K]``; scores:
    results column -> float64 ``[K]`` (and ``n_images`` under ``n_images=auto``);
    explanations: the explainer's :class:`~cosy_bench.explainers.base.Explanations`; truth:
    ground truth of every neuron of the layer (by index) or ``None``; stats: the run's
    counters (``summary["run"]``); items: per concept its synthesis work items; control
    ``[N, K]``, concept ``[M, K]`` (``None`` where the image counts differ) and
    control_index ``[N]`` (dataset index of each control row): the activations behind the
    scores; dataset: the control set.
    """

    cfg: DictConfig
    neurons: list[int]
    texts: list[str]
    scores: dict[str, torch.Tensor]
    explanations: Explanations
    truth: list[str] | None
    stats: dict
    n_control: int
    items: dict = field(default_factory=dict)
    control: torch.Tensor | None = None
    concept: torch.Tensor | None = None
    control_index: torch.Tensor | None = None
    dataset: object = None
    #: rank of each row's explanation ``[R]`` (``None``: all 1, one row per neuron)
    ranks: list[int] | None = None
    #: per row, its neuron's polysemanticity ``[R]`` (NaN: undefined; ``None``: no column)
    polysemanticity: torch.Tensor | None = None
    #: explanations per neuron the run asked for (``explainer.top_k``; None: the largest rank)
    top_k: int | None = None


@dataclass
class RunRecord:
    """One run's results: per-neuron rows, the summary, the explanations and the config."""

    rows: list[dict]
    summary: dict
    explanations_csv: str
    cfg: DictConfig
    #: per concept, its synthesis work items (empty when read back from a folder)
    items: dict = field(default_factory=dict)
    #: the run folder it was read from (None for a record just built)
    folder: Path | None = None
    #: rows of ``top_control.csv``: neuron, rank, index, activation, path
    top_control: list[dict] = field(default_factory=list)
    #: rows of ``synthetic_images.csv``: concept, index, path
    images: list[dict] = field(default_factory=list)
    #: the control set (given at build; rebuilt from the config on demand when read back)
    dataset: object = field(default=None, repr=False)

    def control_image(self, row: dict):
        """One of the run's top control images (a ``top_control`` row) as a PIL image: from
        its file, else from the control set (held in memory: the toy world, the synthetic
        set), rebuilt from the run's config where needed; ``None`` where neither can be had."""
        from PIL import Image

        path = str(row.get("path") or "")
        if path:
            if not Path(path).is_file():
                return None
            try:
                with Image.open(path) as im:
                    return im.convert("RGB")
            except OSError:
                return None
        if self.dataset is None:
            self.dataset = _control_set(self.cfg)
        return None if self.dataset is None else self.dataset[int(row["index"])]

    @property
    def meta(self) -> dict:
        """The run's identity and counts (``summary["run"]``)."""
        return self.summary.get("run", {})

    @property
    def identity(self) -> dict:
        """What names the run in a table: dataset, model, layer, method, generator, prompt,
        weights, n neurons, date and the folder (``None`` where a run did not record it)."""
        meta = self.meta
        date = meta.get("date")
        if date is None and self.folder is not None and (self.folder / SUMMARY).exists():
            stamp = (self.folder / SUMMARY).stat().st_mtime
            date = datetime.fromtimestamp(stamp, timezone.utc).isoformat(timespec="seconds")
        return {"dataset": meta.get("dataset"), "model": meta.get("model"),
                "layer": meta.get("layer"), "method": meta.get("explainer"),
                "generator": meta.get("generator"), "prompt": meta.get("prompt"),
                "weights": meta.get("weights"), "n": meta.get("n_neurons"), "date": date,
                "run": None if self.folder is None else str(self.folder)}

    @property
    def layer_order(self) -> list[str]:
        """The model's layers in forward order (``model.layers`` of the run's config)."""
        layers = OmegaConf.select(self.cfg, "model.layers", default=None)
        return [str(k) for k in layers] if layers is not None else []

    @property
    def results(self):
        """The per-neuron rows of ``results.csv`` as a pandas DataFrame (one row per neuron)."""
        import pandas as pd

        return pd.DataFrame(self.rows)

    def higher_is_better(self, column: str) -> bool:
        """Which way a results column is better: the scorer registry's declaration, else the
        ``higher_is_better`` of the run's ``scorer.<column>`` config, else higher."""
        known = registry.higher_is_better(column)
        if known is not None:
            return known
        node = OmegaConf.select(self.cfg, "scorer", default=None)
        if isinstance(node, DictConfig) and isinstance(node.get(column), DictConfig):
            return bool(node[column].get("higher_is_better", True))
        return True

    @property
    def scores(self) -> dict[str, dict]:
        """``{score: {mean, std, n, ci_low, ci_high}}`` of the summary."""
        return {k: v for k, v in self.summary.items() if isinstance(v, dict) and "mean" in v}

    @classmethod
    def build(cls, result: RunResult) -> RunRecord:
        """The record of a scored run (:class:`RunResult`): one row per (neuron, rank). With
        its ``control [N, R]`` and ``concept [M, R]`` (the activations the scores came from)
        it adds DeLong's AUC interval per row (at the config's ``ci_level``) and the top
        control images."""
        cfg, neurons, level = result.cfg, result.neurons, float(result.cfg.ci_level)
        control, explanations = result.control, result.explanations
        ci = None
        if control is not None and result.concept is not None:
            est, var = auc_delong(control, result.concept)
            ci = interval(est, var, normal_quantile(level))
        ranks = [1] * len(neurons) if result.ranks is None else list(result.ranks)
        rows = []
        for j, (k, r, text) in enumerate(zip(neurons, ranks, result.texts, strict=True)):
            row = {"neuron": k, "rank": r, "explanation": text}
            for col in explanations.extra:  # typed as read back from a file
                row[col] = _number(str(explanations.value(col, k, r)))
            if result.truth is not None:
                row["ground_truth"] = result.truth[k]
            for name, vals in result.scores.items():
                row[name] = float(vals[j])
                if name == "auc" and ci is not None:
                    row["auc_ci_low"], row["auc_ci_high"] = float(ci[0][j]), float(ci[1][j])
            if result.polysemanticity is not None:
                p = float(result.polysemanticity[j])
                row["polysemanticity"] = p if p == p else ""
            rows.append(row)
        first = [j for j, r in enumerate(ranks) if r == 1]  # one row per neuron
        summary = {name: summarize(vals[first], level, registry.aggregation(name), name)
                   for name, vals in result.scores.items()}
        summary.update(rank_summary(rows, result.scores, result.truth is not None,
                                    lambda v: summarize(v, level), result.top_k))
        summary["run"] = {**run_meta(cfg), **_dataset_names(result.dataset),
                          "n_neurons": len(first), "top_k": max([*ranks, result.top_k or 1]),
                          "n_explanations": len(rows), "n_control": result.n_control,
                          **result.stats,
                          "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                          "versions": versions()}
        top = [] if control is None else _top_control(
            control[:, first], [neurons[j] for j in first], result.control_index,
            result.dataset)
        return cls(rows, summary, explanations.to_csv(rank=True), cfg, result.items,
                   top_control=top, images=_synthetic_images(result.items),
                   dataset=result.dataset)

    def results_csv(self) -> str:
        return _csv(self.rows, ["neuron", "explanation"])

    def write(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / EXPLANATIONS, self.explanations_csv)
        write_text_atomic(out / RESULTS, self.results_csv())
        write_text_atomic(out / SUMMARY, json.dumps(self.summary, indent=2))
        cfg = OmegaConf.masked_copy(self.cfg, [k for k in self.cfg if k != "hydra"])
        write_text_atomic(out / CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
        if self.top_control:
            write_text_atomic(out / TOP_CONTROL, _csv(self.top_control))
        if self.images:
            write_text_atomic(out / SYNTHETIC, _csv(self.images))
        print(self.table())

    def table(self) -> str:
        meta = self.summary["run"]
        lines = [f"CoSy results: {meta['model']} / {meta['layer']} / {meta['explainer']} "
                 f"({meta['n_neurons']} neurons, {meta['n_images']} images each, "
                 f"{meta['n_control']} control images)"]
        for name, stat in self.summary.items():
            if isinstance(stat, dict) and "mean" in stat and stat["mean"] is not None:
                lines.append(f"  {name:<20} {stat['mean']:.4f} ± {stat['std']:.4f}  (n={stat['n']})")
        for name, stat in self.summary.get("best_of_k", {}).items():
            if stat["mean"] is not None:
                lines.append(f"  {'best-of-' + str(meta.get('top_k')) + ' ' + name:<20} "
                             f"{stat['mean']:.4f} ± {stat['std']:.4f}  (n={stat['n']})")
        for key in ("ground_truth_match", "ground_truth_coverage", "polysemanticity"):
            if self.summary.get(key) is not None:
                lines.append(f"  {key:<20} {self.summary[key]:.4f}")
        return "\n".join(lines)

    @classmethod
    def read(cls, folder: str | Path) -> RunRecord:
        """The record a run wrote into ``folder`` (its ``summary.json`` is required; the other
        files are read where present). Numbers in ``results.csv`` come back as floats."""
        folder = Path(folder)
        summary = json.loads((folder / SUMMARY).read_text(encoding="utf-8"))
        if not isinstance(summary, dict):
            raise ValueError(f"{folder / SUMMARY} holds no summary object")
        expl = folder / EXPLANATIONS
        cfg_path = folder / CONFIG
        cfg = OmegaConf.load(cfg_path) if cfg_path.exists() else OmegaConf.create({})
        return cls(_read_csv(folder / RESULTS), summary,
                   # bytes, not read_text: universal newlines would turn a \r in an
                   # explanation into \n
                   expl.read_bytes().decode("utf-8") if expl.exists() else "", cfg,
                   folder=folder, top_control=_read_csv(folder / TOP_CONTROL, keep=("path",)),
                   images=_read_csv(folder / SYNTHETIC, keep=("path", "concept")))


def _csv(rows: list[dict], default_cols: list[str] | None = None) -> str:
    buf = io.StringIO()
    cols = list(rows[0]) if rows else list(default_cols or [])
    writer = csv.DictWriter(buf, fieldnames=cols)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _read_csv(path: Path, keep: tuple[str, ...] = ()) -> list[dict]:
    """Rows of a csv file (``[]`` where it is missing); numbers as numbers except ``keep``."""
    if not path.exists():
        return []
    with open(path, encoding="utf-8", newline="") as f:
        return [{k: v if k in keep else _number(v) for k, v in row.items()}
                for row in csv.DictReader(f)]


def _number(value: str):
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


def find_runs(root: str | Path) -> list[Path]:
    """Every run folder under ``root`` (``root`` itself included): those holding a
    ``summary.json``, sorted by path."""
    return sorted(p.parent for p in Path(root).rglob(SUMMARY))
