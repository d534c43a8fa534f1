"""``python -m cosy_bench.report`` on a small toy-world sweep (2 explainers x 2 layers, few
neurons and images): the table, the figures, the comparisons, the cards, links that stay
in the folder, runs that failed, and the page in a real browser (headless Chromium)."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
from helpers import REPO
from PIL import Image

from cosy_bench.report import NoRunsError, build_report
from cosy_bench.report.__main__ import main as report_main

EXPLAINERS, LAYERS = ("invert", "random"), ("conv3", "concepts")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A 4-run toy-world sweep: 6 neurons per run, 4 images each, 300 control scenes."""
    tmp = tmp_path_factory.mktemp("report")
    out = tmp / "multirun" / "2025-01-31" / "12-00-00"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="disabled", HYDRA_FULL_ERROR="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "cosy_bench", "-m", f"explainer={','.join(EXPLAINERS)}",
           f"layer={','.join(LAYERS)}", "neurons.sample=6", "n_images=4", "dataset.n=300",
           "probe.n=400", f"paths.cache_dir={tmp / 'cache'}", f"hydra.sweep.dir={out}",
           "report.write=true"]
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (tmp / "stdout.txt").write_text(proc.stdout)  # for the console's tests below
    (tmp / "stderr.txt").write_text(proc.stderr)
    return out


def _console(sweep: Path) -> tuple[str, str]:
    """(stdout, stdout and stderr): Hydra's log lines go to stdout, warnings to stderr."""
    tmp = sweep.parents[2]
    out = (tmp / "stdout.txt").read_text()
    return out, out + (tmp / "stderr.txt").read_text()


def test_the_sweep_shows_progress_with_an_eta_and_ends_with_the_table_and_report(sweep):
    """Issue #23.1: job i of n with elapsed time and an ETA from the finished jobs, then a
    closing summary: the leaderboard table and the report's path, last."""
    out, err = _console(sweep)
    assert "sweep of 4 jobs in" in err
    for i in range(1, 5):
        assert f"job {i}/4 started: explainer=" in err
    done = re.findall(r"job (\d)/4 done in \d+:\d\d, mean AUC (0\.\d{4}) \| (\d)/4 finished, "
                      r"elapsed \d+:\d\d, (ETA \d+:\d\d for (\d) more|all done)", err)
    assert [(d[0], d[2]) for d in done] == [(str(i), str(i)) for i in range(1, 5)]
    assert [d[4] for d in done[:3]] == ["3", "2", "1"] and done[3][3] == "all done"
    assert "Launching" not in err  # Hydra's own launch lines are replaced by ours
    tail = out[out.index("sweep finished: 4 run(s) with results in"):].splitlines()
    assert tail[2].split()[:4] == ["model", "layer", "method", "n"]
    assert sum(ln.startswith("toy_cnn ") for ln in tail) == 4
    assert tail[-1] == f"report: {(sweep / 'report' / 'index.html').resolve()}"
    assert (sweep / "report" / "index.html").is_file()


def test_the_logs_say_each_thing_once(sweep):
    """Issue #23.3: one bar per stage with meaningful counts, no repeated "computing N
    sets", no cache hit right after computing, the report announced once."""
    out, err = _console(sweep)
    bars = [ln for ln in err.splitlines() if "━" in ln]
    concept = [ln for ln in bars if ln.startswith("concept activations")]
    synthesis = [ln for ln in bars if ln.startswith("synthesis")]
    assert 1 <= len(concept) <= 4 and all(" sets " in ln for ln in concept)
    assert 1 <= len(synthesis) <= 4 and all(" images " in ln for ln in synthesis)
    assert not any(re.search(r" 1/1 ", ln) for ln in bars), bars
    jobs = re.split(r"job \d/4 started", err)[1:]
    assert len(jobs) == 4
    for job in jobs:
        assert job.count("concept activations: computing") <= 1
        if "control activations: computing" in job:
            assert "control activations: cache hit" not in job
    assert err.count("report: ") == 1 and "report written" not in err


@pytest.fixture(scope="module")
def report(sweep) -> Path:
    return build_report(sweep, resamples=2000)


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.targets: list[str] = []
        self.tags: dict[str, int] = {}

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        for key, value in attrs:
            if key in ("src", "href") and value is not None:
                self.targets.append(value)


