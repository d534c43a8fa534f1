"""``--markdown FILE`` for every bench command: the command's table as a Markdown file, stamped
with the date, the machine (CPU model, cores, GPU if any), its load average and the exact
command line, so a figure on the performance page says where and how it was measured.

:func:`recording` tees everything the command prints while it runs; :func:`write` puts the
stamp above it (a fenced ``text`` block: the tables are fixed-width, and a code block keeps
their columns aligned in any Markdown renderer). The file holds no heading, so a page can
``{include}`` it under a heading of its own. Written to a temporary file and renamed.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import os
import platform
import shlex
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

#: option name, shared by every bench command (handled in ``cosy_bench/bench/__main__.py``)
OPTION = "--markdown"
#: a progress bar's line (Lightning's rich bars of the runs a bench makes): not the table
PROGRESS_BAR = "\u2501"


def table_lines(output: str) -> str:
    """What the command printed, less progress-bar lines."""
    return "\n".join(line for line in output.rstrip("\n").splitlines()
                     if PROGRESS_BAR not in line)


def pop_option(argv: Sequence[str]) -> tuple[list[str], Path | None]:
    """``argv`` without ``--markdown FILE`` / ``--markdown=FILE``, and FILE (None if absent).

    Raises:
        SystemExit: ``--markdown`` given without a file name.
    """
    rest, path, args = [], None, list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == OPTION:
            if i + 1 >= len(args) or args[i + 1].startswith("-"):
                raise SystemExit(f"{OPTION} needs a file name: {OPTION} FILE.md")
            path, i = Path(args[i + 1]), i + 2
            continue
        if arg.startswith(OPTION + "="):
            path = Path(arg.split("=", 1)[1])
        else:
            rest.append(arg)
        i += 1
    return rest, path


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else :func:`platform.processor`)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def cores() -> str:
    """Cores this process may use, and the machine's when they differ."""
    total = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else total
    return f"{usable} cores" if usable == total else f"{usable} of {total} cores"


def gpus() -> str:
    """The CUDA devices torch sees, or ``none``."""
    try:
        import torch

        if torch.cuda.is_available():
            return ", ".join(torch.cuda.get_device_name(i)
                             for i in range(torch.cuda.device_count()))
    except Exception:  # a stamp never fails the bench
        pass
    return "none"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "n/a"
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f} (1, 5, 15 min)"


def stamp(command: str, started: datetime.datetime, load_at_start: str) -> list[str]:
    """The stamp's lines: a two-column Markdown table."""
    rows = [
        ("command", f"`{command}`"),
        ("date", started.strftime("%Y-%m-%d %H:%M UTC")),
        ("machine", f"{cpu_model()}, {cores()}; GPU: {gpus()}"),
        ("load average", f"at start {load_at_start}; at end {load_average()}"),
        ("software", f"Python {platform.python_version()}, {_versions()}"),
    ]
    lines = ["| | |", "|---|---|"]
    lines += [f"| {key} | {value.replace('|', '/')} |" for key, value in rows]
    return lines


def _versions() -> str:
    try:
        import torch

        return f"torch {torch.__version__}"
    except ImportError:  # pragma: no cover - torch is a dependency
        return "no torch"


class _Tee(io.TextIOBase):
    """Writes to the stream it wraps and keeps a copy."""

    def __init__(self, stream) -> None:
        self.stream, self.copy = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


@contextlib.contextmanager
def recording(path: Path | None, name: str, argv: Sequence[str]) -> Iterator[None]:
    """Tee stdout while the bench ``name`` runs with ``argv``; write ``path`` when it ends
    (also when it fails: the table so far and the error are what was measured)."""
    if path is None:
        yield
        return
    command = shlex.join(["python", "-m", "cosy_bench.bench", name, *argv])
    started = datetime.datetime.now(datetime.timezone.utc)
    load = load_average()
    tee = _Tee(sys.stdout)
    error = None
    try:
        with contextlib.redirect_stdout(tee):
            yield
    except BaseException as exc:
        error = exc
        raise
    finally:
        write(path, command, started, load, tee.copy.getvalue(), error)


def write(path: Path, command: str, started: datetime.datetime, load_at_start: str,
          output: str, error: BaseException | None = None) -> None:
    """Write the Markdown file: the stamp, then the command's output in a ``text`` block."""
    lines = stamp(command, started, load_at_start)
    elapsed = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
    lines += ["", f"Output ({elapsed:.0f} s):", "", "```text", table_lines(output), "```"]
    if error is not None and not (isinstance(error, SystemExit) and not error.code):
        lines += ["", f"The command stopped with {type(error).__name__}: {error}"]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)
