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
    """``texts[neuron]`` is the explanation of that neuron; ``extra[name][neuron]`` more columns."""

    texts: dict[int, str]
    extra: dict[str, dict[int, Any]] = field(default_factory=dict)

    def to_csv(self) -> str:
        """CSV text (``neuron,explanation,...``); write it without newline translation."""
        buf = io.StringIO(newline="")
        cols = list(self.extra)
        writer = csv.writer(buf)
        writer.writerow(["neuron", "explanation", *cols])
        for k in sorted(self.texts):
            writer.writerow([k, self.texts[k], *(self.extra[c].get(k, "") for c in cols)])
        return buf.getvalue()

    @classmethod
    def from_csv(cls, text: str) -> Explanations:
        r"""The table of :meth:`to_csv`'s text; texts come back byte for byte (``\r``,
        ``\r\n``, quotes, commas, tabs, unicode) when the text was read with
        ``newline=""`` or as bytes, never through universal-newline translation."""
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
        texts = {int(r["neuron"]): r["explanation"] for r in rows}
        cols = [c for c in (rows[0].keys() if rows else []) if c not in ("neuron", "explanation")]
        extra = {c: {int(r["neuron"]): r[c] for r in rows} for c in cols}
        return cls(texts, extra)


class Explainer(ABC):
    """Subclasses set ``name`` and implement :meth:`explain`."""

    name: str = "explainer"
    #: True for explainers that label only the neurons the run evaluates
    #: (``RunContext.wanted``), e.g. MILAN, whose cost grows with every neuron described.
    explains_wanted_only: bool = False

    def cache_key(self) -> dict:
        """Everything that determines the explanations besides model, weights and layer."""
        return {"name": self.name, **{k: v for k, v in vars(self).items()
                                      if not k.startswith("_")}}

    @abstractmethod
    def explain(self, ctx: RunContext) -> Explanations:
        """Explanations of the neurons of ``ctx.layer`` (all of them, or those it can label)."""
