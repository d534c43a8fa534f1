"""Sphinx configuration of cosy_bench's documentation.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` (warnings are
errors: a broken link, a missing page or a docstring autodoc cannot read fails the build;
``tests/docs/test_docs_build.py`` runs it in CI).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # document this checkout's code, not an installed copy

project = "cosy_bench"
author = "cosy_bench contributors"
copyright = "2026, cosy_bench contributors"

extensions = [
    "myst_nb",  # Markdown (MyST) pages and .ipynb pages
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",  # Google-style "Args:" / "Returns:" sections
    "sphinx.ext.mathjax",
]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb", ".rst": "restructuredtext"}
exclude_patterns = ["_build/**", "incoming/**", "examples/**", "bench/**", "Thumbs.db",
                    ".DS_Store"]

# MyST: anchors for headings down to ###, so pages link to sections (page.md#section)
myst_heading_anchors = 3
myst_enable_extensions = ["dollarmath", "colon_fence"]
# notebooks are pages as saved: never executed while the docs build
nb_execution_mode = "off"

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autosummary_generate = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
nitpicky = False

html_theme = "furo"
html_title = "cosy_bench"
html_static_path: list[str] = []
