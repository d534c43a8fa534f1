"""``bench synthesis`` at a reduced size on the CPU: both ways run and give the same images."""

from __future__ import annotations

from cosy_bench.bench.__main__ import main as bench_main


def test_bench_runs_at_reduced_size(capsys):
    argv = ["synthesis", "--size", "128", "--steps", "2", "--images", "2", "--batch", "2",
            "--scale", "16", "--device", "cpu"]
    assert bench_main(argv) == 0
    out = capsys.readouterr().out
    assert "authors (1 prompt/call)" in out and "cosy_bench (batch 2)" in out
    line = next(x for x in out.splitlines() if x.startswith("speed-up"))
    max_diff = float(line.split("differ by max ")[1].split(",")[0])
    assert max_diff <= 2.0  # same seeds: float rounding only
