""":func:`build_report`: DIR -> ``DIR/report/`` (``index.html``, ``leaderboard.csv``,
``leaderboard.md``, ``comparisons.csv``, ``figures/*.png|svg``, ``thumbs/*.png``)."""

from __future__ import annotations

import csv
import io
import logging
import time
from datetime import datetime, timezone
from html import escape
from pathlib import Path

from cosy_bench.cache.store import write_text_atomic
from cosy_bench.record import versions
from cosy_bench.report import figures
from cosy_bench.report.cards import Thumbnails, run_cards
from cosy_bench.report.html import comparisons, page, paper_table, runs_section
from cosy_bench.report.runs import Runs, leaderboard_csv, leaderboard_md, load_runs
from cosy_bench.report.statistics import compare
from cosy_bench.report.units import side_by_side

log = logging.getLogger("cosy_bench")


def _figure(src: str, caption: str) -> str:
    svg = src.removesuffix(".png") + ".svg"
    return (f'<figure><img src="figures/{escape(src)}" alt="{escape(caption)}">'
            f'<figcaption class="muted">{escape(caption)} (<a href="figures/{escape(svg)}">'
            "SVG</a>)</figcaption></figure>")


def _comparisons_csv(items) -> str:
    rows = [c.as_row() for c in items]
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


def build_report(root: str | Path, out: str | Path | None = None, resamples: int = 2000,
                 seed: int = 0, cards: bool = True) -> Path:
    """Write the report of every run under ``root`` into ``out`` (default ``root/report``);
    returns the path of ``index.html``. Raises :class:`~cosy_bench.report.runs.NoRunsError`
    where ``root`` holds no run."""
    start = time.perf_counter()
    root = Path(root)
    out = Path(out) if out is not None else root / "report"
    runs: Runs = load_runs(root)
    out.mkdir(parents=True, exist_ok=True)
    fig_dir = out / "figures"

    write_text_atomic(out / "leaderboard.csv", leaderboard_csv(runs.rows))
    write_text_atomic(out / "leaderboard.md", leaderboard_md(runs.rows, root))
    comps = compare(runs.records, resamples=resamples, seed=seed)
    write_text_atomic(out / "comparisons.csv", _comparisons_csv(comps))

    body = [f"<h1>CoSy report: {escape(str(root))}</h1>",
            f'<p class="muted">{len(runs.statuses)} run folders, {len(runs.records)} with '
            f"scores (<a href=\"#runs\">runs, their configs and status</a>); written "
            f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} by "
            + ", ".join(f"{escape(k)} {escape(str(v))}" for k, v in versions().items())
            + ". AUC and MAD: mean ± std over neurons; intervals: 95%.</p>"]
    if runs.not_complete:
        body.append('<p class="bad">Not complete: ' + ", ".join(
            f"{escape(str(s.folder.name))} ({escape(s.status)})" for s in runs.not_complete)
            + " (see Runs).</p>")
    body += ["<h2>The paper's table</h2>", paper_table(runs) if runs.rows else
             '<p class="bad">no run has scores.</p>',
             '<p class="muted">also as <a href="leaderboard.csv">leaderboard.csv</a> and '
             '<a href="leaderboard.md">leaderboard.md</a>.</p>']

    if cards:  # right after the table: the first screen shows the evidence
        thumbs = Thumbnails(out)
        body.append("<h2>Neurons</h2><p class=muted>Per run (click to fold or open): each "
                    "neuron's explanation, scores (AUC with DeLong's 95% CI), up to 8 "
                    "synthetic images and its top-8 control images by activation. The first "
                    "run's cards are open.</p>")
        body += [run_cards(r, runs.label(r), thumbs, open_=i == 0)
                 for i, r in enumerate(runs.records)]

    body.append(side_by_side(runs.records))  # '' where no layer has both kinds of units
    across = [(s, figures.across_layers(runs.rows, s, fig_dir)) for s in ("auc", "mad")]
    across = [(s, f) for s, f in across if f]
    if across:
        body.append("<h2>Across layers</h2>")
        body += [_figure(f, f"{s.upper()} across layers (mean over neurons, band: 95% CI of "
                         "the mean), one line per method") for s, f in across]

    body.append("<h2>Method comparison</h2><p class=muted>Mean paired difference over the "
                f"neurons both methods scored, with a seeded bootstrap 95% CI ({resamples} "
                "resamples) and the Wilcoxon signed-rank p-value; * = significant (CI "
                'excludes 0 and p &lt; 0.05). All pairs in <a href="comparisons.csv">'
                "comparisons.csv</a>.</p>")
    for score in dict.fromkeys(c.score for c in comps) or ("auc", "mad"):
        lower = any(c.score == score and not c.higher_is_better for c in comps)
        body.append(f"<h3>{escape(score.upper())}{' (lower is better)' if lower else ''}</h3>"
                    + comparisons(comps, score))

    dists = figures.distributions(runs.records, fig_dir)
    if dists:
        body.append("<h2>Distributions over neurons</h2>")
        body += [_figure(f, f"{m} / {lay}: per-neuron AUC and MAD of each method")
                 for m, lay, f in dists]

    body += ['<h2 id="runs">Runs</h2>', runs_section(runs, versions())]

    index = out / "index.html"
    write_text_atomic(index, page(f"CoSy report: {root}", "".join(body)))
    log.debug("report: %d runs -> %s in %.1f s", len(runs.statuses), index,
              time.perf_counter() - start)
    return index