def test_report_table_figures_and_comparisons(report, sweep):
    out = report.parent
    assert out == sweep / "report"
    with open(out / "leaderboard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    # the paper's order: layers forward (conv3 before concepts), then methods
    assert [(r["layer"], r["method"]) for r in rows] == [
        (lay, m) for lay in LAYERS for m in EXPLAINERS]
    for r in rows:
        assert r["dataset"] == "toyworld" and r["n"] == "6" and r["status"] == "complete"
        assert float(r["auc_ci_low"]) <= float(r["auc_mean"]) <= float(r["auc_ci_high"])
        assert r["generator"] == "toyworld" and r["prompt"] == "p5"
    md = (out / "leaderboard.md").read_text().splitlines()
    assert md[0].startswith("| Dataset | Model | Layer | Method | AUC | MAD |")
    assert len(md) == 2 + 4

    for score in ("auc", "mad"):
        svg = (out / "figures" / f"across_layers_{score}.svg").read_text()
        assert all(f"<!-- {m} -->" in svg for m in EXPLAINERS)  # one line per method
        assert all(f"<!-- {lay} -->" in svg for lay in LAYERS)
        assert (out / "figures" / f"across_layers_{score}.png").stat().st_size > 5000
    for layer in LAYERS:
        assert (out / "figures" / f"dist_toy_cnn_{layer}.png").exists()

    with open(out / "comparisons.csv", newline="") as f:
        comps = list(csv.DictReader(f))
    assert {(c["layer"], c["score"], c["a"], c["b"]) for c in comps} == {
        (lay, s, "invert", "random") for lay in LAYERS for s in ("auc", "mad")}
    assert all(c["n"] == "6" for c in comps)
    html = report.read_text()
    assert "row − column" in html and "Wilcoxon" in html
    assert "The paper&#x27;s table" in html or "The paper's table" in html


def test_every_link_resolves_inside_the_report(report):
    out = report.parent
    parser = _Links()
    parser.feed(report.read_text())
    assert parser.tags.get("script", 0) == 0 and parser.tags.get("link", 0) == 0
    assert parser.targets, "no link at all"
    for target in parser.targets:
        url = urlparse(target)
        assert not url.scheme and not url.netloc, f"{target} leaves the folder"
        if not url.path:  # a link within the page
            assert f'id="{url.fragment}"' in report.read_text(), target
            continue
        path = (out / unquote(url.path)).resolve()
        assert path.is_relative_to(out.resolve()), f"{target} leaves the folder"
        assert path.is_file(), f"{target} does not exist"
    # per-neuron cards: every neuron of every run, with 4 synthetic and 8 control images
    html = report.read_text()
    assert html.count('<div class="card">') == 4 * 6
    assert html.count('class="missing"') == 0
    thumbs = [t for t in parser.targets if t.startswith("thumbs/")]
    assert len(thumbs) == 4 * 6 * (4 + 8)
    with Image.open(out / thumbs[0]) as im:
        assert max(im.size) <= 80


def test_header_lists_the_runs_their_folded_configs_and_the_versions(report, sweep):
    """The header names the versions that made the report; the Runs section has one row per
    run folder with its status and its config.yaml folded (``<details>``), and the versions."""
    import torch
    import yaml

    import cosy_bench

    html = report.read_text()
    versions = (f"cosy_bench {cosy_bench.__version__}", f"torch {torch.__version__}")
    head = html[html.index("<h1>"):html.index("<h2>")]
    assert "4 run folders, 4 with scores" in head
    assert all(v in head for v in versions), head
    runs = html[html.index('<h2 id="runs">Runs</h2>'):]
    assert all(v in runs.split("</table>")[-1] for v in versions)  # "report made with ..."
    folders = sorted(p.parent for p in sweep.glob("*/summary.json"))
    assert len(folders) == 4
    rows = re.findall(r"<tr><td>([^<]*)</td><td class=ok>complete</td><td>([^<]*)</td>"
                      r"<td>[^<]*</td><td><details><summary>config\.yaml</summary><pre>(.*?)"
                      r"</pre></details></td></tr>", runs, re.S)
    assert sorted(label for label, _, _ in rows) == [f.name for f in folders]
    for label, what, pre in rows:
        folded = yaml.safe_load(unescape(pre))  # the run's config, as its folder holds it
        assert folded == yaml.safe_load((sweep / label / "config.yaml").read_text())
        model, layer, method = unescape(what).split(" / ")
        assert (model, method) == ("toy_cnn", folded["explainer_name"])
        assert layer == folded["layer"]["name"] and f"explainer={method}" in label


def test_distributions_hold_a_box_and_the_points_of_each_method(report):
    """Per layer, one panel per score (AUC, MAD), each with a box per method, labelled with
    its name, and the method's 6 neurons as points."""
    for layer in LAYERS:
        svg = (report.parent / "figures" / f"dist_toy_cnn_{layer}.svg").read_text()
        for title in (f"toy_cnn / {layer}: AUC", f"toy_cnn / {layer}: MAD"):
            assert f"<!-- {title} -->" in svg
        for method in EXPLAINERS:  # the tick label under its box, in both panels
            assert svg.count(f"<!-- {method} -->") == 2
        # the points: a scatter per method and score, one marker per neuron
        groups = re.findall(r'<g id="PathCollection_\d+">(.*?)</g>', svg, re.S)
        assert [g.count("<use ") for g in groups] == [6] * (2 * len(EXPLAINERS))
        # the boxes: per method and score a box outline (5 vertices)
        paths = re.findall(r'<g id="line2d_\d+">\s*<path d="([^"]*)"', svg)
        boxes = [d for d in paths if d.count("L") == 4]  # a box: 4 segments; others: 1
        assert len(boxes) == 2 * len(EXPLAINERS), paths


def test_failed_runs_are_listed_and_no_run_is_an_error(sweep, tmp_path, capsys):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("report"))
    failed = copy / "9_explainer=milan,layer=conv3"
    (failed / ".hydra").mkdir(parents=True)
    (failed / "run.log").write_text("[ERROR] explainer milan: out of memory\n")
    index = build_report(copy, cards=False)
    html = index.read_text()
    assert "Not complete" in html and "9_explainer=milan,layer=conv3" in html
    assert "out of memory" in html
    assert html.count('<div class="card">') == 0

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NoRunsError, match="no run under"):
        build_report(empty)
    assert report_main([str(empty)]) == 1
    assert "no run under" in capsys.readouterr().err


