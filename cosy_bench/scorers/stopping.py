"""When a neuron's AUC is decided: the stopping rule of ``n_images=auto``.

A neuron is decided once the ``level`` DeLong interval of its AUC (:func:`.intervals.auc_ci`)
is narrower than ``ci_width`` or, with a decision ``threshold``, lies wholly above or below
it. Inputs as the scorers': ``control [N, K]``, ``concept [M, K]`` (column ``k`` = neuron
``k`` on the ``M`` images of its explanation made so far); out: bool ``[K]``.
"""

from __future__ import annotations

from torch import Tensor

from cosy_bench.scorers.intervals import auc_ci


def decided(control: Tensor, concept: Tensor, ci_width: float = 0.1,
            threshold: float | None = None, level: float = 0.95) -> Tensor:
    """bool ``[K]``: the neuron's AUC interval is narrower than ``ci_width`` or excludes
    ``threshold``. A single concept image decides nothing (no variance estimate)."""
    if not ci_width > 0:
        raise ValueError(f"ci_width must be > 0 (e.g. 0.1), got {ci_width!r}")
    if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"the decision threshold is an AUC in [0, 1], got {threshold!r}")
    low, high = auc_ci(control, concept, level)
    done = (high - low) < ci_width
    if threshold is not None:
        done |= (low > threshold) | (high < threshold)
    return done & (concept.shape[0] >= 2)
