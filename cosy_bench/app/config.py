"""Where cosy_bench's Hydra configs are.

``conf/`` sits at the top of the checkout (the layout the project documents); the wheel
ships it as the package ``cosy_bench.conf`` (``pyproject.toml`` maps ``conf`` there). So
the configs are, first found:

1. ``<package>/conf``: a wheel or a normal ``pip install .``;
2. ``<package>/../conf``: a source checkout, an editable install or ``PYTHONPATH``;
3. wherever the import system finds ``cosy_bench.conf`` (an editable install's finder).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent


def config_dir() -> Path:
    """The folder holding ``config.yaml`` and the config groups; a clear error if none."""
    candidates = [PACKAGE_DIR / "conf", PACKAGE_DIR.parent / "conf"]
    try:
        spec = importlib.util.find_spec("cosy_bench.conf")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) for p in spec.submodule_search_locations]
    for folder in candidates:
        if (folder / "config.yaml").is_file() and (folder / "model").is_dir():
            return folder
    raise FileNotFoundError(
        f"cosy_bench's configs were not found (looked in {[str(c) for c in candidates]}). "
        "Reinstall the package (`pip install .` ships them as cosy_bench/conf) or run from "
        "a checkout that has conf/ beside cosy_bench/.")
