"""The one table of scorers: each declared once as a :class:`Scorer` in :data:`REGISTRY`.

A scorer's entry says everything the suite needs to know about it: the function, the columns
it writes into ``results.csv``, whether it runs on a control set sorted once (CoSy's AUC, MAD
and U test: :mod:`.sorted`), whether it scores texts rather than activations, which way is
better (``higher_is_better``, read by the report, the leaderboard and the paired
comparisons) and how the summary aggregates it over neurons. The ``scorer=`` configs
(``conf/scorer/<name>.yaml``) name entries of this table; a config may add one with a
``function:`` key (:func:`from_config`).

Activation scorers take ``control [N, K]`` and ``concept [M, K]`` (column ``k`` = neuron ``k``
on its own explanation's images) and return float64 ``[K]`` (or ``{column: [K]}`` for several
columns). :func:`score_all` computes several at once: inputs validated once, each control
column sorted once, then every concept value located by binary search.

>>> import torch
>>> control = torch.tensor([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0]])   # N = 3 images, K = 2
>>> concept = torch.tensor([[3.0, 0.0], [4.0, 1.0]])               # M = 2 images
>>> out = score_all(["auc", "utest"], control, concept)
>>> list(out)
['auc', 'utest_u', 'utest_p']
>>> out["auc"].tolist()
[1.0, 0.08333333333333333]
>>> REGISTRY["utest_p"].higher_is_better, higher_is_better("utest_u")
(False, True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from torch import Tensor

from cosy_bench.scorers import neuron_eval
from cosy_bench.scorers.cosy import _validate
from cosy_bench.scorers.label_similarity import label_similarity
from cosy_bench.scorers.sorted import score_sorted, sort_control

#: how a summary aggregates a column over neurons (``summary.json``: mean, std, n, the mean's
#: interval; ``median`` adds the median)
AGGREGATIONS = ("mean", "median")


@dataclass(frozen=True)
class Scorer:
    """One scorer, declared once.

    name: what ``scorer=`` names. fn: ``(control [N, K], concept [M, K]) -> float64 [K]`` (or
    ``{column: [K]}``); a text scorer's is ``(explanations, truths, encoders) -> {column: [K]}``.
    columns: the ``results.csv`` columns it writes, in order. higher_is_better: which way its
    columns are better; ``reversed_columns``: those read the other way (the U test's p-value).
    sorted: computed by :func:`~.sorted.score_sorted` on a control set sorted once. text:
    scores explanation texts against known concepts (no activations). aggregation: one of
    :data:`AGGREGATIONS`.
    """

    name: str
    fn: Callable
    columns: tuple[str, ...]
    higher_is_better: bool = True
    sorted: bool = False
    text: bool = False
    aggregation: str = "mean"
    reversed_columns: tuple[str, ...] = ()

    def __post_init__(self):
        if not self.columns:
            raise ValueError(f"scorer {self.name!r} declares no output column")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"scorer {self.name!r}: aggregation {self.aggregation!r} is not "
                             f"one of {AGGREGATIONS}")
        stray = set(self.reversed_columns) - set(self.columns)
        if stray:
            raise ValueError(f"scorer {self.name!r}: reversed_columns {sorted(stray)} are not "
                             f"among its columns {self.columns}")

    def column_higher_is_better(self, column: str) -> bool:
        """Which way ``column`` (one of :attr:`columns`) is better."""
        return self.higher_is_better != (column in self.reversed_columns)


def _via_sorted(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The first column of scorer ``name`` by sort-once-then-search (what :func:`score_all`
    computes): ``(control [N, K], concept [M, K]) -> float64 [K]``."""
    column = {"utest": "utest_u"}.get(name, name)

    def scorer(control: Tensor, concept: Tensor) -> Tensor:
        _validate(control, concept, min_control=2 if name == "mad" else 1)
        return score_sorted([name], sort_control(control), concept)[column]

    scorer.__name__ = scorer.__qualname__ = name
    scorer.__doc__ = (f"{name} of every neuron, float64 ``[K]``, from ``control [N, K]`` and "
                      f"``concept [M, K]``: each control column sorted once, then searched.")
    return scorer


_REGISTRY: dict[str, Scorer] = {}
#: every scorer by name (read-only; add one with :func:`register`)
REGISTRY: Mapping[str, Scorer] = MappingProxyType(_REGISTRY)


def register(scorer: Scorer, replace: bool = False) -> Scorer:
    """Add ``scorer`` to :data:`REGISTRY` (``replace=True`` to redeclare a name)."""
    if scorer.name in _REGISTRY and not replace and _REGISTRY[scorer.name] != scorer:
        raise ValueError(f"a scorer named {scorer.name!r} is registered already; pick another "
                         "name or pass replace=True")
    _REGISTRY[scorer.name] = scorer
    return scorer


for _name, _cols, _rev in (("auc", ("auc",), ()), ("mad", ("mad",), ()),
                           ("utest", ("utest_u", "utest_p"), ("utest_p",))):
    register(Scorer(_name, _via_sorted(_name), _cols, sorted=True, reversed_columns=_rev))
register(Scorer("utest_p", _via_sorted("utest_p"), ("utest_p",), higher_is_better=False,
                sorted=True))
for _name in ("correlation", "cosine", "auprc", "inverse_auprc", "f1", "iou",
              "balanced_accuracy"):
    register(Scorer(_name, getattr(neuron_eval, _name), (_name,)))
register(Scorer("label_similarity", label_similarity, ("accuracy", "clip_cos", "mpnet_cos"),
                text=True))


def get(name: str) -> Scorer:
    """The entry of ``name``; a ``ValueError`` listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown scorer {name!r}; known: {sorted(_REGISTRY)} (add one with "
                         "cosy_bench.scorers.register or a function: key in its yaml)") from None


def sorted_names() -> tuple[str, ...]:
    """The scorers computed on a control set sorted once."""
    return tuple(n for n, s in _REGISTRY.items() if s.sorted)


def columns(names: Iterable[str]) -> list[str]:
    """The output columns of ``names``, in order, each once."""
    return list(dict.fromkeys(c for n in names for c in get(n).columns))


def _owner(column: str) -> Scorer | None:
    """The scorer that decides about a results column: the one of that name (``utest_p``),
    else the one writing it (``utest_u``: ``utest``); ``None`` where no scorer writes it."""
    if column in _REGISTRY:
        return _REGISTRY[column]
    return next((s for s in _REGISTRY.values() if column in s.columns), None)


def higher_is_better(column: str) -> bool | None:
    """Which way a results column is better (``None``: a column no scorer writes)."""
    owner = _owner(column)
    if owner is None:
        return None
    return owner.column_higher_is_better(column) if column in owner.columns \
        else owner.higher_is_better


def aggregation(column: str) -> str:
    """How the summary aggregates ``column`` over neurons: its scorer's, else the mean."""
    owner = _owner(column)
    return "mean" if owner is None else owner.aggregation


def from_config(name: str, node: Mapping | None) -> Scorer:
    """The scorer a ``conf/scorer/<name>.yaml`` entry names, registered from its
    ``function:`` (a dotted path) where new; its ``higher_is_better`` must agree with the
    registry's."""
    node = {} if node is None else node
    if name not in _REGISTRY:
        if not node.get("function"):
            get(name)  # raises, listing the known names
        from hydra.utils import get_method

        register(Scorer(name, get_method(str(node["function"])),
                        tuple(node.get("columns") or (name,)),
                        higher_is_better=bool(node.get("higher_is_better", True)),
                        aggregation=str(node.get("aggregation", "mean"))))
    scorer = _REGISTRY[name]
    hib = node.get("higher_is_better")
    if hib is not None and bool(hib) != scorer.higher_is_better:
        raise ValueError(f"scorer={name}: higher_is_better={hib} in its yaml but the registry "
                         f"declares {scorer.higher_is_better}; make them agree")
    return scorer


class _Functions(Mapping):
    """Read view ``{name: fn}`` of the activation scorers (text scorers left out)."""

    def __getitem__(self, name: str) -> Callable[[Tensor, Tensor], Tensor]:
        scorer = _REGISTRY.get(name)
        if scorer is None or scorer.text:
            raise KeyError(name)
        return scorer.fn

    def __iter__(self) -> Iterator[str]:
        return (n for n, s in _REGISTRY.items() if not s.text)

    def __len__(self) -> int:
        return sum(1 for s in _REGISTRY.values() if not s.text)


#: Scorers by name, each ``(control [N, K], concept [M, K]) -> float64 [K]`` (a read view of
#: :data:`REGISTRY`). ``"utest"`` gives the U statistic and ``"utest_p"`` its p-value.
SCORERS: Mapping[str, Callable[[Tensor, Tensor], Tensor]] = _Functions()


def score_all(names: Iterable[str], control: Tensor, concept: Tensor) -> dict[str, Tensor]:
    """Compute the requested scores once each, sharing the work between them.

    Args:
        names: activation scorer names of :data:`REGISTRY`; repeats are ignored.
        control: ``[N, K]`` control activations.
        concept: ``[M, K]``; column ``k`` = neuron ``k`` on its explanation's images.

    Returns:
        ``{column: float64 [K]}``, the scorers' :attr:`Scorer.columns` in the order requested
        (``"utest"`` -> ``utest_u`` and ``utest_p``). The inputs are validated once; the
        sorted scorers sort each control column once (:func:`~.sorted.sort_control`) and
        locate all concept values by binary search (:func:`~.sorted.score_sorted`).
    """
    names = list(dict.fromkeys(names))
    if not names:
        raise ValueError(f"no scorer requested; known: {sorted(SCORERS)}")
    unknown = [n for n in names if n not in _REGISTRY]
    if unknown:
        raise ValueError(f"unknown scorer(s) {unknown}; known: {sorted(SCORERS)}")
    text = [n for n in names if _REGISTRY[n].text]
    if text:
        raise ValueError(f"{text} score explanation texts, not activations: the pipeline "
                         "runs them (cosy_bench.pipeline.text_scores)")
    fast = [n for n in names if _REGISTRY[n].sorted]
    _validate(control, concept, min_control=2 if "mad" in names else 1,
              control_nan=len(fast) < len(names))  # all sorted: NaN is found sorted
    # the tie sums only where a U test needs them (one pass less for AUC and MAD)
    utest = bool({"utest", "utest_p"} & set(fast))
    out = score_sorted(fast, sort_control(control, ties=utest), concept) if fast else {}
    for name in names:
        scorer = _REGISTRY[name]
        if not scorer.sorted:
            value = scorer.fn(control, concept)
            out.update(value if isinstance(value, Mapping) else {scorer.columns[0]: value})
    return {c: out[c] for c in columns(names)}
