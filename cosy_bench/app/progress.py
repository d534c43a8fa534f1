"""What a sweep says while it runs and when it ends.

- :class:`SweepProgress`: one line per job started and per job finished: ``job i/n``, its
  overrides, how long it took, its mean AUC (or that it failed), the sweep's elapsed time
  and an ETA from the finished jobs (elapsed / finished x remaining: for sequential jobs,
  the mean job time times the jobs left). ``FailureListingSweeper`` drives it.
- :func:`closing_summary`: the sweep's leaderboard table, how many jobs failed (their list
  follows: ``SweepFailed``) and the report's path, or the command that writes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("cosy_bench")


def clock(seconds: float) -> str:
    """``75.3`` -> ``1:15``; ``3725`` -> ``1:02:05``."""
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class SweepProgress:
    """Progress of the ``total`` jobs of a sweep (``now``: the clock, for tests)."""

    def __init__(self, total: int, now=time.monotonic):
        self.total, self.now = total, now
        self.start = now()
        self.finished = 0
        self._began: dict[int, float] = {}

    def eta(self) -> float | None:
        """Seconds left, from the finished jobs' pace; None before the first finishes."""
        if not self.finished:
            return None
        return (self.now() - self.start) / self.finished * (self.total - self.finished)

    def started(self, num: int, overrides: Sequence[str]) -> None:
        self._began[num] = self.now()
        log.info("job %d/%d started: %s", num + 1, self.total, " ".join(overrides) or "-")

    def done(self, num: int, failed: bool, auc: float | None = None) -> str:
        """Record job ``num`` (0-based) as finished; logs and returns the progress line."""
        self.finished += 1
        took = self.now() - self._began.pop(num, self.start)
        how = "failed (listed at the end)" if failed else "done"
        score = f", mean AUC {auc:.4f}" if isinstance(auc, float) and not failed else ""
        eta = self.eta()
        left = self.total - self.finished
        tail = f"ETA {clock(eta)} for {left} more" if left and eta is not None else "all done"
        line = (f"job {num + 1}/{self.total} {how} in {clock(took)}{score} | "
                f"{self.finished}/{self.total} finished, elapsed {clock(self.now() - self.start)}"
                f", {tail}")
        (log.warning if failed else log.info)(line)
        return line


def closing_summary(sweep_dir: str | Path, report_index: Path | None, n_failed: int = 0
                    ) -> str:
    """The text that ends a sweep: its leaderboard table (every run with a summary.json
    under ``sweep_dir``), the failed jobs' count, and the report (``report_index``) or the
    command that writes it."""
    from cosy_bench.leaderboard import collect, format_table

    sweep_dir = Path(sweep_dir)
    rows = collect(sweep_dir)
    lines = [f"sweep finished: {len(rows)} run(s) with results in {sweep_dir.resolve()}"]
    if rows:
        lines += ["", format_table(rows, root=sweep_dir), ""]
    if n_failed:
        lines.append(f"{n_failed} job(s) failed: the list follows")
    if report_index is not None:
        lines.append(f"report: {Path(report_index).resolve()}")
    else:
        lines.append(f"report: python -m cosy_bench.report {sweep_dir} "
                     "(or report.write=true on the sweep's command line)")
    return "\n".join(lines)
