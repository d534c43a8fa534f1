"""Where a run's results go besides its folder: Weights & Biases, or nowhere remote.

Each run logs, under stable names, so that the W&B runs table is the leaderboard:

* config: ``model``, ``layer`` (resolved: the model's default where the config says none),
  ``explainer``, ``generator``, ``prompt``, ``weights``, ``dataset``, ``n_images``, ``seed``
  (group and filter by them) and the whole resolved config under ``cfg``;
* summary: ``auc/mean``, ``auc/std``, ``auc/n``, ``auc/ci_low``, ``auc/ci_high`` (and the
  same for every score), ``ground_truth_match``, and the run block under ``run/...``
  (``run/n_control``, ``run/images_generated``, ``run/control_skipped``, ...);
* ``neurons``: the per-neuron table with image columns ``synthetic`` (a grid of up to 8 of
  the neuron's synthetic images) and ``top_control`` (its top-8 control images);
  ``auc/histogram``: the per-neuron AUC histogram; ``images``: a few images per concept.

Runs of one sweep share a ``group`` (:func:`sweep_group`: the sweep folder's date and time).
:func:`log_summary_run` logs one more run to that group after a sweep: the leaderboard table
and the across-layers plots (``python -m cosy_bench.report DIR --wandb``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import OmegaConf

from cosy_bench.record import N_TOP, RunRecord, find_runs

log = logging.getLogger("cosy_bench")

#: flat config keys of a run (``run`` block names), for grouping and filtering in W&B
CONFIG_KEYS = ("model", "layer", "explainer", "generator", "generator_option", "prompt",
               "weights", "dataset", "n_images", "seed")
TILE = 64  # px of one image in a table grid


def sweep_group(sweep_dir: str | Path) -> str:
    """The W&B group of a sweep: its folder's last two names, ``multirun/2025-01-31/12-00-00``
    -> ``2025-01-31_12-00-00`` (date and time: sweeps of different days do not collide)."""
    path = Path(sweep_dir)
    return "_".join(p for p in (path.parent.name, path.name) if p) or str(sweep_dir)


def _settings():
    import wandb

    # no banner: cosy_bench prints its own summary; errors still show
    return wandb.Settings(silent=True, quiet=True, show_info=False)


def _grid(images: list) -> object | None:
    """Up to 8 PIL images side by side in 2 rows of 4 (``TILE`` px each), or ``None``."""
    from PIL import Image

    images = [im for im in images if im is not None][:8]
    if not images:
        return None
    cols = min(4, len(images))
    rows = (len(images) + cols - 1) // cols
    grid = Image.new("RGB", (cols * TILE, rows * TILE), (255, 255, 255))
    for i, im in enumerate(images):
        tile = im.convert("RGB")
        tile.thumbnail((TILE, TILE))
        grid.paste(tile, ((i % cols) * TILE, (i // cols) * TILE))
    return grid


def _synthetic_images(record: RunRecord) -> dict[str, list]:
    from PIL import Image

    out: dict[str, list] = {}
    for it in record.images:
        path = Path(str(it["path"]))
        if path.is_file():
            with Image.open(path) as im:
                out.setdefault(str(it["concept"]), []).append(im.convert("RGB"))
    return out


def neuron_table(record: RunRecord):
    """The per-neuron ``wandb.Table``: the run's ``results.csv`` columns plus the image
    columns ``synthetic`` and ``top_control`` (``None`` where no image could be had)."""
    import wandb

    synthetic = {c: _grid(ims) for c, ims in _synthetic_images(record).items()}
    top: dict[int, list] = {}
    for row in sorted(record.top_control, key=lambda r: (int(r["neuron"]), int(r["rank"]))):
        top.setdefault(int(row["neuron"]), []).append(row)
    cols = list(record.rows[0]) if record.rows else []
    data = []
    for r in record.rows:
        syn = synthetic.get(str(r.get("explanation")))
        ctl = _grid([record.control_image(t) for t in top.get(int(r["neuron"]), [])[:N_TOP]])
        data.append([r[c] for c in cols] + [wandb.Image(syn) if syn else None,
                                            wandb.Image(ctl) if ctl else None])
    return wandb.Table(columns=[*cols, "synthetic", "top_control"], data=data)


class NoLogger:
    """``logger=none``: nothing is logged remotely."""

    name = "none"

    def log_run(self, cfg, record, output_dir: Path, group: str | None = None) -> None:
        return None


class WandbLogger:
    """Logs one run (module docstring). ``mode`` ``offline`` needs no network
    (``WANDB_MODE=offline`` works too)."""

    name = "wandb"

    def __init__(self, project: str = "cosy_bench", entity: str | None = None,
                 mode: str | None = None, images_per_concept: int = 4, tags: list | None = None):
        self.project, self.entity, self.mode = project, entity, mode
        self.images_per_concept = images_per_concept
        self.tags = list(tags or [])

    def log_run(self, cfg, record: RunRecord, output_dir: Path, group: str | None = None):
        """Log one run's :class:`~cosy_bench.record.RunRecord`."""
        import wandb

        meta = record.meta
        config = {k: meta.get(k) for k in CONFIG_KEYS}
        config["cfg"] = OmegaConf.to_container(cfg, resolve=True)
        run = wandb.init(project=self.project, entity=self.entity, mode=self.mode,
                         dir=str(output_dir), group=group, tags=self.tags,
                         name=f"{meta['model']}-{meta['layer']}-{meta['explainer']}",
                         config=config, reinit="finish_previous", settings=_settings())
        try:
            for name, stat in record.scores.items():
                if stat.get("mean") is None:
                    continue
                for key in ("mean", "std", "n", "ci_low", "ci_high"):
                    if stat.get(key) is not None:
                        run.summary[f"{name}/{key}"] = stat[key]
            if record.summary.get("ground_truth_match") is not None:
                run.summary["ground_truth_match"] = record.summary["ground_truth_match"]
            units = record.summary.get("units") or {}  # units=sae: its dictionary's figures
            for key, value in {**units, **{f"sae/{k}": v for k, v in
                                           (units.get("sae") or {}).items()}}.items():
                if isinstance(value, (int, float, str)) and value is not None:
                    run.summary[f"units/{key}"] = value
            for key, value in meta.items():
                if key not in CONFIG_KEYS and isinstance(value, (bool, int, float, str)):
                    run.summary[f"run/{key}"] = value
            logged = {"neurons": neuron_table(record)}
            aucs = [r["auc"] for r in record.rows if isinstance(r.get("auc"), float)]
            if aucs:
                logged["auc/histogram"] = wandb.Histogram(aucs, num_bins=20)
            images = []
            for concept, its in record.items.items():
                for it in its[: self.images_per_concept]:
                    if Path(it.path).exists():
                        images.append(wandb.Image(it.path, caption=f"{concept} #{it.index}"))
            if images:  # W&B keeps at most MAX_ITEMS of a list (and warns per list)
                most = getattr(wandb.Image, "MAX_ITEMS", len(images))
                logged["images"] = images[:most]
            run.log(logged)
            return run
        finally:
            run.finish()


