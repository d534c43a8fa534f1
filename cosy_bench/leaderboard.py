"""``python -m cosy_bench.leaderboard DIR``: the CoSy paper's table for every run under DIR."""

from __future__ import annotations

import argparse
from pathlib import Path

from cosy_bench.record import RunRecord, find_runs


def collect(root: str | Path) -> list[dict]:
    """One row per run under ``root``: model, layer, method and the scores."""
    rows = []
    for folder in find_runs(root):
        record = RunRecord.read(folder)
        summary, meta = record.summary, record.meta
        row = {"model": meta.get("model"), "layer": meta.get("layer"),
               "method": meta.get("explainer"), "generator": meta.get("generator"),
               "prompt": meta.get("prompt"), "n": meta.get("n_neurons"), "run": str(folder)}
        for name, stat in summary.items():
            if isinstance(stat, dict) and "mean" in stat:
                row[name] = (stat["mean"], stat["std"])
        if summary.get("ground_truth_match") is not None:
            row["gt_match"] = summary["ground_truth_match"]
        rows.append(row)
    return rows


def _fmt(value) -> str:
    if isinstance(value, tuple):
        mean, std = value
        return "-" if mean is None else f"{mean:.2f} ± {std:.2f}"
    if isinstance(value, float):
        return f"{value:.2f}"
    return "-" if value is None else str(value)


def format_table(rows: list[dict], scorers: tuple[str, ...] = ("auc", "mad")) -> str:
    extra = sorted({k for r in rows for k, v in r.items() if isinstance(v, tuple)} - set(scorers))
    cols = ["model", "layer", "method", "n", *scorers, *extra]
    if any("gt_match" in r for r in rows):
        cols.append("gt_match")
    table = [[c.upper() if c in scorers else c for c in cols]]
    rows = sorted(rows, key=lambda r: (str(r["model"]), str(r["layer"]), str(r["method"])))
    table += [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dir", help="a run folder or a sweep folder (e.g. multirun/)")
    args = parser.parse_args(argv)
    rows = collect(args.dir)
    if not rows:
        print(f"no summary.json under {args.dir}")
        return 1
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
