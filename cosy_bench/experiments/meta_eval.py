"""Meta-evaluation: can a scorer be trusted? NeuronEval's two sanity tests (Oikarinen, Yan &
Weng, ICML 2025; Trustworthy-ML-Lab/Neuron_Eval ``theoretical_sanity_check.ipynb``) on every
scorer of the suite, in CoSy's setting (positives = images of the explanation, negatives =
control images):

* **missing labels**: relabel positives as negatives; a trustworthy score must fall;
* **extra labels**: add negatives that do not show the concept to the positives; it must fall.

A test *passes* on a draw when the score falls by more than ``epsilon`` (0.001) of the
metric's range; the pass rate is over draws (and neurons). Two settings:

* ``simulated`` (NeuronEval's theoretical test): a binary neuron equal to its concept, active
  on a fraction ``gamma`` of ``n_inputs`` inputs; missing labels keep a Bernoulli(0.5) half of
  the positives, extra labels add each negative with probability ``gamma / (1 - gamma)``.
  Binarising metrics use ``alpha = gamma``. Ranges: [0, 1] ([-1, 1] for correlation, cosine);
  for MAD and the U test the observed min/max at that gamma, as NeuronEval does for
  unbounded metrics.
* ``toy``: the toy CNN's ``concepts`` units with their true concepts: ``n_images`` synthetic
  images per concept against the control scenes, whose true labels are known. Missing labels
  move half of the positives to the negatives; extra labels move ``n_images`` control scenes
  without the concept to the positives. Also reported: how far CoSy's AUC moves when the
  control scenes that *do* show the concept are dropped from the negatives.

``utest`` is scored as ``-log10(p)`` (the evidence of the U test; higher = better).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from cosy_bench.cache.store import RankAgreedCache, write_text_atomic
from cosy_bench.context import RunContext, count_neurons
from cosy_bench.experiments.sanity import format_rows
from cosy_bench.loops.synthesis import synthesize
from cosy_bench.models import create_model
from cosy_bench.models.layers import LayerExtractor
from cosy_bench.scorers import SCORERS, utest_p
from cosy_bench.scorers.neuron_eval import NEURON_EVAL, with_alpha
from cosy_bench.synthetic import concept_activations, work_items

log = logging.getLogger("cosy_bench")

RANGES = {"auc": (0.0, 1.0), "correlation": (-1.0, 1.0), "cosine": (-1.0, 1.0)}
#: NeuronEval's verdicts (missing passes, extra passes) for the metrics both have, from its
#: theoretical test (AUC = its "inverse AUC" up to ties: it breaks them with random noise,
#: AUC with mid-ranks; its correlation is Pearson x (D-1)/D). Its MAD is the plain mean
#: difference (FAIL/pass there); CoSy's MAD divides by the control std, which is 0 on a
#: binary neuron's clean negatives (MAD := 0), so the two are not compared.
NEURON_EVAL_VERDICTS = {
    "auc": (False, True), "correlation": (True, True),
    "cosine": (True, True), "auprc": (True, True), "inverse_auprc": (True, False),
    "f1": (True, True), "iou": (True, True), "balanced_accuracy": (True, False),
}


def score(name: str, control: torch.Tensor, concept: torch.Tensor,
          alpha: float | None = None) -> torch.Tensor:
    """One metric of the suite, ``[K]`` (``utest``: ``-log10 p``)."""
    if name == "utest":
        return -torch.log10(utest_p(control, concept).clamp_min(1e-300))
    if name in NEURON_EVAL:
        return with_alpha(name, alpha)(control, concept)
    return SCORERS[name](control, concept)


def _range(name: str, values: list[torch.Tensor]) -> float:
    if name in RANGES:
        lo, hi = RANGES[name]
    elif name in NEURON_EVAL:
        lo, hi = 0.0, 1.0
    else:
        allv = torch.cat([v.flatten() for v in values])
        lo, hi = float(allv.min()), float(allv.max())
    return (hi - lo) or 1.0


# ----------------------------------------------------------------------------- simulated


def _split_score(name: str, acts: torch.Tensor, labels: torch.Tensor, alpha: float):
    return score(name, acts[~labels], acts[labels], alpha=alpha)


def simulated(metrics: list[str], gammas: list[float], n_inputs: int, seeds: int,
              epsilon: float, seed: int = 0) -> list[dict]:
    """NeuronEval's theoretical test; one row per (gamma, test, metric)."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for gamma in gammas:
        n1 = int(gamma * n_inputs)
        acts = torch.zeros(n_inputs, 1)
        acts[:n1] = 1.0
        truth = acts[:, 0] > 0
        draws = {"missing": [], "extra": []}
        for _ in range(seeds):
            missing = truth.clone()
            missing[:n1] = torch.rand(n1, generator=gen) > 0.5
            if missing.any():
                draws["missing"].append(missing)
            extra = truth | (torch.rand(n_inputs, generator=gen) < n1 / (n_inputs - n1))
            draws["extra"].append(extra)
        for name in metrics:
            clean = _split_score(name, acts, truth, gamma)
            after = {t: [_split_score(name, acts, lab, gamma) for lab in labs]
                     for t, labs in draws.items()}
            span = _range(name, [clean, *after["missing"], *after["extra"]])
            for test, values in after.items():
                diffs = torch.stack([(v - clean) / span for v in values])
                rows.append({"setting": "simulated", "gamma": gamma, "test": test,
                             "metric": name, "pass_rate": float((diffs < -epsilon).double()
                                                                .mean()),
                             "mean_diff": float(diffs.mean())})
    return rows


