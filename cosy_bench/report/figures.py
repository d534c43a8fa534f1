"""The report's figures (matplotlib, no display needed), each written as PNG and SVG:

* :func:`across_layers`: a score (mean over neurons, band = the mean's 95% interval) along a
  model's layers in forward order, one line per method, one panel per model with two or
  more layers (the poster's "AUC / MAD across ResNet18 layers");
* :func:`distributions`: per (model, layer), each method's per-neuron AUC and MAD as a box
  with the neurons as points.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from cosy_bench.leaderboard import method_rank
from cosy_bench.record import RunRecord

LABELS = {"auc": "AUC", "mad": "MAD"}
CHANCE = {"auc": 0.5, "mad": 0.0}


def slug(*parts) -> str:
    """A file-name-safe name made of ``parts``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(str(p) for p in parts)).strip("_")


def save(fig: Figure, out_dir: Path, name: str) -> str:
    """Write ``name.png`` and ``name.svg`` into ``out_dir``; returns the PNG's file name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / f"{name}.png", dpi=110, bbox_inches="tight")
    fig.savefig(out_dir / f"{name}.svg", bbox_inches="tight", metadata={"Date": None})
    return f"{name}.png"


def layer_series(rows: list[dict]) -> dict[str, tuple[list[str], dict[str, list[dict]]]]:
    """Per model with two or more layers: its layers in forward order and, per method, its
    rows (one per layer, the first run where several share a layer)."""
    out = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        layers = [lay for _, lay in sorted({(r.get("layer_rank", 0), r["layer"]) for r in mine})]
        if len(layers) < 2:
            continue
        methods: dict[str, dict[str, dict]] = {}
        for r in mine:
            methods.setdefault(str(r["method"]), {}).setdefault(r["layer"], r)
        ordered = sorted(methods, key=method_rank)
        out[str(model)] = (layers, {m: [methods[m].get(lay) for lay in layers] for m in ordered})
    return out


def across_layers(rows: list[dict], score: str, out_dir: Path) -> str | None:
    """The across-layers figure of ``score``; ``None`` where no model has two layers."""
    series = layer_series(rows)
    if not series:
        return None
    fig = Figure(figsize=(5.2 * len(series), 3.6), layout="constrained")
    axes = fig.subplots(1, len(series), squeeze=False)[0]
    for ax, (model, (layers, methods)) in zip(axes, series.items(), strict=True):
        x = np.arange(len(layers))
        for method, per_layer in methods.items():
            mean = np.array([r[score][0] if r and r.get(score) and r[score][0] is not None
                             else np.nan for r in per_layer], dtype=float)
            ci = [r.get(f"{score}_ci") if r else None for r in per_layer]
            low = np.array([c[0] if c else np.nan for c in ci], dtype=float)
            high = np.array([c[1] if c else np.nan for c in ci], dtype=float)
            (line,) = ax.plot(x, mean, marker="o", label=method)
            ax.fill_between(x, low, high, color=line.get_color(), alpha=0.18, linewidth=0)
        ax.axhline(CHANCE.get(score, 0.0), color="grey", linestyle=":", linewidth=1)
        ax.set_xticks(x, layers)
        ax.set_xlabel(f"{model} layer (forward order)")
        ax.set_ylabel(f"{LABELS.get(score, score)} (mean, 95% CI)")
        ax.set_title(f"{LABELS.get(score, score)} across {model} layers")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save(fig, out_dir, f"across_layers_{score}")


def distributions(records: list[RunRecord], out_dir: Path,
                  scores: tuple[str, ...] = ("auc", "mad")) -> list[tuple[str, str, str]]:
    """Per (model, layer): a box per method with its neurons as points, one panel per score.
    Returns ``(model, layer, png file name)``, in the order of ``records``."""
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for r in records:
        groups.setdefault((str(r.meta.get("model")), str(r.meta.get("layer"))), []).append(r)
    out = []
    rng = np.random.default_rng(0)  # jitter of the points only
    for (model, layer), recs in groups.items():
        recs = sorted(recs, key=lambda r: method_rank(r.meta.get("explainer")))
        present = [s for s in scores if any(s in row for r in recs for row in r.rows)]
        if not present:
            continue
        fig = Figure(figsize=(max(4.0, 1.3 * len(recs)) * len(present), 3.4),
                     layout="constrained")
        axes = fig.subplots(1, len(present), squeeze=False)[0]
        names = [str(r.meta.get("explainer")) for r in recs]
        for ax, score in zip(axes, present, strict=True):
            data = [np.array([row[score] for row in r.rows
                              if isinstance(row.get(score), (int, float))], dtype=float)
                    for r in recs]
            ax.boxplot([d if d.size else np.array([np.nan]) for d in data], showfliers=False,
                       widths=0.55)
            for i, d in enumerate(data, start=1):
                ax.scatter(i + rng.uniform(-0.18, 0.18, d.size), d, s=7, alpha=0.55, zorder=3)
            ax.axhline(CHANCE.get(score, 0.0), color="grey", linestyle=":", linewidth=1)
            ax.set_xticks(np.arange(1, len(names) + 1), names, rotation=20)
            ax.set_ylabel(f"per-neuron {LABELS.get(score, score)}")
            ax.set_title(f"{model} / {layer}: {LABELS.get(score, score)}")
            ax.grid(alpha=0.3, axis="y")
        out.append((model, layer, save(fig, out_dir, slug("dist", model, layer))))
    return out
