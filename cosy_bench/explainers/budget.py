"""The memory budget of explainers (``explainer.max_memory_gb``): how many bytes of working
set an explainer may use on top of its inputs (the probe activations ``[N, K]``, CLIP
embeddings and labels the pipeline already holds), and the error when it cannot fit.

``None`` (the yaml default) means ``min(4 GiB, half of the memory available now)``
(``MemAvailable`` of ``/proc/meminfo``; 4 GiB where that cannot be read). Budgets are in GiB
(``2**30`` bytes). Chunking under a budget never changes results (see each explainer), so the
budget is not part of any cache key.
"""

from __future__ import annotations

DEFAULT_GB = 4.0
GIB = 2**30


def available_bytes() -> int | None:
    """``MemAvailable`` in bytes, or None where ``/proc/meminfo`` cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def budget_bytes(max_memory_gb: float | None) -> int:
    """The budget in bytes: ``max_memory_gb`` GiB, or the default described above."""
    if max_memory_gb is None:
        avail = available_bytes()
        default = int(DEFAULT_GB * GIB)
        return default if avail is None else min(default, avail // 2)
    if not max_memory_gb > 0:
        raise ValueError(f"explainer.max_memory_gb must be > 0 (GiB) or null, got {max_memory_gb!r}")
    return int(max_memory_gb * GIB)


def too_small(method: str, budget: int, needed: int, what: str, fix: str) -> ValueError:
    """The error for a budget below the smallest chunk: names the option and the fix."""
    return ValueError(
        f"{method}: explainer.max_memory_gb={budget / GIB:.3g} GiB is below its smallest "
        f"working set, {needed / GIB:.3g} GiB ({what}); raise explainer.max_memory_gb to at "
        f"least {needed / GIB:.3g} or {fix}"
    )
