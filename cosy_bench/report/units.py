"""Neurons vs SAE latents side by side: for every run with ``units=sae`` and a run of the
same model, base layer, method, generator and prompt on the layer's neurons, one pair of
rows: mean AUC and MAD, the units with a probe-set truth, the ground-truth match over them,
the ground-truth coverage of their K explanations, the mean polysemanticity of the
explanations (``explainer.top_k`` > 1), the monosemantic fraction, and the dictionary's R^2,
L0 and dead latents."""

from __future__ import annotations

from html import escape

from cosy_bench.record import RunRecord

COLUMNS = ("model", "layer", "method", "units", "n", "AUC", "MAD", "with truth",
           "gt match", "coverage", "polysemanticity", "monosemantic", "R²", "L0", "dead")


def _key(record: RunRecord, layer: str) -> tuple:
    m = record.meta
    return (m.get("model"), layer, m.get("explainer"), m.get("generator"), m.get("prompt"))


def pairs(records: list[RunRecord]) -> list[tuple[RunRecord, RunRecord]]:
    """(neurons run, SAE run) pairs of a sweep (the latest neurons run of each key)."""
    neurons = {_key(r, r.meta.get("layer")): r for r in records if not r.meta.get("units")}
    return [(neurons[k], r) for r in records if r.meta.get("units") == "sae"
            and (k := _key(r, r.meta.get("base_layer"))) in neurons]


def _f(x, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def unit_row(record: RunRecord) -> dict:
    """The side-by-side figures of one run."""
    s, u = record.summary, record.summary.get("units", {})
    sae = u.get("sae", {})
    n, n_truth = u.get("n_units"), u.get("n_with_truth")
    return {"model": record.meta.get("model"), "layer": record.meta.get("base_layer")
            or record.meta.get("layer"), "method": record.meta.get("explainer"),
            "units": "sae latents" if record.meta.get("units") else "neurons",
            "n": record.meta.get("n_neurons"),
            "AUC": _f((s.get("auc") or {}).get("mean")), "MAD": _f((s.get("mad") or {}).get("mean")),
            "with truth": f"{n_truth}/{n} ({n_truth / n:.0%})" if n else "–",
            "gt match": _f(u.get("ground_truth_match")),
            "coverage": _f(s.get("ground_truth_coverage")),
            "polysemanticity": _f(s.get("polysemanticity")),
            "monosemantic": _f(u.get("monosemantic_fraction")),
            "R²": _f(sae.get("r2")), "L0": _f(sae.get("l0"), 1),
            "dead": _f(sae.get("dead_fraction"))}


def side_by_side(records: list[RunRecord]) -> str:
    """The HTML section ('' where the sweep holds no neurons/latents pair)."""
    found = pairs(records)
    if not found:
        return ""
    head = "".join(f"<th>{escape(c)}</th>" for c in COLUMNS)
    body = []
    for i, pair in enumerate(found):
        for j, rec in enumerate(pair):
            row = unit_row(rec)
            cls = ' class="group"' if i and not j else ""
            body.append(f"<tr{cls}>" + "".join(
                f'<td{" class=num" if c not in ("model", "layer", "method", "units") else ""}>'
                f"{escape(str(row[c]))}</td>" for c in COLUMNS) + "</tr>")
    return ("<h2>Neurons vs SAE latents</h2><p class=muted>Each layer's neurons and the "
            "latents of its sparse dictionary (units=sae), same method. With truth: units "
            "whose probe-set AUROC reaches the threshold for at least one planted concept; "
            "gt match: of those, the fraction whose explanation names one of them; "
            "coverage: the fraction of their planted concepts named by any of their "
            "explanations; polysemanticity: 1 minus the mean pairwise cosine of a unit's "
            "explanations (explainer.top_k &gt; 1); "
            "monosemantic: of those, the fraction with exactly one.</p>"
            f"<table><tr>{head}</tr>{''.join(body)}</table>")
