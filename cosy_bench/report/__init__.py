"""The report of runs and sweeps: ``python -m cosy_bench.report DIR`` writes ``DIR/report/``
(a self-contained ``index.html`` with the paper's table, across-layers figures, per-neuron
distributions, paired method comparisons and per-neuron cards; ``leaderboard.csv|md``;
figures as PNG and SVG) and, with ``--wandb``, logs a summary run to W&B.

Modules by role: :mod:`.runs` (the runs and the table, read through ``cosy_bench.record``),
:mod:`.statistics` (paired bootstrap and Wilcoxon), :mod:`.figures` (matplotlib),
:mod:`.cards` (per-neuron cards and thumbnails), :mod:`.html` (the page), :mod:`.build`
(all of it), :mod:`.callback` (the Hydra callback that reports at the end of a sweep).
Layer 6: imports ``record``, ``leaderboard``, ``loggers`` and the layers below.
"""

from cosy_bench.report.build import build_report
from cosy_bench.report.runs import NoRunsError

__all__ = ["NoRunsError", "build_report"]
