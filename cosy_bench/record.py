"""The run record: what a run folder holds and how to read it back.

A run writes ``explanations.csv`` (neuron, explanation, the explainer's columns),
``results.csv`` (one row per scored neuron), ``summary.json`` (per-score mean/std/n, the
ground-truth match, and the run's identity under ``"run"``) and ``config.yaml``.
:class:`RunRecord` builds, writes and prints them; :meth:`RunRecord.read` and
:func:`find_runs` read them back for the leaderboard, the W&B logger and the report.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from cosy_bench.cache.store import write_text_atomic

log = logging.getLogger("cosy_bench")

EXPLANATIONS, RESULTS, SUMMARY, CONFIG = ("explanations.csv", "results.csv", "summary.json",
                                          "config.yaml")

_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> list[str]:
    return [w.removesuffix("s") if len(w) > 3 else w for w in _WORD.findall(text.lower())]


def names_concept(explanation: str, truth: str) -> bool:
    """Does ``explanation`` name the ground-truth concept ``truth``?

    Case-insensitive on words (a trailing plural ``s`` ignored): every word of the truth
    appears in the explanation. A compositional explanation (``red AND circle``, ``striped
    red circle``) counts when it contains the concept.
    """
    expl = set(_words(explanation))
    return bool(_words(truth)) and all(w in expl for w in _words(truth))


def summarize(values: torch.Tensor) -> dict:
    v = values.double()
    v = v[torch.isfinite(v)]
    n = int(v.numel())
    return {"mean": float(v.mean()) if n else None,
            "std": float(v.std(unbiased=False)) if n else None, "n": n}


def run_meta(cfg: DictConfig) -> dict:
    """The run's identity, as read by the leaderboard."""
    return {"model": cfg.model.name, "layer": cfg.layer.name or cfg.model.default_layer,
            "explainer": cfg.explainer_name, "generator": cfg.generator_name,
            "prompt": cfg.prompt.name, "n_images": cfg.n_images, "seed": cfg.seed}


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

    @property
    def meta(self) -> dict:
        """The run's identity and counts (``summary["run"]``)."""
        return self.summary.get("run", {})

    @classmethod
    def build(cls, cfg, neurons, texts, scores: dict[str, torch.Tensor], explanations, truth,
              stats: dict, n_control: int, items: dict) -> RunRecord:
        rows = []
        for j, (k, text) in enumerate(zip(neurons, texts, strict=True)):
            row = {"neuron": k, "explanation": text}
            for col, vals in explanations.extra.items():
                row[col] = vals.get(k, "")
            if truth is not None:
                row["ground_truth"] = truth[k]
            for name, vals in scores.items():
                row[name] = float(vals[j])
            rows.append(row)
        summary = {name: summarize(vals) for name, vals in scores.items()}
        if truth is not None:
            hits = [names_concept(r["explanation"], r["ground_truth"]) for r in rows]
            summary["ground_truth_match"] = sum(hits) / len(hits) if hits else None
        summary["run"] = {**run_meta(cfg), "n_neurons": len(neurons), "n_control": n_control,
                          **stats}
        return cls(rows, summary, explanations.to_csv(), cfg, items)

    def results_csv(self) -> str:
        buf = io.StringIO()
        cols = list(self.rows[0]) if self.rows else ["neuron", "explanation"]
        writer = csv.DictWriter(buf, fieldnames=cols)
        writer.writeheader()
        writer.writerows(self.rows)
        return buf.getvalue()

    def write(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / EXPLANATIONS, self.explanations_csv)
        write_text_atomic(out / RESULTS, self.results_csv())
        write_text_atomic(out / SUMMARY, json.dumps(self.summary, indent=2))
        cfg = OmegaConf.masked_copy(self.cfg, [k for k in self.cfg if k != "hydra"])
        write_text_atomic(out / CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
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
        rows = []
        if (folder / RESULTS).exists():
            with open(folder / RESULTS, encoding="utf-8", newline="") as f:
                rows = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]
        expl = folder / EXPLANATIONS
        cfg_path = folder / CONFIG
        cfg = OmegaConf.load(cfg_path) if cfg_path.exists() else OmegaConf.create({})
        return cls(rows, summary, expl.read_text(encoding="utf-8") if expl.exists() else "",
                   cfg, folder=folder)


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
