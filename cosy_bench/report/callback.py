"""The Hydra callback that ends a sweep: its closing summary (the leaderboard table, the
failed jobs' count, the report's path or the command that writes it:
:func:`cosy_bench.app.progress.closing_summary`); ``report.write=true`` writes
``SWEEP/report/`` first, ``report.wandb=true`` also logs the W&B summary run to the sweep's
group (``conf/hydra/default.yaml`` registers it; ``conf/config.yaml`` holds the ``report``
keys)."""

from __future__ import annotations

import logging

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("cosy_bench")


class ReportCallback(Callback):
    def on_multirun_end(self, config: DictConfig, n_failed: int = 0, **kwargs) -> None:
        from cosy_bench.app.progress import closing_summary

        want = config.get("report") or {}
        sweep_dir = config.hydra.sweep.dir
        index = None
        if want.get("write") or want.get("wandb"):
            from cosy_bench.report.build import build_report

            index = build_report(sweep_dir)
            if want.get("wandb"):
                from cosy_bench.loggers import log_summary_run

                mode = config.get("logger", {}).get("mode")
                log.info("W&B summary run: %s",
                         log_summary_run(index.parent, sweep_dir, mode=mode))
        print(closing_summary(sweep_dir, index, n_failed), flush=True)
