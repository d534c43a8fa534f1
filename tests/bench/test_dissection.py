"""``bench explainers``' NetDissect and CompExp rows (cosy_bench/bench/dissection.py) at a tiny
size: the rows are printed, the vectorised tally equals NetDissect-Lite's loop, CompExp finds
the planted labels; with few labels too (the probe's categories draw from disjoint label
ranges, so no pixel holds a label twice)."""

from __future__ import annotations

import re

import pytest
from stamped import assert_stamped

from cosy_bench.bench.__main__ import main as bench_main

NUM = r"[\d,]+(?:\.\d+)?"


def test_netdissect_and_compexp_rows_at_a_tiny_size(tmp_path, capsys):
    argv = ["explainers", "--skip-invert", "--skip-clip", "--dissect-images", "100",
            "--dissect-neurons", "6", "--dissect-concepts", "200", "--dissect-timed-images", "20",
            "--mask-size", "16", "--compexp-units", "3", "--compexp-images", "80",
            "--markdown", str(tmp_path / "explainers.md")]
    assert bench_main(argv) == 0
    out = capsys.readouterr().out
    assert_stamped(tmp_path / "explainers.md", argv, out, "NetDissect: probe 100 images")
    lines = out.splitlines()

    assert "NetDissect: probe 100 images, K=6 units, C=200 labels, masks 16x16" in lines, out
    assert re.search(rf"^  vectorised tally: {NUM} ms/image on 20 images; EXTRAPOLATED to 100 "
                     rf"images: {NUM} s$", out, re.M), out
    lite = re.search(rf"^  NetDissect-Lite per-unit loop: {NUM} ms per image and unit; "
                     rf"EXTRAPOLATED to 100 x 6: {NUM} s \(({NUM})x\); max \|count diff\| on "
                     r"the subset: (\S+)$", out, re.M)
    assert lite, out
    assert float(lite.group(2)) == 0.0  # the vectorised counts equal the loop's

    # 80 images of 16 x 16 pixels; K * (C + 2 * B * 3C) = 6 * (200 + 6000) candidates
    assert "CompExp: 80 images x 16x16 = 20,480 pixels, C=200 labels, length 3, beam 5" in lines
    beam = re.search(rf"^  shared beam search: {NUM} s/unit \(3 units on 80 images, scaled to "
                     rf"100\); EXTRAPOLATED to K=6: {NUM} s \(planted label in the formula: "
                     r"(\d+)/3\)$", out, re.M)
    assert beam and beam.group(1) == "3", out
    assert re.search(rf"^  per-candidate formula \+ IoU \(numpy\): {NUM} ms; EXTRAPOLATED to "
                     rf"K\*\(C \+ 2\*B\*3C\) = 37,200 candidates: {NUM} s \({NUM}x\)$", out,
                     re.M), out


def test_skipping_both_rows_prints_neither(capsys):
    argv = ["explainers", "--skip-invert", "--skip-clip", "--skip-netdissect", "--skip-compexp"]
    assert bench_main(argv) == 0
    out = capsys.readouterr().out
    assert "NetDissect" not in out and "CompExp" not in out


def test_few_labels_count_like_the_loop_and_too_few_are_refused(capsys):
    argv = ["explainers", "--skip-invert", "--skip-clip", "--dissect-images", "40",
            "--dissect-neurons", "4", "--dissect-concepts", "12", "--dissect-timed-images", "16",
            "--mask-size", "16", "--compexp-units", "3", "--compexp-images", "40"]
    assert bench_main(argv) == 0  # 1: a count differs from the loop's, or a label was missed
    assert re.search(r"max \|count diff\| on the subset: 0(\.0)?$", capsys.readouterr().out,
                     re.M)
    with pytest.raises(ValueError, match="--dissect-concepts must be at least 4"):
        bench_main([*argv[:8], "3", *argv[9:]])


def test_every_listed_bench_runs_and_helper_modules_are_not_listed():
    """``python -m cosy_bench.bench NAME``: every NAME it lists has a ``main``; the helper
    module ``dissection`` (rows of ``bench explainers``) is not offered as a bench."""
    import importlib

    from cosy_bench.bench.__main__ import available

    names = available()
    assert "dissection" not in names and {"scorers", "faults", "standins"} <= set(names)
    assert all(callable(getattr(importlib.import_module(f"cosy_bench.bench.{n}"), "main", None))
               for n in names)
