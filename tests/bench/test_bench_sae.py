"""``python -m cosy_bench.bench sae`` at a tiny size."""

from __future__ import annotations

import json

from cosy_bench.bench.__main__ import main


def test_sae_bench_prints_time_memory_and_quality(capsys):
    assert main(["sae", "--n", "300", "--d-in", "16", "--epochs", "3"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["n"] == 300 and line["d_sae"] == 64 and line["k"] == 4
    assert line["seconds"] > 0 and line["peak_rss_mb"] > 0
    assert 0 < line["r2"] <= 1 and line["l0"] <= 4
