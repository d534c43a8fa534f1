"""docs/tutorial.ipynb executes on the toy world (nbclient, kernel python3) and is committed
with its outputs cleared."""

from __future__ import annotations

import os

import nbformat
import pytest
from helpers import HAS_TOY_MODEL, REPO

NOTEBOOK = REPO / "docs" / "tutorial.ipynb"


def test_tutorial_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TOY_MODEL, reason="needs the toy world")
def test_tutorial_executes(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    # the kernel inherits the environment: this checkout importable, its own cache
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setenv("COSY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline figures
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(str(o.get("data", {}).get("text/plain", "")) + str(o.get("text", ""))
                     for o in outputs)
    assert "invert" in text and "random" in text and "better" in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2  # the two figures
    for run in ("invert", "random", "invert_conv3", "invert_conv4"):
        assert (tmp_path / "runs" / run / "results.csv").exists(), run
