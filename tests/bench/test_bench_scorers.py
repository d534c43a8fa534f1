"""``bench scorers`` at a small size: the sorted-control rows run and agree with score_all."""

from __future__ import annotations

import re

from stamped import assert_stamped

from cosy_bench.bench.__main__ import main as bench_main


def test_sorted_rows_run_and_agree(capsys):
    argv = ["scorers", "--neurons", "6", "--control", "400", "--concept", "9", "--repeats", "1",
            "--utest"]
    assert bench_main(argv) == 0
    out = capsys.readouterr().out
    for label in ("score_all (cold: sorts, then searches)", "cold: sort_control", "warm: score_sorted"):
        row = next(line for line in out.splitlines() if line.startswith(label))
        diff = float(row.split()[-1])
        assert diff <= 1e-12, row
        assert re.search(r"\d+\.\dx", row), row  # a speed-up against the loop is printed


def test_markdown_file_holds_the_stamp_and_the_table(tmp_path, capsys):
    argv = ["scorers", "--neurons", "4", "--control", "200", "--concept", "5", "--repeats", "1",
            "--markdown", str(tmp_path / "scorers.md")]
    assert bench_main(argv) == 0
    assert_stamped(tmp_path / "scorers.md", argv, capsys.readouterr().out, "score    reference")
