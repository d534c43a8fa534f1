"""``python -m cosy_bench.report DIR [--out OUT] [--wandb]``."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from cosy_bench.report.build import build_report
from cosy_bench.report.runs import NoRunsError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cosy_bench.report",
        description="Write DIR/report/index.html: the paper's table, figures, comparisons and "
                    "per-neuron cards of every run under DIR (a run, a sweep, or sweeps).")
    parser.add_argument("dir", help="a run folder, a sweep folder (multirun/DATE/TIME) or a "
                                    "folder of sweeps")
    parser.add_argument("--out", help="report folder (default DIR/report)")
    parser.add_argument("--wandb", action="store_true",
                        help="also log a summary run (leaderboard table, across-layers plots) "
                             "to the sweep's W&B group")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--no-cards", action="store_true", help="leave out per-neuron cards")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    try:
        index = build_report(args.dir, args.out, resamples=args.resamples, seed=args.seed,
                             cards=not args.no_cards)
    except (NoRunsError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"report written to {index} in {time.perf_counter() - start:.1f} s")
    if args.wandb:
        from cosy_bench.loggers import log_summary_run

        run_dir = log_summary_run(index.parent)
        print(f"W&B summary run logged ({run_dir})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