# ----------------------------------------------------------------------------- toy world


def toy_activations(cfg: DictConfig):
    """Control activations [N, K], concept activations [M, K] (each unit on the images of its
    true concept), the control scenes' labels of each unit's concept [N, K] and the truths."""
    cache = RankAgreedCache(cfg.paths.cache_dir)
    model = create_model(cfg.model, seed=cfg.seed)
    layer = model.layer(cfg.layer.name)
    extractor = LayerExtractor(model.module, layer)
    ctx = RunContext(cfg, cache, model, layer, extractor, count_neurons(extractor,
                                                                       model.transform))
    truths = model.ground_truth(layer)
    if truths is None:
        raise ValueError(f"meta_eval needs a layer with known concepts; {layer.name!r} has none"
                         " (use layer=concepts or layer=output)")
    control_ds = instantiate(cfg.dataset)
    control = ctx.activations(control_ds, "control")
    generator = instantiate(cfg.generator)
    items = work_items(cache, generator, cfg.prompt.template, list(dict.fromkeys(truths)),
                       cfg.n_images)
    synthesize(generator, [it for its in items.values() for it in its], ctx.trainer(),
               batch_size=cfg.generator_batch_size)
    per = concept_activations(ctx, generator, items)
    concept = torch.stack([per[t][:, k] for k, t in enumerate(truths)], dim=1)
    index = {c: i for i, c in enumerate(control_ds.concepts)}
    shows = torch.stack([control_ds.labels[:, index[t]] for t in truths], dim=1).bool()
    return control, concept, shows, truths


