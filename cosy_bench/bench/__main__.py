"""Run one benchmark: ``python -m cosy_bench.bench NAME [options]``.

``NAME`` is a module of this package (e.g. ``scorers``, ``explainers``); its ``main(argv)``
gets the remaining arguments. ``--markdown FILE``, accepted by every bench, also writes what
the command prints as Markdown, stamped with the date, machine, load and command line
(:mod:`cosy_bench.bench._markdown`); ``docs/performance.md`` includes such files.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Sequence
from pathlib import Path

import cosy_bench.bench as _package
from cosy_bench.bench import _markdown


def available() -> list[str]:
    """Names of the benchmark modules in this package: those with a ``main`` (read from the
    source, without importing them; helper modules such as ``dissection`` have none)."""
    folder = Path(_package.__path__[0])
    return sorted(
        info.name
        for info in pkgutil.iter_modules(_package.__path__)
        if not info.name.startswith("_")
        and "\ndef main(" in (folder / f"{info.name}.py").read_text(encoding="utf-8")
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = (
        "usage: python -m cosy_bench.bench NAME [options]  (NAME: "
        + ", ".join(available())
        + "; NAME --help for its options; --markdown FILE writes the output as Markdown)"
    )
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0 if argv else 2
    name, (rest, markdown) = argv[0], _markdown.pop_option(argv[1:])
    if name.startswith("_") or not name.isidentifier() or name not in available():
        print(f"unknown benchmark {name!r}\n{usage}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"{_package.__name__}.{name}")
    with _markdown.recording(markdown, name, argv[1:]):
        result = module.main(rest)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
