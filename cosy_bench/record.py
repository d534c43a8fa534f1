"""The run record: what a run folder holds and how to read it back.

A run writes ``explanations.csv`` (neuron, explanation, the explainer's columns),
``results.csv`` (one row per scored neuron, with DeLong's 95% interval of its AUC in
``auc_ci_low``/``auc_ci_high``), ``summary.json`` (per score: mean, std, n and the mean's 95%
interval over neurons; the ground-truth match; the run's identity under ``"run"``),
``config.yaml``, ``top_control.csv`` (each neuron's top-8 control images by activation) and
``synthetic_images.csv`` (up to 8 synthetic image files per explanation).
:class:`RunRecord` builds, writes and prints them; :meth:`RunRecord.read`, :func:`find_runs`
and :func:`scan_runs` (every run folder with its status: complete, partial, failed) read
them back for the leaderboard, the W&B logger and the report: this module is the one place
that knows a run folder's files.
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

import torch
from omegaconf import DictConfig, OmegaConf

from cosy_bench import __version__
from cosy_bench.cache.store import write_text_atomic
from cosy_bench.scorers.intervals import auc_delong, interval, mean_ci, normal_quantile
from cosy_bench.units.truth import truth_sets, units_meta

log = logging.getLogger("cosy_bench")

EXPLANATIONS, RESULTS, SUMMARY, CONFIG = ("explanations.csv", "results.csv", "summary.json",
                                          "config.yaml")
TOP_CONTROL, SYNTHETIC = "top_control.csv", "synthetic_images.csv"
#: images per neuron kept for the report: top control images, synthetic images per concept
N_TOP, N_SYNTHETIC = 8, 8
#: confidence level of every interval a run writes
LEVEL = 0.95

_WORD = re.compile(r"[a-z0-9]+")
#: a negated term of a formula label: ``NOT`` (upper case, as formulas write it) and the
#: concept up to the next ``AND`` / ``OR`` / parenthesis, or the parenthesised group after it
_NEGATED = re.compile(r"\bNOT\s+(?:\([^()]*\)|.*?(?=\s+(?:AND|OR)\b|\)|$))")


def _words(text: str) -> list[str]:
    return [w.removesuffix("s") if len(w) > 3 else w for w in _WORD.findall(text.lower())]


def positive_text(explanation: str) -> str:
    """``explanation`` without its negated terms (``circle AND NOT red`` -> ``circle AND``;
    a free-text lower-case "not" stays)."""
    return _NEGATED.sub("", explanation)


def names_concept(explanation: str, truth: str) -> bool:
    """Does ``explanation`` name the ground-truth concept ``truth``?

    Case-insensitive on words (a trailing plural ``s`` ignored): every word of the truth
    appears in the explanation. A compositional explanation (``red AND circle``, ``striped
    red circle``) counts when it contains the concept as a positive term: terms after
    ``NOT`` (``circle AND NOT red``) do not count.
    """
    expl = set(_words(positive_text(explanation)))
    return bool(_words(truth)) and all(w in expl for w in _words(truth))


def summarize(values: torch.Tensor) -> dict:
    """``mean``, ``std`` (ddof 0) and ``n`` of the finite values, and the mean's ``LEVEL``
    interval over neurons (``ci_low``, ``ci_high``: Student t, ``std`` with ddof 1)."""
    v = values.double()
    v = v[torch.isfinite(v)]
    n = int(v.numel())
    low, high = mean_ci(v, LEVEL) if n >= 2 else (None, None)
    return {"mean": float(v.mean()) if n else None,
            "std": float(v.std(unbiased=False)) if n else None, "n": n,
            "ci_low": low, "ci_high": high}


def run_meta(cfg: DictConfig) -> dict:
    """The run's identity, as read by the leaderboard, the report and W&B."""
    weights = cfg.model.get("weights")
    return {"model": cfg.model.name, "layer": cfg.layer.name or cfg.model.default_layer,
            "explainer": cfg.explainer_name, "generator": cfg.generator_name,
            "prompt": cfg.prompt.name, "weights": "random" if weights is None else str(weights),
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
    return [{"concept": concept, "index": it.index, "path": str(it.path)}
            for concept, its in items.items() for it in its[:N_SYNTHETIC]]


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
    def scores(self) -> dict[str, dict]:
        """``{score: {mean, std, n, ci_low, ci_high}}`` of the summary."""
        return {k: v for k, v in self.summary.items() if isinstance(v, dict) and "mean" in v}

    @classmethod
    def build(cls, cfg, neurons, texts, scores: dict[str, torch.Tensor], explanations, truth,
              stats: dict, n_control: int, items: dict, control: torch.Tensor | None = None,
              concept: torch.Tensor | None = None, control_index: torch.Tensor | None = None,
              dataset=None) -> RunRecord:
        """The record of a scored run. With ``control [N, K]`` and ``concept [M, K]`` (the
        activations the scores came from) it adds DeLong's 95% AUC interval per neuron and
        the top control images; ``control_index [N]`` maps control rows to dataset indices
        and ``dataset`` (the control set) gives their files and its name."""
        ci = None
        if control is not None and concept is not None:
            est, var = auc_delong(control, concept)
            ci = interval(est, var, normal_quantile(LEVEL))
        rows = []
        for j, (k, text) in enumerate(zip(neurons, texts, strict=True)):
            row = {"neuron": k, "explanation": text}
            for col, vals in explanations.extra.items():
                # typed as read back from a file, whether fresh or from the cache
                row[col] = _number(str(vals.get(k, "")))
            if truth is not None:
                row["ground_truth"] = truth[k]
            for name, vals in scores.items():
                row[name] = float(vals[j])
                if name == "auc" and ci is not None:
                    row["auc_ci_low"], row["auc_ci_high"] = float(ci[0][j]), float(ci[1][j])
            rows.append(row)
        summary = {name: summarize(vals) for name, vals in scores.items()}
        if truth is not None:  # a unit's truth: one concept or several ("a|b"); none: left out
            sets = truth_sets([r["ground_truth"] for r in rows])
            hits = [any(names_concept(r["explanation"], c) for c in s)
                    for r, s in zip(rows, sets, strict=True) if s]
            summary["ground_truth_match"] = sum(hits) / len(hits) if hits else None
        summary["run"] = {**run_meta(cfg), **_dataset_names(dataset),
                          "n_neurons": len(neurons), "n_control": n_control, **stats,
                          "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                          "versions": versions()}
        top = _top_control(control, neurons, control_index, dataset) if control is not None \
            else []
        return cls(rows, summary, explanations.to_csv(), cfg, items, top_control=top,
                   images=_synthetic_images(items), dataset=dataset)

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
        if self.summary.get("ground_truth_match") is not None:
            lines.append(f"  {'ground_truth_match':<20} {self.summary['ground_truth_match']:.4f}")
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


@dataclass
class RunStatus:
    """A run folder and what it holds: ``status`` is ``complete`` (summary and one result
    row per scored neuron), ``partial`` (a summary but results missing or short, or no
    neuron scored), ``failed`` (a Hydra job folder without a summary: the job failed or is
    still running) or ``unreadable`` (a summary that cannot be read); ``detail`` says why."""

    folder: Path
    status: str
    detail: str = ""
    record: RunRecord | None = None


def _last_error(folder: Path) -> str:
    """The last line mentioning an error in the job's ``*.log`` files, or ''."""
    for log_file in sorted(folder.glob("*.log")):
        lines = [ln for ln in log_file.read_text(encoding="utf-8", errors="replace")
                 .splitlines() if "error" in ln.lower() or "exception" in ln.lower()]
        if lines:
            return lines[-1].strip()[:300]
    return ""


def scan_runs(root: str | Path) -> list[RunStatus]:
    """Every run folder under ``root`` with its status, sorted by path: folders with a
    ``summary.json`` and Hydra job folders (a ``.hydra/`` inside) that have none."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder: give a run or sweep folder "
                                "(e.g. multirun/2025-01-31/12-00-00)")
    folders = set(find_runs(root)) | {p.parent for p in root.rglob(".hydra") if p.is_dir()}
    out = []
    for folder in sorted(folders):
        if not (folder / SUMMARY).exists():
            error = _last_error(folder)
            out.append(RunStatus(folder, "failed", "no summary.json (the job failed or is "
                                 "still running)" + (f": {error}" if error else "")))
            continue
        try:
            record = RunRecord.read(folder)
        except (OSError, ValueError) as err:
            out.append(RunStatus(folder, "unreadable", f"{SUMMARY}: {err}"))
            continue
        n = record.meta.get("n_neurons")
        if not record.rows:
            out.append(RunStatus(folder, "partial", f"no {RESULTS} rows", record))
        elif n is not None and len(record.rows) != n:
            out.append(RunStatus(folder, "partial",
                                 f"{len(record.rows)} of {n} neurons in {RESULTS}", record))
        else:
            out.append(RunStatus(folder, "complete", "", record))
    return out
