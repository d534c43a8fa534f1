"""A YAML syntax error in a config says where it is, in four lines, not in a 95-line traceback.

Hydra reads the config files while it composes, before the app runs, and prints an error
there with its whole stack. :func:`install` wraps Hydra's ``run_and_report`` (the function
``hydra.main`` runs the app through) so that a YAML error becomes a
:class:`YamlSyntaxError`, which Hydra prints as its message alone: the file, line, column,
the problem and the offending line with a caret under the column. ``HYDRA_FULL_ERROR=1``
still shows the whole stack (the YAML error is the cause). Imports only Hydra and yaml.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from hydra.errors import CompactHydraException


class YamlSyntaxError(CompactHydraException):
    """A config file that is not valid YAML; the message names the file, line and column."""


def describe(err: yaml.MarkedYAMLError) -> str:
    """``err`` as: file, line, column (1-based), the problem, and the offending line."""
    mark = err.problem_mark or err.context_mark
    problem = " ".join(p for p in (err.problem, f"({err.context})" if err.context else None)
                       if p) or str(err)
    if mark is None:
        return f"YAML syntax error: {problem}"
    where = str(mark.name)
    text = ""
    try:
        lines = Path(where).read_text(encoding="utf-8").splitlines()
        if 0 <= mark.line < len(lines):
            text = lines[mark.line]
    except (OSError, UnicodeDecodeError):
        pass
    number = f"{mark.line + 1} | "
    out = [f"YAML syntax error in {where}, line {mark.line + 1}, column {mark.column + 1}: "
           f"{problem}"]
    if text:
        out += [f"  {number}{text}", "  " + " " * len(number) + " " * mark.column + "^"]
    out.append("fix the file (quote values holding ':' '{' '[' or '#'), then run again")
    return "\n".join(out)


def explained(func):
    """``func`` with YAML errors raised as :class:`YamlSyntaxError`."""

    def call():
        try:
            return func()
        except Exception as err:
            cause: BaseException | None = err
            while cause is not None and not isinstance(cause, yaml.MarkedYAMLError):
                cause = cause.__cause__ or cause.__context__
            if cause is None:
                raise
            raise YamlSyntaxError(describe(cause)) from err

    return call


def install() -> None:
    """Wrap Hydra's ``run_and_report`` once (idempotent; nothing if Hydra has none)."""
    from hydra._internal import utils

    original = getattr(utils, "run_and_report", None)
    if original is None or getattr(original, "_cosy_yaml", False):
        return

    def run_and_report(func):
        return original(explained(func))

    run_and_report._cosy_yaml = True
    utils.run_and_report = run_and_report
