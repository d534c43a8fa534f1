"""Where a run's results go besides its folder: Weights & Biases, or nowhere remote."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import OmegaConf

log = logging.getLogger("cosy_bench")


class NoLogger:
    """``logger=none``: nothing is logged remotely."""

    name = "none"

    def log_run(self, cfg, record, output_dir: Path, group: str | None = None) -> None:
        return None


class WandbLogger:
    """Logs the config, the summary metrics, the per-neuron table and a few generated images
    per concept. Runs of one sweep share a ``group`` so the W&B runs table is the leaderboard.
    ``mode`` ``offline`` needs no network (``WANDB_MODE=offline`` works too)."""

    name = "wandb"

    def __init__(self, project: str = "cosy_bench", entity: str | None = None,
                 mode: str | None = None, images_per_concept: int = 4, tags: list | None = None):
        self.project, self.entity, self.mode = project, entity, mode
        self.images_per_concept = images_per_concept
        self.tags = list(tags or [])

    def log_run(self, cfg, record, output_dir: Path, group: str | None = None):
        """Log one run's :class:`~cosy_bench.record.RunRecord`."""
        import wandb

        meta = record.meta
        run = wandb.init(project=self.project, entity=self.entity, mode=self.mode,
                         dir=str(output_dir), group=group, tags=self.tags,
                         name=f"{meta['model']}-{meta['layer']}-{meta['explainer']}",
                         config=OmegaConf.to_container(cfg, resolve=True), reinit="finish_previous")
        try:
            for name, stat in record.summary.items():
                if isinstance(stat, dict) and stat.get("mean") is not None:
                    run.summary[f"{name}/mean"] = stat["mean"]
                    run.summary[f"{name}/std"] = stat["std"]
                    run.summary[f"{name}/n"] = stat["n"]
            if record.summary.get("ground_truth_match") is not None:
                run.summary["ground_truth_match"] = record.summary["ground_truth_match"]
            cols = list(record.rows[0]) if record.rows else []
            table = wandb.Table(columns=cols, data=[[r[c] for c in cols] for r in record.rows])
            images = []
            for concept, its in record.items.items():
                for it in its[: self.images_per_concept]:
                    if Path(it.path).exists():
                        images.append(wandb.Image(it.path, caption=f"{concept} #{it.index}"))
            run.log({"neurons": table, **({"images": images} if images else {})})
            return run
        finally:
            run.finish()


def auto_logger(**wandb_kwargs):
    """W&B where a key is set (or ``WANDB_MODE=offline``), else nothing remote."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") in ("offline", "dryrun"):
        return WandbLogger(**wandb_kwargs)
    return NoLogger()
