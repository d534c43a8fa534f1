"""The runs a report covers and the paper's table: every run folder under DIR with its
status (:func:`scan_runs`), one table row per run with scores
(:func:`cosy_bench.leaderboard.table_row`), written as ``leaderboard.csv`` and
``leaderboard.md``."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from cosy_bench.leaderboard import IDENTITY, cell, score_names, sort_rows, table_row
from cosy_bench.record import RESULTS, SUMMARY, RunRecord, find_runs


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
        n = record.meta.get("n_explanations", record.meta.get("n_neurons"))
        if not record.rows:
            out.append(RunStatus(folder, "partial", f"no {RESULTS} rows", record))
        elif n is not None and len(record.rows) != n:
            out.append(RunStatus(folder, "partial",
                                 f"{len(record.rows)} of {n} neurons in {RESULTS}", record))
        else:
            out.append(RunStatus(folder, "complete", "", record))
    return out


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
