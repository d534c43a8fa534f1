"""cosy_bench.record: the summary, the run folder's files and reading them back (DeLong
intervals, mean intervals, top control images, typed explainer columns, run status), and the
acceptance sweep (4 runs, then the leaderboard prints 4 rows)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CONF, HAS_TOY_MODEL, record_by_hand

from cosy_bench.record import RunRecord, RunResult, names_concept, summarize

# ------------------------------------------------------------------------- summaries


def test_summarize_mean_std_n():
    stat = summarize(torch.tensor([0.5, 1.0, 0.0]), 0.95)
    assert stat["n"] == 3
    assert stat["mean"] == pytest.approx(0.5)
    assert stat["std"] == pytest.approx(np.std([0.5, 1.0, 0.0]))  # ddof 0, as README says
    # non-finite values are left out of the statistics (and not counted)
    stat = summarize(torch.tensor([1.0, float("nan"), 3.0]), 0.95)
    t = 12.706204736174694  # Student t quantile 0.975 with 1 degree of freedom
    assert {k: stat[k] for k in ("mean", "std", "n")} == {"mean": 2.0, "std": 1.0, "n": 2}
    # the mean's 95% interval over neurons: t * sd(ddof 1) / sqrt(n) = t * sqrt(2) / sqrt(2)
    assert stat["ci_low"] == pytest.approx(2.0 - t) and stat["ci_high"] == pytest.approx(2.0 + t)
    assert summarize(torch.tensor([]), 0.95) == {"mean": None, "std": None, "n": 0, "ci_low": None,
                                                 "ci_high": None}


def test_names_concept():
    assert names_concept("Red Circles", "red circle")
    assert names_concept("striped red circle", "red circle")
    assert not names_concept("red square", "red circle")
    assert not names_concept("anything", "")


def test_names_concept_ignores_negated_terms():
    # a concept after NOT is what the unit does not fire on: it does not name the concept
    assert not names_concept("circle AND NOT red", "red")
    assert not names_concept("NOT red", "red")
    assert not names_concept("(circle OR square) AND NOT red", "red")
    assert not names_concept("circle AND NOT (red OR blue)", "blue")
    assert not names_concept("circle AND NOT dark red", "dark red")
    # the positive terms still count, before and after a negated one
    assert names_concept("red AND NOT circle", "red")
    assert names_concept("(circle AND NOT square) OR red", "red")
    assert names_concept("square AND NOT (red OR blue) AND circle", "circle")
    assert names_concept("((dog OR cat) AND grass) OR NOT sky", "grass")
    # a free-text (lower-case) "not" is an ordinary word
    assert names_concept("not red", "red")


def test_report_writes_its_files_and_prints_the_table(tmp_path, capsys):
    report = record_by_hand(tmp_path)
    out = tmp_path / "run"
    report.write(out)
    printed = capsys.readouterr().out
    assert "CoSy results: resnet18 / output / ground_truth" in printed
    assert "0.6000 ±" in printed  # auc mean
    summary = json.loads((out / "summary.json").read_text())
    assert summary["auc"]["mean"] == pytest.approx(0.6)
    assert summary["mad"]["n"] == 3
    assert summary["ground_truth_match"] == pytest.approx(2 / 3)
    assert summary["run"]["n_control"] == 16 and summary["run"]["images_generated"] == 4
    lines = (out / "results.csv").read_text().splitlines()
    assert lines[0] == "neuron,rank,explanation,ground_truth,auc,auc_ci_low,auc_ci_high,mad"
    assert lines[3].startswith("2,1,goldfish,great white shark,0.2,")
    # what produced the scores, for the leaderboard and the report
    meta = summary["run"]
    assert meta["weights"] == "random" and meta["generator"] == "tiny"  # debug=smoke
    assert meta["dataset"] == "synthetic" and meta["dataset_id"] == "synthetic:n16:size224:s0"
    assert meta["date"][:2] == "20" and meta["versions"]["torch"] == torch.__version__



def test_results_carry_delong_intervals_and_summary_carries_mean_intervals(tmp_path):
    from cosy_bench.scorers.intervals import auc_ci, mean_ci

    record = record_by_hand(tmp_path, n_images=5)
    gen = torch.Generator().manual_seed(0)  # the activations record_by_hand used
    control = torch.randn(16, 3, generator=gen)
    concept = torch.randn(5, 3, generator=gen) + 1.0
    low, high = auc_ci(control, concept)
    for j, row in enumerate(record.rows):
        assert row["auc_ci_low"] == pytest.approx(float(low[j]), abs=1e-12)
        assert row["auc_ci_high"] == pytest.approx(float(high[j]), abs=1e-12)
        assert 0.0 <= row["auc_ci_low"] <= row["auc_ci_high"] <= 1.0
    # the scores' summary: the mean's interval over neurons
    lo, hi = mean_ci(torch.tensor([0.9, 0.7, 0.2], dtype=torch.float64))
    assert record.summary["auc"]["ci_low"] == pytest.approx(max(lo, 0.0))  # AUC: in [0, 1]
    assert record.summary["auc"]["ci_high"] == pytest.approx(min(hi, 1.0))
    # without activations (older callers) the intervals are simply absent
    bare = record_by_hand(tmp_path, with_activations=False)
    assert "auc_ci_low" not in bare.rows[0] and bare.top_control == []


def test_top_control_images_round_trip_and_resolve(tmp_path):
    from cosy_bench.data import SyntheticControlSet

    record = record_by_hand(tmp_path, n_images=3)
    gen = torch.Generator().manual_seed(0)
    control = torch.randn(16, 3, generator=gen)
    record.write(tmp_path / "run")
    back = RunRecord.read(tmp_path / "run")
    assert len(back.top_control) == 3 * 8
    for k in range(3):
        mine = sorted((r for r in back.top_control if r["neuron"] == k), key=lambda r: r["rank"])
        expected = torch.topk(control[:, k], 8).indices.tolist()
        assert [r["index"] for r in mine] == expected
        assert [r["activation"] for r in mine] == pytest.approx(
            torch.topk(control[:, k], 8).values.tolist())
    # in-memory control set: the image is rebuilt from the run's config
    row = back.top_control[0]
    image = back.control_image(row)
    reference = SyntheticControlSet(n=16, size=224)[row["index"]]
    assert np.array_equal(np.asarray(image), np.asarray(reference))
    # synthetic images: up to 8 per concept, with their files
    assert [(r["concept"], r["index"]) for r in back.images][:3] == [("tench", 0), ("tench", 1),
                                                                      ("tench", 2)]
    assert all(Path(r["path"]).is_file() for r in back.images)
    # a control image whose file is gone is reported missing, not an error
    assert back.control_image({"path": str(tmp_path / "gone.png"), "index": 0}) is None


def test_explanations_read_back_byte_for_byte(tmp_path):
    """A \r inside an explanation (and \r\n row ends) survive write and read back."""
    record = record_by_hand(tmp_path)
    text = 'neuron,explanation\r\n0,"red\rcircle"\r\n1,"a\r\nb, \t ""q"" é"\r\n'
    record.explanations_csv = text
    record.write(tmp_path / "run")
    assert RunRecord.read(tmp_path / "run").explanations_csv == text


def test_explainer_columns_are_typed_the_same_fresh_or_from_the_cache(tmp_path):
    """The explanation cache is a csv: its columns came back as strings, fresh ones as
    floats (W&B then typed the same column differently from run to run)."""
    from helpers import compose_config

    from cosy_bench.explainers.base import Explanations

    cfg = compose_config(["model=resnet18", "debug=smoke", "layer=output"])
    fresh = Explanations({0: "tench", 1: "goldfish"}, {"invert_auc": {0: 0.93, 1: 0.5},
                                                      "label": {0: "a", 1: "b"}})
    cached = Explanations.from_csv(fresh.to_csv())
    assert cached.extra["invert_auc"][0] == "0.93"  # the cache gives strings
    scores = {"auc": torch.tensor([0.6, 0.7], dtype=torch.float64)}
    rows = [RunRecord.build(RunResult(cfg, [0, 1], ["tench", "goldfish"], scores, e, None, {},
                                      4)).rows for e in (fresh, cached)]
    assert rows[0] == rows[1]
    assert type(rows[1][0]["invert_auc"]) is float and rows[1][0]["label"] == "a"


def test_scan_runs_lists_complete_partial_failed_and_unreadable_runs(tmp_path):
    from cosy_bench.report.runs import scan_runs

    sweep = tmp_path / "sweep"
    record = record_by_hand(tmp_path)
    record.write(sweep / "0_ok")
    record.write(sweep / "1_partial")
    lines = (sweep / "1_partial" / "results.csv").read_text().splitlines()
    (sweep / "1_partial" / "results.csv").write_text("\n".join(lines[:2]) + "\n")
    (sweep / "2_failed" / ".hydra").mkdir(parents=True)
    (sweep / "2_failed" / "run.log").write_text("[INFO] start\n[ERROR] CUDA out of memory\n")
    (sweep / "3_bad").mkdir()
    (sweep / "3_bad" / "summary.json").write_text("[1, 2")
    found = {s.folder.name: s for s in scan_runs(sweep)}
    assert {k: v.status for k, v in found.items()} == {
        "0_ok": "complete", "1_partial": "partial", "2_failed": "failed", "3_bad": "unreadable"}
    assert "1 of 3 neurons" in found["1_partial"].detail
    assert "CUDA out of memory" in found["2_failed"].detail
    assert found["0_ok"].record.identity["method"] == "ground_truth"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert scan_runs(empty) == []
    with pytest.raises(FileNotFoundError, match="not a folder"):
        scan_runs(tmp_path / "nowhere")


# ------------------------------------------------------------------- acceptance sweep


def _stub_default_model(tmp_path: Path) -> list[str]:
    """A multirun composes the default config first: until the toy world's model config
    exists, add a stand-in `model/toy_cnn` on an extra config dir (never used by the jobs)."""
    if HAS_TOY_MODEL:
        return []
    extra = tmp_path / "extra_conf"
    (extra / "model").mkdir(parents=True)
    (extra / "model" / "toy_cnn.yaml").write_text((CONF / "model" / "resnet18.yaml").read_text())
    return ["--config-dir", str(extra)]


@pytest.mark.slow
def test_acceptance_sweep_and_leaderboard(tmp_path):
    """`python -m cosy_bench -m explainer=random,ground_truth model=resnet18,vit_b16
    layer=output debug=smoke` leaves 4 run folders with results.csv and summary.json, and
    the leaderboard prints 4 rows."""
    sweep = tmp_path / "sweep"
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "1"}
    env.pop("WANDB_API_KEY", None)
    cmd = [sys.executable, "-m", "cosy_bench", "-m", "explainer=random,ground_truth",
           "model=resnet18,vit_b16", "layer=output", "debug=smoke",
           f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}",
           *_stub_default_model(tmp_path)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "CoSy results" in proc.stdout  # each run prints its summary table

    summaries = sorted(sweep.rglob("summary.json"))
    assert len(summaries) == 4
    seen = set()
    for path in summaries:
        run_dir = path.parent
        assert (run_dir / "results.csv").exists() and (run_dir / "config.yaml").exists()
        summary = json.loads(path.read_text())
        meta = summary["run"]
        seen.add((meta["model"], meta["explainer"]))
        assert meta["layer"] == "output" and meta["n_neurons"] == 3
        assert summary["auc"]["n"] == 3 and math.isfinite(summary["auc"]["mean"])
        if meta["explainer"] == "ground_truth":
            assert summary["ground_truth_match"] == 1.0
    assert seen == {(m, e) for m in ("resnet18", "vit_b16") for e in ("random", "ground_truth")}

    board = subprocess.run([sys.executable, "-m", "cosy_bench.leaderboard", str(sweep)],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert board.returncode == 0, board.stderr
    lines = board.stdout.strip().splitlines()
    assert len(lines) == 2 + 4
    body = [line.split() for line in lines[2:]]
    assert sorted((b[0], b[2]) for b in body) == sorted(seen)
    assert all(b[1] == "output" for b in body)


def test_sweep_run_folder_names_hold_no_path_separator(tmp_path):
    """The sweep subdir is ``N_<override_dirname>``: it must be one folder name."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    overrides = ["explainer=random", "model=resnet18", "layer=output", "debug=smoke",
                 f"paths.cache_dir={tmp_path / 'cache'}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose("config", overrides=overrides, return_hydra_config=True)
    name = cfg.hydra.job.override_dirname
    assert "model=resnet18" in name and "debug" not in name
    assert os.sep not in name and "/" not in name, name


def test_mean_auc_interval_is_clipped_to_the_unit_interval():
    """Issue #19 item 7: a few AUCs near 1 gave a mean-AUC interval such as [0.01, 1.11]."""
    values = torch.tensor([1.0, 1.0, 0.05])
    auc, mad = summarize(values, 0.95, name="auc"), summarize(values, 0.95, name="mad")
    assert 0.0 <= auc["ci_low"] <= auc["mean"] <= auc["ci_high"] == 1.0
    assert mad["ci_high"] > 1.0 and mad["ci_low"] < 0.0  # MAD has no bounds: not clipped
    assert auc["ci_low"] == max(mad["ci_low"], 0.0)
