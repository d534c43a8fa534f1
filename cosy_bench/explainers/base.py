"""The explainer interface: label every neuron of a layer with text.

An explainer returns an :class:`Explanations` table (neuron -> text, plus optional per-neuron
columns such as INVERT's AUROC). The pipeline caches it under a key made of
``Explainer.cache_key()`` (the method and its settings), the model, its weights and the layer.
"""

from __future__ import annotations

import csv
import io
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cosy_bench.context import RunContext


@dataclass
class Explanations:
    """``texts[neuron]`` is the (rank-1) explanation of that neuron; ``extra[name][neuron]``
    more columns. With ``explainer.top_k = K > 1``, ``more[neuron]`` lists the neuron's
    explanations of ranks 2..K (best first) and ``more_extra[name][neuron]`` their columns."""

    texts: dict[int, str]
    extra: dict[str, dict[int, Any]] = field(default_factory=dict)
    more: dict[int, list[str]] = field(default_factory=dict)
    more_extra: dict[str, dict[int, list[Any]]] = field(default_factory=dict)

    @classmethod
    def from_ranked(cls, rows: list[dict], columns: list[str] = (), text: str = "label"
                    ) -> Explanations:
        """The table of ``rows`` (dicts with ``neuron``, the explanation under ``text`` and
        ``columns``), each neuron's rows best first: its first row is rank 1, the next ones
        ranks 2, 3, ..."""
        out = cls({}, {c: {} for c in columns})
        for r in rows:
            k = int(r["neuron"])
            if k not in out.texts:
                out.texts[k] = r[text]
                for c in columns:
                    out.extra[c][k] = r[c]
            else:
                out.more.setdefault(k, []).append(r[text])
                for c in columns:
                    out.more_extra.setdefault(c, {}).setdefault(k, []).append(r[c])
        return out

    def ranked(self, neuron: int) -> list[str]:
        """The neuron's explanations, rank 1 first."""
        return [self.texts[neuron], *self.more.get(neuron, [])]

    def value(self, column: str, neuron: int, rank: int = 1):
        """The ``column`` value of the neuron's explanation of ``rank`` ('' where none)."""
        if rank == 1:
            return self.extra.get(column, {}).get(neuron, "")
        values = self.more_extra.get(column, {}).get(neuron, [])
        return values[rank - 2] if rank - 2 < len(values) else ""

    def to_csv(self, rank: bool | None = None) -> str:
        """CSV text (``neuron,[rank,]explanation,...``); write it without newline
        translation. ``rank``: write the 1-based ``rank`` column (default: only where some
        neuron has several explanations, so that a top-1 table is as before)."""
        buf = io.StringIO(newline="")
        cols = list(self.extra)
        rank = bool(self.more) if rank is None else rank
        writer = csv.writer(buf)
        writer.writerow(["neuron", *(["rank"] if rank else []), "explanation", *cols])
        for k in sorted(self.texts):
            for r, text in enumerate(self.ranked(k), 1):
                writer.writerow([k, *([r] if rank else []), text,
                                 *(self.value(c, k, r) for c in cols)])
        return buf.getvalue()

    @classmethod
    def from_csv(cls, text: str) -> Explanations:
        r"""The table of :meth:`to_csv`'s text; texts come back byte for byte (``\r``,
        ``\r\n``, quotes, commas, tabs, unicode) when the text was read with
        ``newline=""`` or as bytes, never through universal-newline translation."""
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
        cols = [c for c in (rows[0].keys() if rows else [])
                if c not in ("neuron", "explanation", "rank")]
        if rows and "rank" in rows[0]:
            rows = sorted(rows, key=lambda r: (int(r["neuron"]), int(r["rank"])))
        return cls.from_ranked(rows, cols, text="explanation")


class Explainer(ABC):
    """Subclasses set ``name`` and implement :meth:`explain`. Those that give several
    explanations per neuron take ``top_k`` (:meth:`set_top_k`; 1: one, as before)."""

    name: str = "explainer"
    #: True for explainers that label only the neurons the run evaluates
    #: (``RunContext.wanted``), e.g. MILAN, whose cost grows with every neuron described.
    explains_wanted_only: bool = False

    @property
    def top_k(self) -> int:
        """Explanations per neuron (best first)."""
        return getattr(self, "_top_k", 1)

    def set_top_k(self, top_k) -> None:
        """Check and keep ``top_k`` (an int >= 1); outside the attributes
        :meth:`cache_key` reads, so that ``top_k = 1`` leaves every cache key as before."""
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"explainer.top_k={top_k!r}: give an integer >= 1 (explanations "
                             f"per neuron, best first; 1 = one explanation)")
        self._top_k = top_k

    def cache_key(self) -> dict:
        """Everything that determines the explanations besides model, weights and layer
        (``top_k`` only where it is not 1)."""
        key = {"name": self.name, **{k: v for k, v in vars(self).items()
                                     if not k.startswith("_")}}
        if self.top_k != 1:
            key["top_k"] = self.top_k
        return key

    @abstractmethod
    def explain(self, ctx: RunContext) -> Explanations:
        """Explanations of the neurons of ``ctx.layer`` (all of them, or those it can label)."""
