"""The report opens on its evidence (issue #23, item 4): the first run's neuron cards come
right after the table and are open (their first page too), the Runs table is in natural
order (0, 1, ..., 10), no cell reads ``-0.000``, and two runs that gave the same
explanations say "identical explanations" instead of ``[+0.000, +0.000]``, p = 1."""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import OmegaConf

from cosy_bench.leaderboard import fmt, fmt_ci, number
from cosy_bench.record import RunRecord
from cosy_bench.report.cards import PAGE, Thumbnails, run_cards
from cosy_bench.report.html import comparisons, natural_key, runs_section
from cosy_bench.report.runs import Runs, RunStatus
from cosy_bench.report.statistics import compare


def _record(method: str, texts: dict[int, str], scores: dict[int, float],
            folder: Path | None = None) -> RunRecord:
    meta = {"model": "m", "layer": "l", "explainer": method, "generator": "g", "prompt": "p5",
            "weights": "w", "dataset_id": "d", "n_images": 50}
    rows = [{"neuron": k, "explanation": texts[k], "auc": v, "mad": 2 * v}
            for k, v in scores.items()]
    return RunRecord(rows, {"run": meta}, "", OmegaConf.create({}), folder=folder)


def test_no_negative_zero_in_cells():
    assert number(-0.0004, "+.3f") == "0.000" and number(-0.0001) == "0.00"
    assert number(-0.5, "+.3f") == "-0.500" and number(0.012, "+.3f") == "+0.012"
    assert fmt((-0.001, 0.0)) == "0.00 ± 0.00" and fmt_ci((-0.001, 0.2)) == "[0.00, 0.20]"
    # a comparison whose mean and interval round to zero but are slightly negative
    a = _record("invert", {k: f"c{k}" for k in range(6)}, {k: 0.5 for k in range(6)})
    b = _record("random", {k: f"r{k}" for k in range(6)},
                {k: 0.5 + 1e-5 * (k % 2) for k in range(6)})
    html = comparisons(compare([a, b], resamples=200), "auc")
    assert "-0.000" not in html and "0.000" in html


def test_identical_explanations_are_said_not_scored():
    texts = {k: f"concept {k}" for k in range(8)}
    scores = {k: 0.6 + 0.03 * k for k in range(8)}
    a, b = _record("invert", texts, scores), _record("ground_truth", texts, scores)
    other = _record("random", {k: f"other {k}" for k in range(8)}, {k: 0.5 for k in range(8)})
    comps = compare([a, b, other], resamples=200)
    same = [c for c in comps if {c.a, c.b} == {"invert", "ground_truth"}]
    assert same and all(c.identical for c in same)
    assert all(c.as_row()["identical_explanations"] for c in same)
    assert not any(c.identical for c in comps if "random" in (c.a, c.b))
    html = comparisons(comps, "auc")
    assert html.count("identical explanations</td>") == 1  # the list's row
    assert ">identical</td>" in html  # the matrix cells (both directions)
    assert "[+0.000, +0.000]" not in html and "[0.000, 0.000]" not in html
    # the same scores from different explanations are compared as usual
    diff = compare([_record("invert", texts, scores),
                    _record("milan", {k: f"m{k}" for k in range(8)}, scores)], resamples=200)
    assert not any(c.identical for c in diff)


def test_runs_table_is_in_natural_order(tmp_path):
    names = ["0_a", "10_b", "11_c", "1_d", "2_e", "9_f"]
    statuses = [RunStatus(tmp_path / n, "complete") for n in names]
    html = runs_section(Runs(tmp_path, statuses, [], []), {})
    order = re.findall(r"<tr><td>([^<]*)</td>", html)
    assert order == ["0_a", "1_d", "2_e", "9_f", "10_b", "11_c"]
    assert sorted(names, key=natural_key) == order


def test_first_run_and_its_first_page_of_cards_are_open(tmp_path):
    n = PAGE + 5
    rec = _record("invert", {k: f"c{k}" for k in range(n)}, {k: 0.7 for k in range(n)})
    thumbs = Thumbnails(tmp_path)
    first = run_cards(rec, "0_run", thumbs, open_=True)
    assert first.startswith('<details class="run" open>')
    pages = re.findall(r"<details( open)?><summary>neurons", first)
    assert pages == [" open", ""]  # the first page open, the second folded
    later = run_cards(rec, "1_run", thumbs, open_=False)
    assert '<details class="run">' in later and " open" not in later
