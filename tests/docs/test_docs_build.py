"""The documentation site (docs/, Sphinx + MyST) builds with warnings as errors, as README's
build command does: a broken link or anchor, a page missing from the toctree, a missing
include or a docstring autodoc cannot read fails it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html"]


@pytest.mark.slow
def test_site_builds_with_warnings_as_errors(tmp_path):
    out = tmp_path / "html"
    # -E: a fresh environment (a stale one would hide warnings of unchanged pages)
    done = subprocess.run([*BUILD, "-E", "-d", str(tmp_path / "doctrees"), str(REPO / "docs"),
                           str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    index = (out / "index.html").read_text(encoding="utf-8")
    for page in toctree_pages():
        assert (out / f"{page}.html").is_file(), page
        assert f'href="{page}.html"' in index, page
    api = (out / "api.html").read_text(encoding="utf-8")
    for name in ("cosy_bench.scorers.registry.score_all", "cosy_bench.scorers.cosy.auc",
                 "cosy_bench.api.evaluate", "cosy_bench.explainers.base.Explainer",
                 "cosy_bench.generators.base.Generator", "cosy_bench.context.RunContext",
                 "cosy_bench.record.RunRecord"):
        assert f'id="{name}"' in api, name  # autodoc documented it
    perf = (out / "performance.html").read_text(encoding="utf-8")
    assert perf.count("at start") >= 10  # the included tables' stamps (load at start, end)


def toctree_pages() -> list[str]:
    """The pages docs/index.md's toctree lists."""
    text = (REPO / "docs" / "index.md").read_text(encoding="utf-8")
    block = re.search(r"```\{toctree\}\n(.*?)```", text, re.S).group(1)
    return [line.strip() for line in block.splitlines()
            if line.strip() and not line.startswith(":")]


def test_every_toctree_page_exists_and_every_page_is_listed():
    pages = toctree_pages()
    assert {"getting_started", "toy_world", "pipeline", "methods", "departures", "real_models",
            "sweeps", "scaling", "performance", "reliability", "architecture", "api"} <= set(pages)
    for page in pages:
        assert any((REPO / "docs" / f"{page}{ext}").is_file() for ext in (".md", ".ipynb")), page
    listed = set(pages) | {"index"}
    orphans = [p.stem for p in (REPO / "docs").glob("*.md") if p.stem not in listed]
    assert orphans == []


def test_performance_includes_only_existing_bench_files():
    text = (REPO / "docs" / "performance.md").read_text(encoding="utf-8")
    included = re.findall(r"```\{include\} (bench/\S+\.md)", text)
    assert len(included) >= 9
    for rel in included:
        body = (REPO / "docs" / rel).read_text(encoding="utf-8")
        assert re.search(r"^\| command \| `python -m cosy_bench\.bench ", body, re.M), rel
