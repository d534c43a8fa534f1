"""The report's HTML: one self-contained page (inline CSS, no script, no font, no URL that
leaves the report folder); every text from a run is escaped."""

from __future__ import annotations

import math
import re
from html import escape

from omegaconf import OmegaConf

from cosy_bench.leaderboard import cell, number
from cosy_bench.report.runs import Runs, run_label, table_columns
from cosy_bench.report.statistics import Comparison

CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:24px;color:#222;
max-width:1400px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:18px;border-bottom:1px solid #ddd;
padding-bottom:3px;margin-top:28px}h3{font-size:15px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left}th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.group td{border-top:2px solid #999}
.muted{color:#777;font-size:12px}.bad{color:#b00}.ok{color:#070}
.sig-pos{background:#d8f0d8}.sig-neg{background:#f6d6d6}
figure{display:inline-block;margin:6px 12px 6px 0}figure img{max-width:100%;border:1px solid #eee}
.cards{display:flex;flex-wrap:wrap;gap:8px;margin:8px 0}
.card{border:1px solid #ddd;border-radius:4px;padding:6px;width:440px;font-size:12px}
.card .head{font-size:13px;margin-bottom:2px}.card .gt{color:#666}
.strip{display:flex;flex-wrap:wrap;align-items:center;gap:2px;margin-top:3px}
.strip img{width:40px;height:40px;object-fit:cover;border:1px solid #eee}
.lab{display:inline-block;width:72px;color:#666}
.missing{display:inline-block;width:40px;height:40px;background:#eee;color:#999;font-size:9px}
details.run{margin:4px 0}summary{cursor:pointer}pre{background:#f7f7f7;padding:6px;
font-size:11px;max-height:300px;overflow:auto}
"""


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>{body}"
            "</body></html>\n")


def _num(col: str) -> bool:
    return col in ("auc", "mad", "auc_ci", "n", "gt_match")


def paper_table(runs: Runs) -> str:
    """Dataset | Model | Layer | Method | AUC | MAD | ...: one row per run, a rule between
    (dataset, model, layer) groups."""
    cols = table_columns(runs.rows)
    out = ["<table><tr>" + "".join(f"<th>{escape(h)}</th>" for _, h in cols) + "</tr>"]
    previous = None
    for r in runs.rows:
        group = (r.get("dataset"), r["model"], r["layer"])
        cls = ' class="group"' if previous is not None and group != previous else ""
        previous = group
        tds = "".join(f'<td{" class=num" if _num(k) else ""}>{escape(cell(r, k, runs.root))}</td>'
                      for k, _ in cols)
        out.append(f"<tr{cls}>{tds}</tr>")
    out.append("</table>")
    return "".join(out)


def _fmt(x: float, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else \
        number(x, f".{digits}g")


def _diff(x: float) -> str:
    """A signed difference, 3 decimals, no ``-0.000``."""
    return number(x, "+.3f")


def natural_key(text: str) -> list:
    """``10_a`` after ``9_b`` and ``1_c``: digit runs compare as numbers."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part)
            for part in re.split(r"(\d+)", text) if part]


IDENTICAL = "identical explanations"


def comparisons(items: list[Comparison], score: str) -> str:
    """Per setting: an "A vs B" matrix (row minus column, mean paired difference; green /
    red where significant) and the full list with intervals and p-values."""
    items = [c for c in items if c.score == score]
    if not items:
        return '<p class="muted">no two methods share a setting (model, layer, control set, ' \
               "generator, prompt) with common neurons.</p>"
    by_setting: dict[tuple, list[Comparison]] = {}
    for c in items:
        by_setting.setdefault(tuple(c.setting.values()), []).append(c)
    out = []
    for comps in by_setting.values():
        s = comps[0].setting
        methods = list(dict.fromkeys([c.a for c in comps] + [c.b for c in comps]))
        title = " / ".join(escape(str(s.get(k))) for k in ("model", "layer", "generator",
                                                           "prompt"))
        out.append(f"<h3>{title} <span class=muted>({escape(str(s.get('dataset_id')))})"
                   "</span></h3><table><tr><th>row − column</th>"
                   + "".join(f"<th>{escape(m)}</th>" for m in methods) + "</tr>")
        index = {(c.a, c.b): (c, 1.0) for c in comps} | {(c.b, c.a): (c, -1.0) for c in comps}
        for a in methods:
            tds = []
            for b in methods:
                if a == b or (a, b) not in index:
                    tds.append("<td>·</td>")
                    continue
                c, sign = index[(a, b)]
                if c.identical:
                    tds.append(f'<td class="num" title="{IDENTICAL}: nothing to compare">'
                               "identical</td>")
                    continue
                cls = ""
                if c.significant:  # green: the row's method is better, the score's way
                    cls = " sig-pos" if (sign * c.mean > 0) == c.higher_is_better else " sig-neg"
                mark = " *" if c.significant else ""
                low, high = (c.ci_low, c.ci_high) if sign > 0 else (-c.ci_high, -c.ci_low)
                tds.append(f'<td class="num{cls}" title="95% CI [{_diff(low)}, {_diff(high)}]'
                           f', p={_fmt(c.p)}">{_diff(sign * c.mean)}{mark}</td>')
            out.append(f"<tr><th>{escape(a)}</th>{''.join(tds)}</tr>")
        out.append("</table><table><tr><th>A</th><th>B</th><th>n</th><th>mean A − B</th>"
                   "<th>bootstrap 95% CI</th><th>Wilcoxon p</th><th>better</th></tr>")
        for c in comps:
            head = (f"<tr><td>{escape(c.a)}</td><td>{escape(c.b)}</td>"
                    f"<td class=num>{c.n}</td>")
            if c.identical:
                out.append(f"{head}<td colspan=3>{IDENTICAL}</td><td>-</td></tr>")
                continue
            out.append(f"{head}<td class=num>{_diff(c.mean)}</td><td class=num>"
                       f"[{_diff(c.ci_low)}, {_diff(c.ci_high)}]</td><td class=num>"
                       f"{_fmt(c.p)}</td><td>{escape(c.better or '-')}</td></tr>")
        out.append("</table>")
    return "".join(out)


def runs_section(runs: Runs, versions: dict) -> str:
    """The runs (in natural order of their folders: 0, 1, ..., 10), their status and folded
    configs, and the versions that made the report."""
    out = ["<table><tr><th>run</th><th>status</th><th>model / layer / method</th>"
           "<th>date</th><th>config</th></tr>"]
    for s in sorted(runs.statuses, key=lambda st: natural_key(run_label(runs.root, st.folder))):
        rec = s.record
        what = "-" if rec is None else " / ".join(escape(str(rec.meta.get(k)))
                                                  for k in ("model", "layer", "explainer"))
        cfg = ""
        if rec is not None and len(rec.cfg):
            cfg = (f"<details><summary>config.yaml</summary><pre>"
                   f"{escape(OmegaConf.to_yaml(rec.cfg))}</pre></details>")
        cls = "ok" if s.status == "complete" else "bad"
        detail = f" <span class=muted>{escape(s.detail)}</span>" if s.detail else ""
        date = "-" if rec is None else escape(str(rec.identity.get("date") or "-"))
        out.append(f"<tr><td>{escape(run_label(runs.root, s.folder))}</td><td class={cls}>"
                   f"{escape(s.status)}{detail}</td><td>{what}</td><td>{date}</td>"
                   f"<td>{cfg}</td></tr>")
    out.append("</table>")
    vers = ", ".join(f"{escape(k)} {escape(str(v))}" for k, v in versions.items())
    out.append(f'<p class="muted">report made with {vers}</p>')
    return "".join(out)
