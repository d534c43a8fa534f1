"""Failed runs leave a trace: each job's folder holds its error, a sweep runs every job and
ends with the list of the failed ones and why.

- :func:`record_failure` (called by ``cosy_bench/run.py`` around the task, in the job's own
  process, whatever the launcher): the message and traceback go to the job's ``run.log``
  and to ``error.txt`` beside it; the console gets the message once: from Hydra in a
  single run (without a traceback when the error is a :class:`UserInputError`: a missing
  or wrong input, whose message says the fix; ``HYDRA_FULL_ERROR=1`` shows it), from the
  list of failed jobs in a sweep.
- :class:`FailureListingSweeper` (``hydra.sweeper``, through
  ``hydra_plugins/cosy_bench_plugins``): Hydra's basic sweeper, except that a failed job
  does not hide the others' outcome: after all jobs it prints the failed jobs (number,
  overrides, folder, error) and raises :class:`SweepFailed` (exit status 1).
"""

from __future__ import annotations

import dataclasses
import logging
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException
from hydra.plugins.sweeper import Sweeper

from cosy_bench.app.logs import to_log_files

log = logging.getLogger("cosy_bench")
ERROR_FILE = "error.txt"


class UserInputError(CompactHydraException):
    """An input the user has to supply (its message says how): Hydra prints the message
    alone, without a traceback (that is in error.txt and run.log)."""


class SweepFailed(CompactHydraException):
    """Some jobs of a sweep failed; the message lists them (Hydra prints it, exit status 1)."""


def record_failure(output_dir: str | Path, exc: BaseException) -> Path:
    """Write ``exc`` (message and traceback) to ``output_dir/error.txt`` and the job's log
    file(s); the console gets the message. Returns the path of error.txt."""
    from cosy_bench.cache.store import write_text_atomic  # torch: not at Hydra's plugin scan

    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    message = f"{type(exc).__name__}: {exc}"
    path = Path(output_dir) / ERROR_FILE
    write_text_atomic(path, f"{message}\n\n{tb}")
    # the log files only: the console gets the message once, from Hydra (a single run) or
    # from the sweep's list of failed jobs (FailureListingSweeper)
    to_log_files(f"run failed: {message} (also in {path})\ntraceback:\n{tb}", logging.ERROR)
    return path


def _why(exc: Any) -> str:
    if isinstance(exc, BaseException):
        return f"{type(exc).__name__}: {exc}"
    return str(exc)


def failure_report(failed: Sequence[tuple[int, JobReturn]], total: int) -> str:
    """The list of failed jobs: number, overrides, folder and error of each."""
    lines = [f"{len(failed)} of {total} jobs failed:"]
    for num, ret in failed:
        folder = (ret.hydra_cfg.hydra.runtime.output_dir if ret.hydra_cfg is not None
                  else ret.working_dir)
        lines.append(f"  job {num} ({','.join(ret.overrides or [])}) in {folder}")
        lines += [f"      {line}" for line in _why(ret._return_value).splitlines()]
    return "\n".join(lines)


