"""``bench scaling`` at a tiny size: every method runs in its child and is extrapolated; with
``--max-memory-gb`` the explainers' work peak (resident memory above their inputs) stays
within the budget while P held whole does not."""

from __future__ import annotations

import re

from stamped import assert_stamped

from cosy_bench.bench.__main__ import main as bench_main

ROW = r"^{method}\s+(\d+)\s+{k}\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$"


def test_bench_runs_at_small_size(tmp_path, capsys):
    argv = ["scaling", "--sizes", "600,1200", "--neurons", "8", "--concepts", "10",
            "--clip-concepts", "30", "--clip-dim", "8", "--markdown", str(tmp_path / "s.md")]
    assert bench_main(argv) == 0
    out = capsys.readouterr().out
    assert_stamped(tmp_path / "s.md", argv, out, "method ")
    for method in ("scoring", "invert", "clip_dissect"):
        rows = re.findall(ROW.format(method=method, k=8), out, re.M)
        assert [int(n) for n, *_ in rows] == [600, 1200], out
        assert re.search(rf"^\s+{method}\s+K=8\s+inputs .* GB .* fits$", out, re.M), out


def test_budget_bounds_the_clip_dissect_work_peak(capsys):
    """P [20000, 1500] float32 is 0.11 GiB: held whole it exceeds a 0.04 GiB budget, in blocks
    the work stays under it (resident memory of a child process: a measurement, wide margins)."""
    argv = ["scaling", "--sizes", "20000", "--neurons", "16", "--methods", "clip_dissect",
            "--clip-concepts", "1500", "--clip-dim", "32"]
    assert bench_main(argv) == 0
    whole = re.findall(ROW.format(method="clip_dissect", k=16), capsys.readouterr().out, re.M)
    assert bench_main([*argv, "--max-memory-gb", "0.04"]) == 0
    out = capsys.readouterr().out
    blocks = re.findall(ROW.format(method="clip_dissect", k=16), out, re.M)
    assert float(whole[-1][3]) > 0.1 and float(blocks[-1][3]) <= 0.04, (whole, blocks)
