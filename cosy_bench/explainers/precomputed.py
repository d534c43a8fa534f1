"""Read published neuron explanations (the CSV files CoSy evaluates) into ``{neuron: text}``.

Three layouts are recognised from the header (extra columns are ignored):

* ``invert``: ``neuron,concept[,concept_id,metric]`` (INVERT). One row per neuron.
* ``layer_unit``: ``layer,unit,description[,similarity]`` (CLIP-Dissect; MILAN has no
  ``similarity``). Rows may cover several layers; see ``layer`` in :func:`read_explanations`.
* ``falcon``: ``group,...,concept_set_noun_phrases`` (FALCON). ``concept_set_noun_phrases``
  holds a Python-literal list of ``(phrase, score)`` tuples, best first; the explanation is
  the first phrase (as in the CoSy authors' code); ``group`` is the neuron index. The list is
  parsed with :func:`ast.literal_eval`, which evaluates no code.

Texts are returned as written, only stripped of surrounding whitespace (no lower-casing:
CoSy lower-cased MILAN's descriptions before generating images; that is the caller's choice).
The module is pure Python (stdlib ``csv`` and ``ast``).

Several explanations per neuron (``explainer.top_k``): any layout may add a ``rank`` column
(1-based, 1 = best); a neuron then has one row per rank (a neuron twice at the same rank is
an error) and the run keeps its ``top_k`` best ranks. A FALCON list gives its first
``top_k`` phrases. Without ``top_k`` (1) only each neuron's best rank is read.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path

from cosy_bench.explainers.base import Explainer, Explanations

__all__ = ["FORMATS", "PrecomputedExplainer", "detect_format", "read_explanations",
           "read_ranked"]

#: Format name -> the columns a header must contain for it.
FORMATS: dict[str, frozenset[str]] = {
    "invert": frozenset({"neuron", "concept"}),
    "layer_unit": frozenset({"layer", "unit", "description"}),
    "falcon": frozenset({"group", "concept_set_noun_phrases"}),
}

# Other names accepted for ``format=`` (case-insensitive, "-" and " " read as "_").
_ALIASES = {
    "clip_dissect": "layer_unit",
    "clipdissect": "layer_unit",
    "milan": "layer_unit",
}

# Format -> (neuron id column, text column).
_COLUMNS = {
    "invert": ("neuron", "concept"),
    "layer_unit": ("unit", "description"),
    "falcon": ("group", "concept_set_noun_phrases"),
}


def _normalise_format(name: str) -> str:
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    key = _ALIASES.get(key, key)
    if key not in FORMATS:
        known = sorted(FORMATS) + sorted(_ALIASES)
        raise ValueError(f"unknown explanation format {name!r}; known: {known}")
    return key


def _formats_matching(columns: list[str]) -> list[str]:
    present = set(columns)
    return [name for name, required in FORMATS.items() if required <= present]


def _expected_sets() -> str:
    return "; ".join(f"{name}: {sorted(cols)}" for name, cols in FORMATS.items())


def _read_rows(path: str | os.PathLike[str]) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header (stripped names) and ``(line number, row)`` pairs of a CSV file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"explanation file not found: {os.fspath(path)!r}")
    # utf-8-sig drops a byte-order mark if a spreadsheet program wrote one.
    try:
        return _parse_rows(path)
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{os.fspath(path)}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset "
            f"{err.start} is not valid UTF-8); explanation files must be UTF-8: re-save it "
            "as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
        ) from None


def _parse_rows(path: str | os.PathLike[str]) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{os.fspath(path)}: file is empty (no header row)")
        header = [name.strip() for name in header]
        rows = []
        for record in reader:
            if not any(cell.strip() for cell in record):
                continue  # blank line
            if len(record) != len(header):
                raise ValueError(
                    f"{os.fspath(path)}, line {reader.line_num}: {len(record)} fields but the "
                    f"header has {len(header)} ({header})"
                )
            rows.append((reader.line_num, dict(zip(header, record, strict=True))))
    return header, rows


def detect_format(path: str | os.PathLike[str]) -> str:
    """Name of the layout of an explanation CSV (a key of :data:`FORMATS`), from its header."""
    header, _ = _read_rows(path)
    return _detect(path, header)


def _detect(path: str | os.PathLike[str], header: list[str]) -> str:
    matches = _formats_matching(header)
    if not matches:
        raise ValueError(
            f"{os.fspath(path)}: columns {header} match no known explanation format; "
            f"expected columns including one of: {_expected_sets()}"
        )
    if len(matches) > 1:
        raise ValueError(
            f"{os.fspath(path)}: columns {header} match several formats {matches}; "
            "pass format= to choose one"
        )
    return matches[0]


def _falcon_texts(cell: str) -> list[str]:
    """Every phrase of a FALCON list, best first (the first is :func:`_falcon_text`)."""
    _falcon_text(cell)  # its checks
    return [p[0] for p in ast.literal_eval(cell.strip())
            if isinstance(p, (list, tuple)) and p and isinstance(p[0], str) and p[0].strip()]


def _falcon_text(cell: str) -> str:
    try:
        phrases = ast.literal_eval(cell.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as err:
        raise ValueError(f"not a Python literal list of (phrase, score) tuples: {err}") from None
    if not isinstance(phrases, (list, tuple)) or not phrases:
        raise ValueError("expected a non-empty list of (phrase, score) tuples")
    top = phrases[0]
    if not isinstance(top, (list, tuple)) or not top or not isinstance(top[0], str):
        raise ValueError(f"expected (phrase, score) tuples, first item is {top!r}")
    return top[0]


def _neuron_id(value: str) -> int:
    text = value.strip()
    # int() alone would also accept "+3", "3_000" and non-ASCII digits.
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"neuron id {value!r} is not a non-negative integer")
    return int(text)


def _select_layer(
    path: str | os.PathLike[str],
    rows: list[tuple[int, dict[str, str]]],
    layer: str | None,
) -> list[tuple[int, dict[str, str]]]:
    layers = list(dict.fromkeys(row["layer"].strip() for _, row in rows))
    if len(layers) == 1:
        if layer is not None and layer != layers[0]:
            warnings.warn(
                f"{os.fspath(path)}: asked for layer {layer!r}, but the file holds only "
                f"layer {layers[0]!r}; using it",
                stacklevel=3,
            )
        return rows
    if layer is None:
        raise ValueError(
            f"{os.fspath(path)}: file holds several layers {layers}; pass layer= to pick one"
        )
    chosen = [(line, row) for line, row in rows if row["layer"].strip() == layer]
    if not chosen:
        raise ValueError(f"{os.fspath(path)}: no rows for layer {layer!r}; layers: {layers}")
    return chosen


def read_explanations(
    path: str | os.PathLike[str],
    layer: str | None = None,
    format: str | None = None,
) -> dict[int, str]:
    """Read one layer's explanations from a published CSV file (each neuron's best rank
    where the file has a ``rank`` column; all of them: :func:`read_ranked`).

    Args:
        path: the CSV file (UTF-8).
        layer: for ``layer_unit`` files (CLIP-Dissect, MILAN) holding several layers, the
            value of the ``layer`` column to keep (required then). A file holding a single
            layer is used whole; if ``layer`` names another one, a warning says so (published
            files name layers their own way, e.g. ``subset`` for ViT-B/16 features). Ignored
            for ``invert`` and ``falcon`` files, which have no layer column.
        format: force a layout instead of detecting it from the header: ``"invert"``,
            ``"layer_unit"`` (also ``"clip-dissect"``, ``"milan"``) or ``"falcon"``.

    Returns:
        ``{neuron index: explanation text}`` in file order.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the header fits no format (or several), the forced format's columns are
            missing, a neuron id is not a non-negative integer, a neuron appears twice, a text
            is empty, a FALCON list is malformed, the layer is missing or ambiguous, or the file
            has no rows. Messages name the file and the line.
    """
    return {k: texts[0] for k, texts in read_ranked(path, layer, format, top_k=1).items()}


def read_ranked(path: str | os.PathLike[str], layer: str | None = None,
                format: str | None = None, top_k: int = 1) -> dict[int, list[str]]:
    """Each neuron's ``top_k`` best explanations, best first (see :func:`read_explanations`
    for the arguments and errors; a ``rank`` column orders a neuron's rows, a FALCON list
    its phrases). Returns ``{neuron: [text of rank 1, rank 2, ...]}`` in file order."""
    header, rows = _read_rows(path)
    if format is None:
        fmt = _detect(path, header)
    else:
        fmt = _normalise_format(format)
        missing = sorted(FORMATS[fmt] - set(header))
        if missing:
            raise ValueError(
                f"{os.fspath(path)}: format {fmt!r} needs columns {sorted(FORMATS[fmt])}, "
                f"missing {missing}; columns found: {header}"
            )
    if not rows:
        raise ValueError(f"{os.fspath(path)}: no explanation rows after the header")
    if fmt == "layer_unit":
        rows = _select_layer(path, rows, layer)

    id_column, text_column = _COLUMNS[fmt]
    ranked = "rank" in header
    many = fmt == "falcon" and top_k > 1
    to_text: Callable[[str], str] = _falcon_text if fmt == "falcon" else str
    explanations: dict[int, dict[int, list[str]]] = {}
    first_line: dict[tuple[int, int], int] = {}
    for line, row in rows:
        where = f"{os.fspath(path)}, line {line}"
        try:
            neuron = _neuron_id(row[id_column])
        except ValueError as err:
            raise ValueError(f"{where}, column {id_column!r}: {err}") from None
        try:
            rank = _neuron_id(row["rank"]) if ranked else 1
        except ValueError as err:
            raise ValueError(f"{where}, column 'rank': {err} (ranks are 1, 2, ...; 1 = best)"
                             ) from None
        if (neuron, rank) in first_line:
            raise ValueError(
                f"{where}: duplicate neuron {neuron}" + (f" at rank {rank}" if ranked else "")
                + f" (first on line {first_line[neuron, rank]})"
            )
        try:
            texts = [t.strip() for t in _falcon_texts(row[text_column])] if many \
                else [to_text(row[text_column]).strip()]
        except ValueError as err:
            raise ValueError(f"{where}, column {text_column!r}: {err}") from None
        if not texts[0]:
            raise ValueError(f"{where}: empty explanation for neuron {neuron}")
        explanations.setdefault(neuron, {})[rank] = texts
        first_line[neuron, rank] = line
    return {k: [t for r in sorted(by_rank) for t in by_rank[r]][:top_k]
            for k, by_rank in explanations.items()}


class PrecomputedExplainer(Explainer):
    """Explanations read from a CSV in a published method's format (see the module docstring)."""

    name = "precomputed"

    def __init__(self, path: str, layer: str | None = None, format: str | None = None,
                 top_k: int = 1):
        self.set_top_k(top_k)
        self.path = path
        self.layer = layer
        self.format = format

    def cache_key(self) -> dict:
        """The settings and the file's content (SHA-256), not its name or time stamp."""
        p = Path(self.path)
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
        return {**super().cache_key(), "sha256": digest}

    def explain(self, ctx) -> Explanations:
        kwargs = {"format": self.format} if self.format else {}
        if self.top_k == 1:
            return Explanations(read_explanations(self.path, layer=self.layer, **kwargs))
        ranked = read_ranked(self.path, layer=self.layer, top_k=self.top_k, **kwargs)
        return Explanations.from_ranked([{"neuron": k, "label": t}
                                         for k, texts in ranked.items() for t in texts])
