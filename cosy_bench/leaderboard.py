"""``python -m cosy_bench.leaderboard DIR``: the CoSy paper's table for every run under DIR.

One row per run, read through :class:`~cosy_bench.record.RunRecord` (the one place that
knows a run folder): model, layer, method, n neurons, AUC and MAD as mean ± std over neurons,
the 95% interval of the mean AUC, the ground-truth match where known, and what produced the
scores (generator, prompt, weights), the date and the run folder. ``--model`` / ``--layer``
filter, ``--sort auc`` ranks by a score (best first: the scorer's ``higher_is_better``). :func:`table_row`, :func:`sort_rows`
and :func:`method_rank` are shared with the report (``cosy_bench.report``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cosy_bench.record import RunRecord, find_runs

#: the order of methods in the paper's table; others follow alphabetically
METHOD_ORDER = ("invert", "clip_dissect", "milan", "falcon", "precomputed", "ground_truth",
                "random", "shuffled")
IDENTITY = ("dataset", "model", "layer", "method", "generator", "prompt", "weights", "n",
            "date", "run")


def method_rank(method) -> tuple:
    m = str(method)
    return (METHOD_ORDER.index(m), m) if m in METHOD_ORDER else (len(METHOD_ORDER), m)


def table_row(record: RunRecord) -> dict:
    """The run's identity (:attr:`RunRecord.identity`), ``(mean, std)`` of each score, the
    95% interval of each mean (``auc_ci``, ``mad_ci``, ...) and ``gt_match``;
    ``layer_rank`` orders the layers forward."""
    row = dict(record.identity)
    order = record.layer_order
    row["layer_rank"] = order.index(row["layer"]) if row["layer"] in order else len(order)
    row["higher_is_better"] = {}
    for name, stat in record.scores.items():
        row[name] = (stat["mean"], stat["std"])
        row["higher_is_better"][name] = record.higher_is_better(name)
        if stat.get("ci_low") is not None:
            row[f"{name}_ci"] = (stat["ci_low"], stat["ci_high"])
    if record.summary.get("ground_truth_match") is not None:
        row["gt_match"] = record.summary["ground_truth_match"]
    return row


def collect(root: str | Path, model: str | None = None, layer: str | None = None) -> list[dict]:
    """One row per run under ``root`` (:func:`table_row`), optionally of one model / layer."""
    rows = [table_row(RunRecord.read(folder)) for folder in find_runs(root)]
    return [r for r in rows if (model is None or r["model"] == model)
            and (layer is None or r["layer"] == layer)]


def sort_rows(rows: list[dict], by: str | None = None) -> list[dict]:
    """The paper's order (dataset, model, layer in forward order, method), or by the mean of
    score ``by``, best first (highest, or lowest for a lower-is-better score: the run's
    ``higher_is_better``), runs without it last."""
    def paper(r):
        return (str(r.get("dataset")), str(r["model"]), r.get("layer_rank", 0), str(r["layer"]),
                method_rank(r["method"]), str(r.get("generator")), str(r.get("prompt")),
                str(r.get("run")))

    rows = sorted(rows, key=paper)
    def best_first(r):
        value = r[by][0] if r.get(by) and r[by][0] is not None else None
        sign = -1.0 if r.get("higher_is_better", {}).get(by, True) else 1.0
        return (value is None, 0.0 if value is None else sign * value)

    if by is not None:
        rows = sorted(rows, key=best_first)
    return rows


def score_names(rows: list[dict]) -> set[str]:
    """The scores the rows hold (``(mean, std)`` columns; intervals left out)."""
    return {k for r in rows for k, v in r.items() if isinstance(v, tuple)
            and not k.endswith("_ci")}


def number(value: float, spec: str = ".2f") -> str:
    """``format(value, spec)`` without a negative zero: -0.0001 -> ``0.00``, not ``-0.00``
    (``+.3f``: ``+0.000`` -> ``0.000``)."""
    text = format(value, spec)
    if text.lstrip("+-").strip("0.") == "" and any(c.isdigit() for c in text):
        return text.lstrip("+-")
    return text


def fmt(value) -> str:
    if isinstance(value, tuple):
        a, b = value
        return "-" if a is None else f"{number(a)} ± {number(b)}"
    if isinstance(value, float):
        return number(value)
    return "-" if value is None else str(value)


def fmt_ci(value) -> str:
    return "-" if not value or value[0] is None else \
        f"[{number(value[0])}, {number(value[1])}]"


def columns(rows: list[dict], scorers: tuple[str, ...] = ("auc", "mad")) -> list[str]:
    """Table columns: model, layer, method, n, the scores, the AUC interval, gt_match, then
    what produced them."""
    extra = sorted(score_names(rows) - set(scorers))
    cols = ["model", "layer", "method", "n", *scorers, *extra]
    if any("auc_ci" in r for r in rows):
        cols.append("auc_ci")
    if any("gt_match" in r for r in rows):
        cols.append("gt_match")
    return [*cols, "generator", "prompt", "weights", "date", "run"]


def cell(row: dict, col: str, root: Path | None = None) -> str:
    value = row.get(col)
    if col == "auc_ci":
        return fmt_ci(value)
    if col == "date" and value:
        return str(value)[:16].replace("T", " ")
    if col == "run" and value and root is not None:
        rel = Path(value).resolve().relative_to(root.resolve()) if Path(value).resolve() \
            .is_relative_to(root.resolve()) else Path(value)
        return str(rel) if str(rel) != "." else Path(value).name
    return fmt(value)


def header(col: str, scorers: tuple[str, ...] = ("auc", "mad")) -> str:
    return {"auc_ci": "AUC 95% CI"}.get(col, col.upper() if col in scorers else col)


def format_table(rows: list[dict], scorers: tuple[str, ...] = ("auc", "mad"),
                 sort: str | None = None, root: str | Path | None = None) -> str:
    cols = columns(rows, scorers)
    root = Path(root) if root is not None else None
    table = [[header(c, scorers) for c in cols]]
    table += [[cell(r, c, root) for c in cols] for r in sort_rows(rows, sort)]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", help="a run folder or a sweep folder (e.g. multirun/)")
    parser.add_argument("--model", help="only runs of this model")
    parser.add_argument("--layer", help="only runs of this layer")
    parser.add_argument("--sort", metavar="SCORE", help="rank by this score's mean, best first (e.g. auc; a "
                        "lower-is-better score such as utest_p: lowest first)")
    args = parser.parse_args(argv)
    rows = collect(args.dir, model=args.model, layer=args.layer)
    if not rows:
        which = " ".join(f"--{k} {v}" for k, v in (("model", args.model),
                                                  ("layer", args.layer)) if v)
        print(f"no summary.json under {args.dir}" + (f" matching {which}" if which else ""))
        return 1
    if args.sort is not None and not any(args.sort in r for r in rows):
        known = sorted(score_names(rows))
        print(f"--sort {args.sort}: no run has that score; known: {', '.join(known)}")
        return 2
    print(format_table(rows, sort=args.sort, root=args.dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
