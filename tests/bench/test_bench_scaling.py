"""``bench scaling`` at a tiny size: every method runs in its child and is extrapolated."""

from __future__ import annotations

import re

from cosy_bench.bench.__main__ import main as bench_main


def test_bench_runs_at_small_size(capsys):
    argv = ["scaling", "--sizes", "600,1200", "--neurons", "8", "--concepts", "10",
            "--clip-concepts", "30", "--clip-dim", "8"]
    assert bench_main(argv) == 0
    out = capsys.readouterr().out
    for method in ("scoring", "invert", "clip_dissect"):
        rows = re.findall(rf"^{method}\s+(\d+)\s+8\s+([\d.]+)\s+([\d.]+)$", out, re.M)
        assert [int(n) for n, _, _ in rows] == [600, 1200], out
        assert re.search(rf"^\s+{method}\s+K=8\s+[\d.]+ GB .* fits$", out, re.M), out
