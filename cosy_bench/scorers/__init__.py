"""Scores of neuron explanations, as pure functions on activation tensors: ``control
[N, K]`` and ``concept [M, K]`` in, one float64 value per neuron ``[K]`` out, vectorised over
neurons. :mod:`.cosy` holds CoSy's AUC, MAD and U test, :mod:`.sorted` their fast path on a
control set sorted once, and :mod:`.registry` the one table of scorers (:data:`REGISTRY`,
its read view :data:`SCORERS`) that the ``scorer=`` configs name. Imports nothing else of
cosy_bench."""

from cosy_bench.scorers.cosy import (
    MannWhitneyResult,
    auc,
    mad,
    near_constant,
    utest,
    utest_p,
    utest_u,
)
from cosy_bench.scorers.registry import (
    REGISTRY,
    SCORERS,
    Scorer,
    higher_is_better,
    register,
    score_all,
)

__all__ = [
    "REGISTRY",
    "SCORERS",
    "MannWhitneyResult",
    "Scorer",
    "auc",
    "higher_is_better",
    "mad",
    "near_constant",
    "register",
    "score_all",
    "utest",
    "utest_p",
    "utest_u",
]
