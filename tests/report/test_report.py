"""``python -m cosy_bench.report`` on a small toy-world sweep (2 explainers x 2 layers, few
neurons and images): the table, the figures, the comparisons, the cards, links that stay
in the folder, runs that failed, and the page in a real browser (headless Chromium)."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
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
    env.update(WANDB_MODE="disabled", HYDRA_FULL_ERROR="1")
    cmd = [sys.executable, "-m", "cosy_bench", "-m", f"explainer={','.join(EXPLAINERS)}",
           f"layer={','.join(LAYERS)}", "neurons.sample=6", "n_images=4", "dataset.n=300",
           "probe.n=400", f"paths.cache_dir={tmp / 'cache'}", f"hydra.sweep.dir={out}"]
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


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
