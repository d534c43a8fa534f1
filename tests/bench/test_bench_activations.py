"""``bench activations`` at a small size: both paths run on the made JPEGs and agree."""

from __future__ import annotations

import re

from stamped import assert_stamped

from cosy_bench.bench.__main__ import main as bench_main
from cosy_bench.bench.activations import make_jpegs


def test_jpegs_are_seeded_and_made_once(tmp_path):
    first = make_jpegs(tmp_path / "a", 3, [(120, 90)], seed=1)
    again = make_jpegs(tmp_path / "a", 3, [(120, 90)], seed=1)
    other = make_jpegs(tmp_path / "b", 3, [(120, 90)], seed=1)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in other]
    assert first == again and first[2].stat().st_size > 1000


def test_bench_runs_at_small_size(tmp_path, capsys):
    argv = ["activations", "--images", "6", "--sizes", "600x400,300x260", "--layers",
            "layer1,avgpool", "--batch-size", "4", "--workers", "0", "--folder",
            str(tmp_path / "jpegs"), "--markdown", str(tmp_path / "activations.md")]
    assert bench_main(argv) == 0
    out = capsys.readouterr().out
    assert_stamped(tmp_path / "activations.md", argv, out, "layer    path")
    assert "reduced vs full JPEG decoding" in out and "re-encoded as JPEG q90" in out
    rows = [line for line in out.splitlines() if re.match(r"(layer1|avgpool)\s+cosy_bench", line)]
    assert len(rows) == 2
    for row in rows:
        assert float(row.split()[-1]) < 1.0  # activations within a fraction of their spread


def test_bench_decode_gpu_runs_on_the_cpu_device(tmp_path, capsys):
    argv = ["activations", "--images", "4", "--sizes", "500x375,1024x768", "--layers",
            "avgpool", "--batch-size", "4", "--workers", "0", "--decode", "gpu", "--device",
            "cpu", "--folder", str(tmp_path / "jpegs")]
    assert bench_main(argv) == 0
    out = capsys.readouterr().out
    assert "decode=gpu" in out and "reduced vs full" not in out
    line = next(x for x in out.splitlines() if "decode_jpeg + tensor transform on cpu" in x)
    worst = float(re.search(r"max \|diff\| ([0-9.]+)", line).group(1))
    assert worst <= 1.0  # one 0-255 level at most (a uint8 resize's rounding)
    row = next(x for x in out.splitlines() if re.match(r"avgpool\s+cosy_bench", x))
    assert float(row.split()[-1]) < 0.05  # activations: a small fraction of their spread
