"""Check a bench command's ``--markdown FILE`` output (cosy_bench/bench/_markdown.py): the
stamp (command line, date, machine, load) and the command's printed table, verbatim."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from cosy_bench.bench._markdown import table_lines


def assert_stamped(path: Path, argv: list[str], printed: str, table_header: str) -> str:
    """``path`` holds the stamp of ``python -m cosy_bench.bench *argv`` and ``printed`` (what
    the command wrote to stdout) in a text block whose table starts with ``table_header``."""
    text = Path(path).read_text(encoding="utf-8")
    assert not re.search(r"^#", text, re.M), "no heading: a page includes it under its own"
    stamp = dict(re.findall(r"^\| (command|date|machine|load average|software) \| (.*) \|$",
                            text, re.M))
    assert set(stamp) == {"command", "date", "machine", "load average", "software"}, text
    # the command line as a shell reads it back (shell-quoted where needed)
    assert stamp["command"] == "`" + shlex.join(["python", "-m", "cosy_bench.bench", *argv]) + "`"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", stamp["date"])
    assert re.search(r"\d+ (of \d+ )?cores; GPU: .+", stamp["machine"])
    assert re.search(r"at start (\d+\.\d\d, ){2}\d+\.\d\d", stamp["load average"]) or \
        "n/a" in stamp["load average"]
    block = re.search(r"^```text\n(.*?)\n```$", text, re.S | re.M).group(1)
    assert block == table_lines(printed) and printed.strip()  # verbatim, less progress bars
    assert "\u2501" not in block
    assert any(line.startswith(table_header) for line in block.splitlines()), block
    return text