def auto_logger(**wandb_kwargs):
    """``logger=auto``: W&B where ``WANDB_API_KEY`` is set (said at the run's start), else
    nothing remote. ``WANDB_MODE=offline`` alone does not switch logging on (it is a mode
    of W&B, not a choice to log; ``logger=wandb`` logs offline with it): said at start."""
    if os.environ.get("WANDB_API_KEY"):
        log.info("W&B logging on: logger=auto and WANDB_API_KEY is set (logger=none: off)")
        return WandbLogger(**wandb_kwargs)
    if os.environ.get("WANDB_MODE") in ("offline", "dryrun"):
        log.info("W&B logging off: WANDB_MODE=%s is set, but logger=auto logs only with "
                 "WANDB_API_KEY; logger=wandb logs this run offline",
                 os.environ["WANDB_MODE"])
    return NoLogger()


def log_summary_run(report_dir: str | Path, root: str | Path | None = None,
                    mode: str | None = None) -> Path:
    """After a sweep: one W&B run in the sweep's group (:func:`sweep_group` of ``root``,
    default the report folder's parent) holding the leaderboard table (``leaderboard.csv``
    of the report) and the across-layers plots, as images and as ``line_series`` charts.
    Project and entity come from the runs' ``logger`` config. Returns the run's folder."""
    import csv

    import wandb

    from cosy_bench.leaderboard import collect, method_rank, sort_rows

    report_dir = Path(report_dir)
    root = Path(root) if root is not None else report_dir.parent
    with open(report_dir / "leaderboard.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    folders = find_runs(root)
    logger_cfg = RunRecord.read(folders[0]).cfg.get("logger", {}) if folders else {}
    (report_dir / "wandb").mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=logger_cfg.get("project") or "cosy_bench",
                     entity=logger_cfg.get("entity"), mode=mode or logger_cfg.get("mode"),
                     dir=str(report_dir), group=sweep_group(root), job_type="report",
                     name=f"report-{sweep_group(root)}", config={"dir": str(root),
                                                                 "n_runs": len(rows)},
                     reinit="finish_previous", settings=_settings())
    try:
        cols = list(rows[0]) if rows else []
        table = wandb.Table(columns=cols, data=[[_value(r[c]) for c in cols] for r in rows])
        logged: dict = {"leaderboard": table}
        for png in sorted((report_dir / "figures").glob("across_layers_*.png")):
            logged[f"figures/{png.stem}"] = wandb.Image(str(png))
        board = sort_rows(collect(root))
        for model in dict.fromkeys(r["model"] for r in board):
            mine = [r for r in board if r["model"] == model]
            layers = [lay for _, lay in sorted({(r["layer_rank"], r["layer"]) for r in mine})]
            if len(layers) < 2:
                continue
            methods = sorted({str(r["method"]) for r in mine}, key=method_rank)
            for score in ("auc", "mad"):
                ys = [[next((r[score][0] for r in mine if str(r["method"]) == m and
                             r["layer"] == lay and r.get(score)), float("nan"))
                       for lay in layers] for m in methods]
                logged[f"across_layers/{model}/{score}"] = wandb.plot.line_series(
                    xs=list(range(len(layers))), ys=ys, keys=methods,
                    title=f"{score.upper()} across {model} layers ({', '.join(layers)})",
                    xname="layer index (forward order)")
        run.log(logged)
        return Path(run.dir).parent
    finally:
        run.finish()


def _value(text: str):
    """A leaderboard.csv cell typed: integers (``n``) as int, other numbers as float,
    empty as None."""
    if text == "":
        return None
    if text.lstrip("-").isdigit():  # counts (n) stay integers
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text
