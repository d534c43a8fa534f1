"""Paired comparisons of explanation methods over the neurons both scored.

Two runs are comparable when they score the same neurons of the same model, layer and
weights against the same control set, with the same generator and prompt: only the method
differs, so each neuron gives one paired difference ``d_k = score_A(k) - score_B(k)``, read
the scorer's way (``higher_is_better`` of :mod:`cosy_bench.scorers.registry`: for a
lower-is-better score such as ``utest_p``, ``d < 0`` means A is better).
For each pair and score: the mean of ``d`` with a seeded percentile-bootstrap 95% interval
(``resamples`` draws of the neurons with replacement, default 2,000) and the two-sided
Wilcoxon signed-rank p-value (``scipy.stats.wilcoxon``, zero differences dropped). A
difference is marked significant when the bootstrap interval excludes 0 and ``p < alpha``.
Two runs that gave every common neuron the same explanation are marked ``identical`` (their
scores are equal by construction; the report says "identical explanations").
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from omegaconf import OmegaConf
from scipy.stats import wilcoxon

from cosy_bench.leaderboard import method_rank
from cosy_bench.record import RunRecord
from cosy_bench.scorers import registry

#: what must be equal for two runs to be compared (method aside)
SETTING = ("dataset_id", "model", "layer", "weights", "generator", "prompt", "n_images")


def bootstrap_mean_ci(diff: np.ndarray, resamples: int = 2000, level: float = 0.95,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap ``level`` interval of the mean of ``diff [n]``: ``resamples``
    means of ``n`` values drawn with replacement (one ``[resamples, n]`` draw, seeded)."""
    diff = np.asarray(diff, dtype=np.float64)
    if diff.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(resamples, diff.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def wilcoxon_p(diff: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of ``diff`` (1.0 when every difference is 0,
    NaN with fewer than 2 values)."""
    diff = np.asarray(diff, dtype=np.float64)
    if diff.size < 2:
        return math.nan
    if not np.any(diff != 0):
        return 1.0
    return float(wilcoxon(diff).pvalue)


@dataclass
class Comparison:
    """Method ``a`` minus method ``b`` on one setting, for one score."""

    setting: dict
    score: str
    a: str
    b: str
    n: int
    mean: float
    ci_low: float
    ci_high: float
    p: float
    significant: bool
    #: which way the score is better (a lower-is-better score reads ``mean < 0`` as A better)
    higher_is_better: bool = True
    #: both methods gave every common neuron the same explanation: the same images, the
    #: same scores; there is nothing to compare (the report says so, not ``+0.000``, p = 1)
    identical: bool = False

    @property
    def better(self) -> str | None:
        """The better method of the two where the difference is significant, else ``None``."""
        if not self.significant:
            return None
        return self.a if (self.mean > 0) == self.higher_is_better else self.b

    def as_row(self) -> dict:
        return {**self.setting, "score": self.score, "a": self.a, "b": self.b, "n": self.n,
                "mean_diff": self.mean, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "p_wilcoxon": self.p, "significant": self.significant,
                "higher_is_better": self.higher_is_better, "better": self.better,
                "identical_explanations": self.identical}


def _scores(record: RunRecord, score: str) -> dict[int, float]:
    out = {}
    for row in record.rows:  # rank 1 only (explainer.top_k: a unit's other rows follow)
        if int(row.get("rank") or 1) != 1:
            continue
        value = row.get(score)
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[int(row["neuron"])] = float(value)
    return out


def _texts(record: RunRecord) -> dict[int, str]:
    return {int(row["neuron"]): str(row.get("explanation")) for row in record.rows}


def setting_of(record: RunRecord) -> dict:
    meta = record.meta
    return {key: meta.get(key) for key in SETTING}


def groups(records: list[RunRecord]) -> list[tuple[dict, dict[str, RunRecord]]]:
    """Records grouped by :data:`SETTING`; within a group ``{method: record}`` in the paper's
    method order (a repeated method gets ``#2``, ``#3`` ...)."""
    by_setting: dict[tuple, list[RunRecord]] = {}
    for record in records:
        key = tuple(str(v) for v in setting_of(record).values())
        by_setting.setdefault(key, []).append(record)
    out = []
    for recs in by_setting.values():
        recs = sorted(recs, key=lambda r: (method_rank(r.meta.get("explainer")), str(r.folder)))
        methods: dict[str, RunRecord] = {}
        for r in recs:
            name, i = str(r.meta.get("explainer")), 2
            while name in methods:
                name, i = f"{r.meta.get('explainer')}#{i}", i + 1
            methods[name] = r
        out.append((setting_of(recs[0]), methods))
    return out


def scored(records: list[RunRecord]) -> list[str]:
    """The scores to compare: AUC and MAD, then every other results column the records
    summarise whose direction a scorer declares (``n_images`` and the like left out)."""
    names = {n for r in records for n in r.scores}
    rest = sorted(n for n in names - {"auc", "mad"} if registry.higher_is_better(n) is not None
                  or any(n in (OmegaConf.select(r.cfg, "scorer", default=None) or {})
                         for r in records))
    return ["auc", "mad", *rest]


def compare(records: list[RunRecord], scores: tuple[str, ...] | None = None,
            resamples: int = 2000, seed: int = 0, alpha: float = 0.05) -> list[Comparison]:
    """Every pair of methods within each setting of :func:`groups`, for each score
    (default :func:`scored`), over the neurons both runs scored (pairs with none in common
    are left out); each score read its scorer's way (``higher_is_better``)."""
    scores = scored(records) if scores is None else scores
    out = []
    for setting, methods in groups(records):
        for (name_a, rec_a), (name_b, rec_b) in itertools.combinations(methods.items(), 2):
            for score in scores:
                sa, sb = _scores(rec_a, score), _scores(rec_b, score)
                common = sorted(set(sa) & set(sb))
                if not common:
                    continue
                diff = np.array([sa[k] - sb[k] for k in common])
                low, high = bootstrap_mean_ci(diff, resamples, 0.95, seed)
                p = wilcoxon_p(diff)
                sig = bool(p < alpha and (low > 0 or high < 0))
                ta, tb = _texts(rec_a), _texts(rec_b)
                same = all(ta.get(k) == tb.get(k) for k in common) and not diff.any()
                out.append(Comparison(setting, score, name_a, name_b, len(common),
                                      float(diff.mean()), low, high, p, sig,
                                      rec_a.higher_is_better(score), same))
    return out
