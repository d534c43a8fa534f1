"""The package's layout: every module imports, no import circle, each layer imports only from
the layers below it (the picture in ``cosy_bench/__init__.py`` and docs/architecture.md),
no room grows past its size, and the architecture page names only modules that exist."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "cosy_bench"

#: layer of each room (top-level module or package; ``toyworld.training`` on its own)
LAYERS = {
    "scorers": 1, "prompts": 1, "distributed": 1, "cache": 1, "data": 1, "generators": 1,
    "models": 1, "toyworld": 1, "schema": 1,
    "loops": 2,
    "context": 3,
    "explainers": 4, "units": 4,
    "record": 5, "synthetic": 5, "pipeline": 5, "ranks": 5,
    "loggers": 6, "leaderboard": 6, "experiments": 6, "run": 6, "bench": 6, "app": 6,
    "toyworld.training": 6, "__main__": 6, "report": 6, "api": 6,
}
#: rooms over 400 lines, each one algorithm that reads best whole
LONG_MODULES = {
    "cosy_bench.explainers.clip_dissect.similarities": "CLIP-Dissect's five similarity functions",
    "cosy_bench.explainers.milan.model": "MILAN's encoder, captioner, LM and beam search",
}
MAX_LINES, LONG_MAX_LINES = 400, 450


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path) -> set[str]:
    """Every cosy_bench module ``name`` imports, wherever the import stands (TYPE_CHECKING and
    function-level imports included: a reader follows them too)."""
    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                mod = ".".join(base[: len(base) - node.level + 1] + ([mod] if mod else []))
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {n: {m for m in _imports(n, p) if m in mods and m != n} for n, p in mods.items()}


def _room(module: str) -> str:
    parts = module.split(".")[1:]
    if parts[:2] == ["toyworld", "training"]:
        return "toyworld.training"
    return parts[0] if parts else "__init__"


def test_every_module_imports_in_a_fresh_interpreter():
    names = [n for n in _modules() if not n.endswith("__main__")]
    code = "import importlib, sys\nfor n in sys.argv[1:]:\n    importlib.import_module(n)\n"
    proc = subprocess.run([sys.executable, "-c", code, *names], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index, low, stack, on, comps = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    # a package __init__ importing its own submodules is not a circle a reader walks
    return [c for c in comps if not all(any(o.startswith(m + ".") or m.startswith(o + ".")
                                            for o in c if o != m) for m in c)]


def test_no_import_circle():
    assert _cycles(_graph()) == []


def test_a_circle_would_be_found():
    graph = {"a.x": {"a.y"}, "a.y": {"a.z"}, "a.z": {"a.x"}, "a.w": set()}
    assert _cycles(graph) == [["a.x", "a.y", "a.z"]]


def test_each_layer_imports_only_from_below():
    graph = _graph()
    assert set(map(_room, graph)) - {"__init__"} <= set(LAYERS), "a new room needs its layer"
    upward = [(a, b) for a, deps in graph.items() for b in deps
              if _room(a) != "__init__" and _room(b) != "__init__"
              and LAYERS[_room(b)] > LAYERS[_room(a)]]
    assert upward == []


def test_no_room_is_too_long():
    long = {}
    for name, path in _modules().items():
        n = sum(1 for _ in path.open(encoding="utf-8"))
        limit = LONG_MAX_LINES if name in LONG_MODULES else MAX_LINES
        if n > limit:
            long[name] = n
    assert long == {}


def test_every_package_says_what_it_holds():
    missing = [str(p.relative_to(REPO)) for p in PACKAGE.rglob("__init__.py")
               if not ast.get_docstring(ast.parse(p.read_text(encoding="utf-8")))]
    dirs = [str(d.relative_to(REPO)) for d in PACKAGE.rglob("*") if d.is_dir()
            and any(d.glob("*.py")) and not (d / "__init__.py").exists()]
    assert missing == [] and dirs == []


def test_architecture_page_names_only_existing_modules():
    page = REPO / "docs" / "architecture.md"
    if not page.is_file():
        pytest.fail("docs/architecture.md is missing")
    text = page.read_text(encoding="utf-8")
    named = set(re.findall(r"`(cosy_bench(?:[./][a-z_]+)*(?:\.py)?/?)`", text))
    assert len(named) >= 20
    missing = []
    for ref in named:
        rel = ref.rstrip("/").replace(".py", "").replace(".", "/")
        if not ((REPO / rel).is_dir() or (REPO / f"{rel}.py").exists()):
            missing.append(ref)
    assert missing == []