def test_report_command_logs_a_wandb_summary_run_with_the_across_layers_plots(
        sweep, tmp_path, monkeypatch, capsys):
    """``python -m cosy_bench.report DIR --wandb`` on the 2-layer sweep, W&B offline: the
    summary run joins the sweep's group and holds the leaderboard table, the across-layers
    figures and a ``line_series`` chart per score whose lines are the methods' means."""
    import json

    from test_loggers import _finished_records, _wandb_summary

    copy = tmp_path / "multirun" / "2025-01-31" / "12-00-00"
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("report"))
    for var in list(os.environ):
        if var.startswith("WANDB_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR",
                "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home" / var.lower()))
    assert report_main([str(copy), "--wandb", "--no-cards", "--resamples", "200"]) == 0
    assert "W&B summary run logged" in capsys.readouterr().out

    (run_dir,) = (copy / "report" / "wandb").glob("offline-run-*")
    records = _finished_records(run_dir)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.run_group == "2025-01-31_12-00-00" and run.job_type == "report"
    summary = _wandb_summary(run_dir)
    assert summary["leaderboard/_type"] == "table-file" and summary["leaderboard/nrows"] == 4
    for score in ("auc", "mad"):
        assert summary[f"figures/across_layers_{score}/_type"] == "image-file"
        # wandb.plot.line_series: the chart's table, and the panel that draws it
        key = f"across_layers/toy_cnn/{score}"
        assert summary[f"{key}_table/_type"] == "table-file"
        panels = [item for r in records if r.WhichOneof("record_type") == "config"
                  for item in r.config.update if list(item.nested_key[-1:]) == [key]]
        assert len(panels) == 1
        assert json.loads(panels[0].value_json)["panel_config"]["panelDefId"] == \
            "wandb/lineseries/v0"
        table = json.loads((run_dir / "files" / summary[f"{key}_table/path"]).read_text())
        assert table["columns"] == ["step", "lineKey", "lineVal"]
        # one line per method, x = the layer's index in forward order, y = its mean
        with open(copy / "report" / "leaderboard.csv", newline="") as f:
            means = {(LAYERS.index(r["layer"]), r["method"]): float(r[f"{score}_mean"])
                     for r in csv.DictReader(f)}
        got = {(step, method): value for step, method, value in table["data"]}
        assert got.keys() == means.keys()
        assert all(got[k] == pytest.approx(means[k], abs=1e-12) for k in means)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_the_page_renders_in_headless_chromium(report, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it: apt-get install "
                    "-y chromium)")
    shot = tmp_path / "report.png"
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                           "--hide-scrollbars", "--window-size=1280,1600",
                           f"--screenshot={shot}", report.resolve().as_uri()],
                          capture_output=True, text=True, timeout=180)
    assert shot.exists(), proc.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (1600, 1280)
    # not blank: text, tables and plots cover part of the page and vary
    assert (pixels < 200).mean() > 0.02 and pixels.std() > 20
    # the top holds the title and table (dark text on white), the middle the figures
    assert (pixels[:400] < 128).mean() > 0.005 and (pixels[600:1400] < 200).mean() > 0.01
    # the first screen's evidence: the neuron cards come right after the paper's table
    page = report.read_text()
    order = [page.find(h) for h in ("<h2>The paper's table", "<h2>Neurons", "<h2>Across layers")]
    assert -1 not in order[:2] and order[0] < order[1], order
    assert order[2] == -1 or order[1] < order[2], order
