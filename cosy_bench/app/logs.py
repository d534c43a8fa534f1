"""What a run says, and where: third-party noise quietened, the summary table in run.log, and
a last line saying where the results are."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

log = logging.getLogger("cosy_bench")

#: loggers that speak below WARNING about nothing a user acts on
QUIET_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",   # GPU/TPU available, tips, seeds
    "lightning.pytorch.accelerators.cuda",
    "lightning.fabric.utilities.seed",
    "lightning.pytorch.utilities.model_registry",
    "transformers.tokenization_utils_base",   # "sequence length is longer than ... (> 77)"
)


class _WarningsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


class _BelowWarningFrom(logging.Filter):
    """Drops records below WARNING logged from files under one of ``packages`` (open_clip
    logs its INFO lines on the root logger, so a logger name cannot select them)."""

    def __init__(self, *packages: str):
        super().__init__()
        self.parts = tuple(f"{os.sep}{p}{os.sep}" for p in packages)

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not any(
            p in record.pathname for p in self.parts)


def quiet() -> None:
    """Quieten the third-party noise of a run (idempotent)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")  # lightning vs torch 2.14
    # conf/hydra/launcher/submitit_local.yaml restates the plugin's schema of the same name
    warnings.filterwarnings(
        "ignore", message=r"\s*'hydra/launcher/submitit_local' is validated against")
    for name in QUIET_LOGGERS:  # a filter too: a job's logging setup may reset the level
        logger = logging.getLogger(name)
        logger.setLevel(logging.WARNING)
        if not any(isinstance(f, _WarningsOnly) for f in logger.filters):
            logger.addFilter(_WarningsOnly())
    root = logging.getLogger()
    if not any(isinstance(f, _BelowWarningFrom) for f in root.filters):
        root.addFilter(_BelowWarningFrom("open_clip"))


def to_log_files(text: str, level: int = logging.INFO) -> None:
    """``text`` into the log files (run.log) of the root logger and ours, not the console."""
    record = log.makeRecord(log.name, level, __file__, 0, text, None, None)
    for logger in (logging.getLogger(), log):
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler):
                handler.handle(record)


def announce_results(table: str, output_dir: str | Path) -> None:
    """The summary table into run.log (the console has it already) and where the results are."""
    to_log_files(f"summary:\n{table}")
    log.info("results in %s (results.csv, summary.json, explanations.csv, config.yaml)",
             Path(output_dir).resolve())
