"""Scores of neuron explanations, as pure functions on activation tensors: ``control
[N, K]`` and ``concept [M, K]`` in, one float64 value per neuron ``[K]`` out, vectorised over
neurons. :mod:`.cosy` holds CoSy's AUC, MAD and U test and the registry :data:`SCORERS` that
the ``scorer=`` configs name. Imports nothing else of cosy_bench."""

from cosy_bench.scorers.cosy import (
    SCORE_COLUMNS,
    SCORERS,
    MannWhitneyResult,
    auc,
    mad,
    near_constant,
    score_all,
    utest,
    utest_p,
    utest_u,
)

__all__ = [
    "SCORERS",
    "SCORE_COLUMNS",
    "MannWhitneyResult",
    "auc",
    "mad",
    "near_constant",
    "score_all",
    "utest",
    "utest_p",
    "utest_u",
]
