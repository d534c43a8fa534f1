"""README is short (at most 15,000 characters), keeps the two Quick start commands that
.ci/run and a new user run, links every docs page, and no document links a file outside the
repository (issue #21 item 1, issue #23 item 5)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
INSTALL = 'pip install torch==2.14.1 torchvision==0.29.1 && pip install -e ".[dev]"'


def test_readme_is_at_most_15000_characters():
    assert len(README) <= 15_000, len(README)


def test_readme_holds_both_quick_start_commands_in_code_blocks():
    quick = re.search(r"^## Quick start.*?\n(.*?)(?=^## )", README, re.S | re.M).group(1)
    blocks = re.findall(r"^```\n(.*?)\n```$", quick, re.S | re.M)
    assert f"{INSTALL} && python -m cosy_bench" in blocks
    assert f"{INSTALL} && python -m pytest -q" in blocks
    # .ci/run installs as README says and runs README's test command
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert 'pip install -e ".[dev]"' in ci and re.search(r"^python -m pytest -q$", ci, re.M)


def test_headline_command_comes_after_quick_start_and_says_what_it_needs():
    headline = "python -m cosy_bench -m explainer=invert,clip_dissect,milan model=resnet18,vit_b16"
    assert README.index(headline) > README.index("## Quick start")
    section = README[README.index(headline) - 600:README.index(headline) + 1500]
    for need in ("weights", "ImageNet", "GPU", "IMAGENET_VAL_DIR"):
        assert need in section, need


def test_readme_gives_the_suite_size_a_fast_subset_and_the_torch_fallback(request):
    stated = re.search(r"The test suite has (\d+) tests", README)
    assert stated, "README states the number of tests"
    if len(request.session.items) > 500:  # the whole suite is collected: the count holds
        assert abs(int(stated.group(1)) - len(request.session.items)) <= 50
    assert 'python -m pytest -q -m "not slow"' in README
    assert "default wheel works" in README
    assert "python -m sphinx -W --keep-going -b html docs docs/_build/html" in README


def test_readme_links_every_docs_page_and_only_existing_files():
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    missing = [link for link in links if not link.startswith("http")
               and not (REPO / link).exists()]
    assert missing == []
    pages = {p.name for p in (REPO / "docs").glob("*.md") if p.stem != "index"}
    linked = {Path(link).name for link in links if link.startswith("docs/")}
    assert pages <= linked, pages - linked


def test_no_document_links_the_methods_notes_outside_the_repository():
    for path in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]:
        assert "shared/METHODS.md" not in path.read_text(encoding="utf-8"), path
