"""The runs a report covers and the paper's table: every run folder under DIR with its
status (through :func:`cosy_bench.record.scan_runs`), one table row per run with scores
(:func:`cosy_bench.leaderboard.table_row`), written as ``leaderboard.csv`` and
``leaderboard.md``."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from cosy_bench.leaderboard import IDENTITY, cell, score_names, sort_rows, table_row
from cosy_bench.record import RunRecord, RunStatus, scan_runs


class NoRunsError(ValueError):
    """DIR holds no run folder."""


@dataclass
class Runs:
    """What a report is made of."""

    root: Path
    statuses: list[RunStatus]
    #: runs with a readable summary (complete and partial), in the paper's order
    records: list[RunRecord]
    #: their table rows, same order
    rows: list[dict]

    @property
    def not_complete(self) -> list[RunStatus]:
        return [s for s in self.statuses if s.status != "complete"]

    def label(self, record: RunRecord) -> str:
        """A run's folder relative to the report's DIR."""
        return run_label(self.root, record.folder)


def run_label(root: Path, folder: Path | None) -> str:
    if folder is None:
        return "run"
    try:
        rel = Path(folder).resolve().relative_to(root.resolve())
    except ValueError:
        return str(folder)
    return str(rel) if str(rel) != "." else Path(folder).name


def load_runs(root: str | Path) -> Runs:
    """Every run under ``root``; :class:`NoRunsError` where there is none."""
    root = Path(root)
    statuses = scan_runs(root)
    if not statuses:
        raise NoRunsError(f"no run under {root}: a run folder holds summary.json (or, for a "
                          "failed Hydra job, .hydra/); give a run folder, a sweep folder "
                          "(multirun/DATE/TIME) or a folder of sweeps")
    pairs = [(table_row(s.record), s.record) for s in statuses if s.record is not None]
    order = {id(r): i for i, r in enumerate(sort_rows([p[0] for p in pairs]))}
    pairs.sort(key=lambda p: order[id(p[0])])
    for row, record in pairs:
        row["status"] = next(s.status for s in statuses if s.record is record)
    return Runs(root, statuses, [p[1] for p in pairs], [p[0] for p in pairs])


def leaderboard_csv(rows: list[dict]) -> str:
    """One line per run: identity, each score's mean, std and 95% interval, gt_match."""
    scores = sorted(score_names(rows), key=lambda s: (s not in ("auc", "mad"), s))
    cols = [c for c in IDENTITY if c != "n"] + ["n"]
    for s in scores:
        cols += [f"{s}_mean", f"{s}_std", f"{s}_ci_low", f"{s}_ci_high"]
    cols += ["gt_match", "status"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols)
    writer.writeheader()
    for r in rows:
        out = {c: r.get(c) for c in IDENTITY}
        for s in scores:
            mean, std = r.get(s) or (None, None)
            low, high = r.get(f"{s}_ci") or (None, None)
            out.update({f"{s}_mean": mean, f"{s}_std": std, f"{s}_ci_low": low,
                        f"{s}_ci_high": high})
        out["gt_match"], out["status"] = r.get("gt_match"), r.get("status")
        writer.writerow(out)
    return buf.getvalue()


#: the paper's table: Dataset | Model | Layer | Method | AUC | MAD, then what produced it
TABLE = [("dataset", "Dataset"), ("model", "Model"), ("layer", "Layer"), ("method", "Method"),
         ("auc", "AUC"), ("mad", "MAD"), ("auc_ci", "AUC 95% CI"), ("n", "n"),
         ("gt_match", "GT match"), ("generator", "Generator"), ("prompt", "Prompt"),
         ("weights", "Weights")]


def table_columns(rows: list[dict]) -> list[tuple[str, str]]:
    """:data:`TABLE` less the columns no row has (e.g. GT match outside the toy world)."""
    return [(k, h) for k, h in TABLE if k in IDENTITY or any(r.get(k) is not None for r in rows)]


def leaderboard_md(rows: list[dict], root: Path) -> str:
    cols = table_columns(rows) + [("run", "Run")]
    lines = ["| " + " | ".join(h for _, h in cols) + " |",
             "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(cell(r, k, root).replace("|", "\\|") for k, _ in cols)
                     + " |")
    return "\n".join(lines) + "\n"
