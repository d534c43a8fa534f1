"""``bench rounds`` at a small size in the toy world: auto vs fixed, the table and the total."""

from __future__ import annotations

import re

from cosy_bench.bench.__main__ import main as bench_main


def test_bench_runs_at_small_size(tmp_path, capsys):
    argv = ["rounds", "--layers", "concepts", "--explainers", "ground_truth,random",
            "--max", "6", "--round", "3", "--cache", str(tmp_path / "cache"),
            "--extra", "dataset.n=300", "neurons.ids=[0,3,7]"]
    assert bench_main(argv) == 0
    out = capsys.readouterr().out
    row = re.search(r"^concepts\s+ground_truth\s+3\s+(\d+)\s+18\s", out, re.M)
    assert row and int(row.group(1)) in (9, 12, 15, 18), out
    assert re.search(r"^concepts\s+random\s+3\s+\d+\s+18\s", out, re.M), out
    assert "ranking auto ground_truth > random" in out
    assert re.search(r"^total: \d+ images with auto vs 36 fixed", out, re.M), out
