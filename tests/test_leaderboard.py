"""cosy_bench.leaderboard: the paper's table of every run under a folder, its columns,
order, filters and sort."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cosy_bench.leaderboard import collect, format_table
from cosy_bench.leaderboard import main as leaderboard_main

# ----------------------------------------------------------------------- leaderboard


def _summary(model, layer, method, auc, mad=None, gt=None, **run) -> dict:
    out = {"auc": {"mean": auc[0], "std": auc[1], "n": 50},
           "run": {"model": model, "layer": layer, "explainer": method, "generator": "sdxl",
                   "prompt": "p5", "n_neurons": 50, **run}}
    if mad is not None:
        out["mad"] = {"mean": mad[0], "std": mad[1], "n": 50}
    if gt is not None:
        out["ground_truth_match"] = gt
    return out


@pytest.fixture
def runs_dir(tmp_path) -> Path:
    summaries = {
        "sweep/0_a": _summary("resnet18", "avgpool", "milan", (0.61, 0.23), (0.69, 1.35)),
        "sweep/1_b": _summary("resnet18", "avgpool", "clip_dissect", (0.93, 0.11),
                              (3.85, 1.88)),
        "sweep/2_c/nested": _summary("resnet18", "avgpool", "invert", (0.934, 0.106),
                                     (3.2349, 1.72)),
        "other/3": _summary("alexnet", "fc", "invert", (0.5, 0.0), gt=1.0),
    }
    for sub, summary in summaries.items():
        (tmp_path / sub).mkdir(parents=True)
        (tmp_path / sub / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "sweep" / "multirun.yaml").write_text("noise: 1\n")
    return tmp_path


def test_leaderboard_collects_every_summary(runs_dir):
    rows = collect(runs_dir)
    assert len(rows) == 4
    assert {r["method"] for r in rows} == {"milan", "clip_dissect", "invert"}
    row = next(r for r in rows if r["method"] == "clip_dissect")
    assert row["auc"] == (0.93, 0.11) and row["mad"] == (3.85, 1.88)
    assert row["model"] == "resnet18" and row["layer"] == "avgpool" and row["n"] == 50
    assert len(collect(runs_dir / "sweep")) == 3


def test_leaderboard_table_is_the_papers(runs_dir):
    table = format_table(collect(runs_dir), root=runs_dir).splitlines()
    assert len(table) == 2 + 4  # header, rule, one row per run
    header = table[0].split()
    assert header[:6] == ["model", "layer", "method", "n", "AUC", "MAD"]
    assert set(table[1]) <= {"-", " "}
    body = table[2:]
    # sorted by model, layer, then the paper's method order
    assert [line.split()[0] for line in body] == ["alexnet", "resnet18", "resnet18", "resnet18"]
    assert [line.split()[2] for line in body] == ["invert", "invert", "clip_dissect", "milan"]
    invert = body[1]
    assert "0.93 ± 0.11" in invert and "3.23 ± 1.72" in invert
    assert "0.61 ± 0.23" in body[3] and "0.69 ± 1.35" in body[3]
    alexnet = body[0]
    assert "0.50 ± 0.00" in alexnet and " - " in alexnet + " "  # no MAD: a dash
    # then what produced the scores: generator, prompt, weights, date, run folder
    assert header[-6:] == ["gt_match", "generator", "prompt", "weights", "date", "run"]
    col = table[0].index("gt_match")
    assert alexnet[col:].startswith("1.00") and body[1][col:].startswith("-")
    assert invert.split()[-1] == "sweep/2_c/nested" and invert.split()[-6:-3] == ["sdxl", "p5", "-"]
    # columns line up
    col = table[0].index("AUC")
    assert all(line[col].isdigit() for line in body)


def test_leaderboard_command(runs_dir, capsys, tmp_path):
    assert leaderboard_main([str(runs_dir / "sweep")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 + 3
    empty = tmp_path / "empty"
    empty.mkdir()
    assert leaderboard_main([str(empty)]) == 1
    assert "no summary.json" in capsys.readouterr().out




def test_leaderboard_shows_the_interval_and_what_produced_each_row(tmp_path):
    """Smoke rows (random weights, tiny generator) and real ones must be told apart."""
    runs = {
        "a": _summary("resnet18", "fc", "invert", (0.9, 0.1), weights="IMAGENET1K_V1",
                      generator="sdxl", date="2025-01-31T12:00:00+00:00"),
        "b": _summary("resnet18", "fc", "invert", (0.5, 0.2), weights="random",
                      generator="tiny", date="2025-02-01T08:30:00+00:00"),
    }
    runs["a"]["auc"].update(ci_low=0.87, ci_high=0.93)
    for sub, summary in runs.items():
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "summary.json").write_text(json.dumps(summary))
    lines = format_table(collect(tmp_path), root=tmp_path).splitlines()
    assert "AUC 95% CI" in lines[0]
    a = next(line for line in lines if line.endswith(" a"))
    b = next(line for line in lines if line.endswith(" b"))
    assert "[0.87, 0.93]" in a and "IMAGENET1K_V1" in a and "sdxl" in a
    assert "2025-01-31 12:00" in a
    assert "random" in b and "tiny" in b and "2025-02-01 08:30" in b


def test_leaderboard_filters_and_sort(runs_dir, capsys):
    assert leaderboard_main([str(runs_dir), "--model", "resnet18", "--sort", "auc"]) == 0
    body = capsys.readouterr().out.splitlines()[2:]
    assert [line.split()[2] for line in body] == ["invert", "clip_dissect", "milan"]
    assert leaderboard_main([str(runs_dir), "--layer", "fc"]) == 0
    body = capsys.readouterr().out.splitlines()[2:]
    assert [line.split()[0] for line in body] == ["alexnet"]
    assert leaderboard_main([str(runs_dir), "--sort", "mad"]) == 0
    body = capsys.readouterr().out.splitlines()[2:]
    # by MAD, best first; the run without MAD last
    assert [line.split()[2] for line in body] == ["clip_dissect", "invert", "milan", "invert"]
    assert body[-1].split()[0] == "alexnet"
    assert leaderboard_main([str(runs_dir), "--model", "vit_b16"]) == 1
    assert "matching --model vit_b16" in capsys.readouterr().out
    assert leaderboard_main([str(runs_dir), "--sort", "nope"]) == 2
    assert "known: auc, mad" in capsys.readouterr().out