def toy(metrics: list[str], control: torch.Tensor, concept: torch.Tensor,
        shows: torch.Tensor, seeds: int, epsilon: float, seed: int = 0) -> list[dict]:
    """The two tests on the toy world's units (batched over units); rows per (test, metric)."""
    gen = torch.Generator().manual_seed(seed)
    (n, k), m = control.shape, concept.shape[0]
    alpha = m / (n + m)
    draws = {"missing": [], "extra": []}
    for _ in range(seeds):
        order = torch.rand(m, k, generator=gen).argsort(0)
        moved, kept = order[: m // 2], order[m // 2:]
        draws["missing"].append((torch.cat([control, concept.gather(0, moved)]),
                                 concept.gather(0, kept)))
        # m control scenes without the concept per unit become positives
        key = torch.rand(n, k, generator=gen) + shows.double()  # showing ones sort last
        pick = key.argsort(0)
        extra, rest = pick[:m], pick[m:]
        draws["extra"].append((control.gather(0, rest.sort(0).values),
                               torch.cat([concept, control.gather(0, extra)])))
    rows = []
    for name in metrics:
        clean = score(name, control, concept, alpha)
        after = {t: [score(name, c0, c1, alpha) for c0, c1 in d] for t, d in draws.items()}
        span = _range(name, [clean, *after["missing"], *after["extra"]])
        for test, values in after.items():
            diffs = torch.stack([(v - clean) / span for v in values])
            rows.append({"setting": "toy", "gamma": alpha, "test": test, "metric": name,
                         "pass_rate": float((diffs < -epsilon).double().mean()),
                         "mean_diff": float(diffs.mean())})
    return rows


def auc_with_clean_negatives(control: torch.Tensor, concept: torch.Tensor,
                             shows: torch.Tensor) -> dict:
    """CoSy's AUC with every control scene as a negative vs with only those that do not
    show the unit's concept: per-unit difference (mean, max) and the share of such scenes."""
    full = SCORERS["auc"](control, concept)
    clean = torch.stack([SCORERS["auc"](control[~shows[:, j], j:j + 1], concept[:, j:j + 1])[0]
                         for j in range(control.shape[1])])  # one control set per unit
    diff = clean - full
    return {"auc_all_negatives": float(full.mean()), "auc_clean_negatives": float(clean.mean()),
            "mean_increase": float(diff.mean()), "max_increase": float(diff.max()),
            "share_of_control_showing_concept": float(shows.double().mean())}


# ----------------------------------------------------------------------------- report


def verdicts(rows: list[dict], threshold: float = 0.95) -> dict[str, dict]:
    """Per metric: passes each simulated test (pass rate >= threshold at every gamma), its
    toy-world pass rates, NeuronEval's verdict and whether they agree."""
    out: dict[str, dict] = {}
    for r in rows:
        v = out.setdefault(r["metric"], {"missing": True, "extra": True})
        if r["setting"] == "simulated":
            v[r["test"]] = v[r["test"]] and r["pass_rate"] >= threshold
        else:
            v[f"toy_{r['test']}"] = r["pass_rate"]
    for name, v in out.items():
        ref = NEURON_EVAL_VERDICTS.get(name)
        v["neuron_eval"] = ref
        v["agrees"] = None if ref is None else (v["missing"], v["extra"]) == ref
    return out


def table(rows: list[dict], verdict: dict[str, dict]) -> str:
    cols: dict[str, dict] = {}
    for r in rows:
        key = (f"{r['test']} g={r['gamma']:g}" if r["setting"] == "simulated"
               else f"toy {r['test']}")
        cols.setdefault(r["metric"], {"metric": r["metric"]})[key] = f"{r['pass_rate']:.0%}"
    for name, row in cols.items():
        ref = verdict[name]["neuron_eval"]
        row["NeuronEval"] = "-" if ref is None else "/".join("pass" if p else "FAIL"
                                                             for p in ref)
        row["agrees"] = {None: "-", True: "yes", False: "NO"}[verdict[name]["agrees"]]
    return format_rows(list(cols.values()))


def run(cfg: DictConfig, output_dir: str | Path) -> dict:
    """Both settings; writes ``meta_eval.csv`` / ``meta_eval.json`` and prints the table."""
    output_dir = Path(output_dir)
    me = cfg.meta_eval
    metrics = list(me.metrics)
    rows = simulated(metrics, list(me.simulated.gammas), int(me.simulated.n_inputs),
                     int(me.simulated.seeds), float(me.epsilon))
    extra = None
    if me.toy.enabled:
        control, concept, shows, _ = toy_activations(cfg)
        rows += toy(metrics, control, concept, shows, int(me.toy.seeds), float(me.epsilon))
        extra = auc_with_clean_negatives(control, concept, shows)
    verdict = verdicts(rows)
    text = table(rows, verdict)
    print("\nNeuronEval sanity tests: pass rate (score fell by > epsilon of its range)\n" + text)
    if extra is not None:
        print("\nCoSy AUC, toy world, control scenes showing the concept counted as negatives "
              f"vs dropped: {extra['auc_all_negatives']:.4f} vs "
              f"{extra['auc_clean_negatives']:.4f} (mean +{extra['mean_increase']:.4f}, max "
              f"+{extra['max_increase']:.4f}; {extra['share_of_control_showing_concept']:.1%}"
              " of control scenes show a unit's concept)")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(output_dir / "meta_eval.csv", buf.getvalue())
    report = {"rows": rows, "verdicts": verdict, "toy_auc_negatives": extra,
              "table": text}
    write_text_atomic(output_dir / "meta_eval.json",
                      json.dumps(report, indent=2, default=lambda x: None if
                                 isinstance(x, float) and math.isnan(x) else x))
    return report