class _QuietLaunches(logging.Filter):
    """Drops Hydra's basic launcher's ``Launching 1 jobs locally`` / ``#3 : ...`` lines: the
    sweep's own progress names each job."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        return not (msg.startswith("Launching ") or msg.lstrip().startswith("#"))


class _CollectingLauncher:
    """Wraps a launcher: records failed jobs and hands them on as done, so that the sweeper
    goes on with every batch (Hydra's own raises at the first failure), and reports each
    job's progress (:class:`~cosy_bench.app.progress.SweepProgress`). Hydra's sequential
    basic launcher is handed one job at a time, so that progress shows between jobs; other
    launchers (submitit: jobs in parallel) get their batches whole."""

    def __init__(self, launcher, failed: list[tuple[int, JobReturn]], counter: list[int],
                 total: Callable[[], int], sweep_dir: str = "?"):
        self._launcher, self._failed, self._counter = launcher, failed, counter
        self._total, self._sweep_dir, self.progress = total, sweep_dir, None

    def _one_at_a_time(self) -> bool:
        from hydra._internal.core_plugins.basic_launcher import BasicLauncher

        return isinstance(self._launcher, BasicLauncher)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
        from cosy_bench.app.progress import SweepProgress

        if self.progress is None:
            self.progress = SweepProgress(self._total())
            log.info("sweep of %d jobs in %s", self.progress.total, self._sweep_dir)
        if self._one_at_a_time():
            quiet = _QuietLaunches()
            hydra_log = logging.getLogger("hydra._internal.core_plugins.basic_launcher")
            hydra_log.addFilter(quiet)
            try:
                results = []
                for i, overrides in enumerate(job_overrides):
                    self.progress.started(initial_job_idx + i, list(overrides))
                    results += self._collect([overrides], initial_job_idx + i)
            finally:
                hydra_log.removeFilter(quiet)
            return results
        for i, overrides in enumerate(job_overrides):
            self.progress.started(initial_job_idx + i, list(overrides))
        return self._collect(job_overrides, initial_job_idx)

    def _collect(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
        results = self._launcher.launch(job_overrides, initial_job_idx=initial_job_idx)
        self._counter[0] += len(results)
        out = []
        for i, ret in enumerate(results):
            failed = ret.status == JobStatus.FAILED
            auc = None if failed else ret._return_value
            self.progress.done(initial_job_idx + i, failed, auc)
            if failed:
                self._failed.append((initial_job_idx + i, ret))
                ret = dataclasses.replace(ret, status=JobStatus.COMPLETED, _return_value=None)
            out.append(ret)
        return out

    def __getattr__(self, name: str):
        return getattr(self._launcher, name)


def _remove_empty_dirs(folder: Path) -> None:
    """Remove the empty folders under ``folder`` and ``folder`` itself if it ends empty
    (submitit's ``.submitit/%j/`` job folders are left empty once their jobs are done)."""
    if not folder.is_dir():
        return
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), reverse=True):
        if not any(sub.iterdir()):
            sub.rmdir()
    if not any(folder.iterdir()):
        folder.rmdir()


class FailureListingSweeper(Sweeper):
    """Hydra's basic sweeper that runs every job and lists the failed ones at the end.

    It wraps a ``BasicSweeper`` rather than subclassing it: Hydra's plugin scan re-executes
    its core plugin modules, so the class must be looked up when the sweep is set up.
    """

    def __init__(self, max_batch_size: int | None = None,
                 params: dict[str, str] | None = None):
        self._kwargs = {"max_batch_size": max_batch_size, "params": params}
        self._inner = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        from hydra._internal.core_plugins import basic_sweeper

        self._inner = basic_sweeper.BasicSweeper(**self._kwargs)
        self._inner.setup(hydra_context=hydra_context, task_function=task_function,
                          config=config)

    def sweep(self, arguments: list[str]) -> Any:
        failed: list[tuple[int, JobReturn]] = []
        counter = [0]
        launcher = self._inner.launcher
        inner = self._inner
        self._inner.launcher = _CollectingLauncher(
            launcher, failed, counter,
            total=lambda: sum(len(batch) for batch in inner.overrides),  # set by its sweep()
            sweep_dir=str(inner.config.hydra.sweep.dir))
        try:
            returns = self._inner.sweep(arguments)
        finally:
            self._inner.launcher = launcher
            _remove_empty_dirs(Path(self._inner.config.hydra.sweep.dir) / ".submitit")
        if failed:
            report = failure_report(failed, counter[0])
            # Hydra calls on_multirun_end (the sweep's report and closing summary) only when
            # the sweep returns; the list of failed jobs (SweepFailed) follows the summary
            context = self._inner.hydra_context
            if context is not None and context.callbacks is not None:
                context.callbacks.on_multirun_end(config=self._inner.config, config_name=None,
                                                  n_failed=len(failed))
            raise SweepFailed(report)
        return returns
