"""Every column the pipeline can write to results.csv is defined in docs/pipeline.md (issue #23
item 5: `invert_auc`, `invert_fraction`, `compexp_iou` were documented nowhere). The columns
are collected from the code: the scorers' column declarations, the label-similarity scorer's
outputs, the run record's own columns, and each explainer's extra columns (read from the
``Explanations(texts, extra)`` each explainer returns)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import torch

from cosy_bench.scorers.label_similarity import label_similarity
from cosy_bench.scorers.registry import REGISTRY

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "cosy_bench"


def _subscript_keys(tree: ast.AST, name: str) -> set[str]:
    """String keys of ``name["key"] = ...`` (also ``a, name["k"] = ...``) anywhere in ``tree``."""
    keys = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            targets = [t for tgt in node.targets
                       for t in (tgt.elts if isinstance(tgt, ast.Tuple) else [tgt])]
            for t in targets:
                if (isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name)
                        and t.value.id == name and isinstance(t.slice, ast.Constant)):
                    keys.add(t.slice.value)
    return keys


def _keys(expr: ast.AST, scope: ast.AST) -> set[str]:
    """The string keys a dict expression of an explainer's ``explain`` can hold."""
    if isinstance(expr, ast.Dict):
        return {k.value for k in expr.keys if isinstance(k, ast.Constant)}
    if isinstance(expr, ast.Name):  # a variable: its assignments and item assignments
        found = _subscript_keys(scope, expr.id)
        for node in ast.walk(scope):
            if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == expr.id for t in node.targets):
                found |= _keys(node.value, scope)
        return found
    if isinstance(expr, ast.DictComp):  # {f"prefix_{k}": ... for k[, v] in ITER}
        gen = expr.generators[0]
        target = gen.target.elts[0] if isinstance(gen.target, ast.Tuple) else gen.target
        it = gen.iter
        if isinstance(it, ast.Call) and isinstance(it.func, ast.Attribute) \
                and it.func.attr == "items":
            names = _keys(it.func.value, scope)
        elif isinstance(it, ast.Tuple):
            names = {e.value for e in it.elts if isinstance(e, ast.Constant)}
        else:
            names = set()
        key = expr.key
        if isinstance(key, ast.Name) and key.id == target.id:
            return names
        if isinstance(key, ast.JoinedStr):
            parts = key.values
            prefix = "".join(p.value for p in parts if isinstance(p, ast.Constant))
            if [type(p) for p in parts] == [ast.Constant, ast.FormattedValue]:
                return {prefix + n for n in names}
    raise AssertionError(f"cannot read the keys of {ast.unparse(expr)}: extend this test")


def _column_names(expr: ast.AST, scope: ast.AST) -> set[str]:
    """The names in ``Explanations.from_ranked(rows, COLUMNS)``'s column list: constants, or
    ``[f"prefix_{n}" for n in NAMES]`` with ``NAMES`` a tuple of constants in ``scope``."""
    if isinstance(expr, ast.Constant):
        return {expr.value}
    if isinstance(expr, (ast.List, ast.Tuple)):
        return set().union(*(_column_names(e, scope) for e in expr.elts))
    if isinstance(expr, ast.Starred):  # *(["a"] if flag else [])
        return _column_names(expr.value, scope)
    if isinstance(expr, ast.IfExp):
        return _column_names(expr.body, scope) | _column_names(expr.orelse, scope)
    if isinstance(expr, ast.ListComp) and isinstance(expr.elt, ast.JoinedStr):
        prefix = "".join(p.value for p in expr.elt.values if isinstance(p, ast.Constant))
        it = expr.generators[0].iter
        names = set()
        for node in ast.walk(scope):
            if isinstance(node, ast.Assign) and isinstance(it, ast.Name) and any(
                    isinstance(t, ast.Name) and t.id == it.id for t in node.targets):
                names |= _column_names(node.value, scope)
        return {prefix + n for n in names}
    raise AssertionError(f"cannot read the columns of {ast.unparse(expr)}: extend this test")


def explainer_columns() -> dict[str, set[str]]:
    """Per explainer module, the extra columns of the ``Explanations`` it returns."""
    out = {}
    for path in sorted((PACKAGE / "explainers").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for func in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
            for call in (n for n in ast.walk(func) if isinstance(n, ast.Call)):
                module = path.relative_to(PACKAGE / "explainers").as_posix()
                if isinstance(call.func, ast.Name) and call.func.id == "Explanations":
                    extra = call.args[1] if len(call.args) > 1 else next(
                        (k.value for k in call.keywords if k.arg == "extra"), None)
                    if extra is not None:
                        out.setdefault(module, set()).update(_keys(extra, func))
                elif (isinstance(call.func, ast.Attribute) and call.func.attr == "from_ranked"
                      and len(call.args) > 1 and module != "base.py"):
                    out.setdefault(module, set()).update(_column_names(call.args[1], func))
    return out


def results_columns() -> set[str]:
    """Every column the pipeline can write to results.csv."""
    cols = {c for scorer in REGISTRY.values() for c in scorer.columns}
    # the label-similarity scorer: accuracy and one cosine per encoder the pipeline builds
    pipeline = ast.parse((PACKAGE / "pipeline.py").read_text(encoding="utf-8"))
    encoders = _subscript_keys(pipeline, "encoders")
    embed = {name: (lambda texts: torch.ones(len(texts), 3)) for name in encoders}
    cols |= set(label_similarity(["red"], ["red"], embed))
    cols |= _subscript_keys(pipeline, "scores") | _subscript_keys(pipeline, "columns")
    # (n_images under n_images=auto)
    record = ast.parse((PACKAGE / "record.py").read_text(encoding="utf-8"))
    cols |= _subscript_keys(record, "row")
    cols |= {"neuron", "rank", "explanation"}  # the row's first three columns
    for extra in explainer_columns().values():
        cols |= extra
    return cols


def documented_columns() -> set[str]:
    """Columns named in the first cell of a row of docs/pipeline.md's results.csv table."""
    text = (REPO / "docs" / "pipeline.md").read_text(encoding="utf-8")
    section = re.search(r"^### results\.csv\n(.*?)(?=^### |\Z)", text, re.S | re.M).group(1)
    names = set()
    for row in re.findall(r"^\| (.+?) \| .+ \| .+ \|$", section, re.M):
        names |= set(re.findall(r"`([a-z_0-9]+)`", row))
    return names


def test_the_collection_finds_the_known_columns():
    """The collection reads the code (a check of the collector itself)."""
    by_module = explainer_columns()
    assert by_module["invert.py"] >= {"invert_auc", "invert_fraction", "invert_pvalue"}
    assert by_module["compexp.py"] == {"compexp_iou"}
    assert by_module["milan/__init__.py"] == {"milan_score", "milan_log_p_caption",
                                              "milan_log_p_lm"}
    cols = results_columns()
    assert {"auc", "mad", "utest_u", "utest_p", "auc_ci_low", "auc_ci_high", "ground_truth",
            "accuracy", "clip_cos", "mpnet_cos", "n_images", "balanced_accuracy"} <= cols


def test_every_results_column_is_defined_in_the_pipeline_page():
    missing = sorted(results_columns() - documented_columns())
    assert missing == [], f"document these results.csv columns in docs/pipeline.md: {missing}"


def test_the_page_defines_no_column_the_code_cannot_write():
    extra = sorted(documented_columns() - results_columns())
    assert extra == [], f"docs/pipeline.md defines columns no code writes: {extra}"
