"""The Hydra callback that reports a sweep when it ends: ``report.write=true`` writes
``SWEEP/report/``, ``report.wandb=true`` also logs the W&B summary run to the sweep's group
(``conf/hydra/default.yaml`` registers it; ``conf/config.yaml`` holds the ``report`` keys)."""

from __future__ import annotations

import logging

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("cosy_bench")


class ReportCallback(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        want = config.get("report") or {}
        if not (want.get("write") or want.get("wandb")):
            return
        from cosy_bench.report.build import build_report

        sweep_dir = config.hydra.sweep.dir
        index = build_report(sweep_dir)
        print(f"report written to {index}")
        if want.get("wandb"):
            from cosy_bench.loggers import log_summary_run

            mode = config.get("logger", {}).get("mode")
            log.info("W&B summary run: %s", log_summary_run(index.parent, sweep_dir, mode=mode))
