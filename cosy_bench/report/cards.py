"""Per-neuron cards: a neuron's explanation(s) (``explainer.top_k``: each of its K
explanations, by rank, with its scores and images), ground truth, polysemanticity, scores with
the AUC's 95% interval, up to 8 synthetic images per explanation and its top-8 control images
by activation.

Images are copied into the report as small thumbnails (``thumbs/``, one file per distinct
source, never the originals). Control images come from the files the run recorded, or,
for control sets held in memory (the toy world, the synthetic set), from the control set
rebuilt from the run's config (:meth:`cosy_bench.record.RunRecord.control_image`)."""

from __future__ import annotations

import hashlib
from html import escape
from pathlib import Path

from PIL import Image

from cosy_bench.data.datasets import load_image
from cosy_bench.record import N_SYNTHETIC, RunRecord

THUMB = 80  # px, longest side
PAGE = 64  # cards per page of a run


class Thumbnails:
    """Writes thumbnails into ``report/thumbs`` and returns their paths relative to report/."""

    def __init__(self, report_dir: Path):
        self.dir = report_dir / "thumbs"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.done: dict[str, str | None] = {}
        self.written = 0

    def _write(self, key: str, load) -> str | None:
        if key in self.done:
            return self.done[key]
        name = hashlib.sha1(key.encode()).hexdigest()[:16] + ".jpg"
        image = load()
        rel = None
        if image is not None:
            image = image.convert("RGB")
            image.thumbnail((THUMB, THUMB), Image.BILINEAR)
            tmp = self.dir / f".{name}.tmp"
            image.save(tmp, format="JPEG", quality=85)
            tmp.replace(self.dir / name)
            rel = f"thumbs/{name}"
            self.written += 1
        self.done[key] = rel
        return rel

    def file(self, path: str) -> str | None:
        """Thumbnail of an image file (``None`` where it is missing or unreadable)."""
        def load():
            return load_image(path) if path and Path(path).is_file() else None

        return self._write(f"file:{path}", load)

    def control(self, record: RunRecord, row: dict) -> str | None:
        """Thumbnail of one of the run's top control images (``top_control.csv`` row)."""
        path = str(row.get("path") or "")
        if path:
            return self.file(path)
        dataset_id = record.meta.get("dataset_id") or str(record.folder)
        return self._write(f"control:{dataset_id}:{int(row['index'])}",
                           lambda: record.control_image(row))


def _img(src: str | None, title: str) -> str:
    if src is None:
        return f'<span class="missing" title="{escape(title)}">missing</span>'
    return f'<img src="{escape(src)}" alt="{escape(title)}" title="{escape(title)}" loading="lazy">'


def _scores(row: dict) -> str:
    parts = []
    if isinstance(row.get("auc"), (int, float)):
        ci = ""
        if isinstance(row.get("auc_ci_low"), (int, float)):
            ci = f" [{row['auc_ci_low']:.2f}, {row['auc_ci_high']:.2f}]"
        parts.append(f"AUC <b>{row['auc']:.3f}</b>{ci}")
    for name, value in row.items():
        if name not in ("neuron", "auc", "auc_ci_low", "auc_ci_high") and \
                isinstance(value, float) and name in ("mad", "utest_p", "utest_u"):
            parts.append(f"{name.upper() if name == 'mad' else name} {value:.3g}")
    return " · ".join(parts)


def card(record: RunRecord, rows: list[dict], thumbs: Thumbnails,
         synthetic: dict[str, list[dict]], top: dict[int, list[dict]]) -> str:
    """The HTML of one neuron's card: ``rows`` are its results rows, rank 1 first."""
    row = rows[0]
    neuron, truth = row.get("neuron"), row.get("ground_truth")
    head = f'<div class="head"><b>#{escape(str(neuron))}</b> ' \
        f'{escape(str(row.get("explanation", "")))}'
    if truth not in (None, ""):
        head += f' <span class="gt">truth: {escape(str(truth))}</span>'
    if isinstance(row.get("polysemanticity"), float):
        head += f' <span class="gt">polysemanticity {row["polysemanticity"]:.3f}</span>'
    body = ""
    for r in rows:
        text = str(r.get("explanation", ""))
        label = f"#{r['rank']} {escape(text)}: " if len(rows) > 1 else ""
        syn = "".join(_img(thumbs.file(it["path"]), f"{text} #{it['index']}")
                      for it in synthetic.get(text, [])[:N_SYNTHETIC])
        body += (f'<div class="scores">{label}{_scores(r)}</div><div class="strip">'
                 f'<span class="lab">synthetic</span>{syn or "none recorded"}</div>')
    ctl = "".join(_img(thumbs.control(record, it), f"control #{it['index']}: "
                       f"{float(it['activation']):.3g}") for it in top.get(int(neuron), []))
    return (f'<div class="card">{head}</div>{body}'
            f'<div class="strip"><span class="lab">top control</span>{ctl or "none recorded"}'
            "</div></div>")


def run_cards(record: RunRecord, label: str, thumbs: Thumbnails, open_: bool = False) -> str:
    """A run's cards, folded (unfolded with ``open_``: the run and its first page), in pages
    of :data:`PAGE` neurons."""
    synthetic: dict[str, list[dict]] = {}
    for it in record.images:
        synthetic.setdefault(str(it["concept"]), []).append(it)
    top: dict[int, list[dict]] = {}
    for it in sorted(record.top_control, key=lambda r: (int(r["neuron"]), int(r["rank"]))):
        top.setdefault(int(it["neuron"]), []).append(it)
    meta = record.meta
    units: dict = {}  # a neuron's rows (several with explainer.top_k), rank 1 first
    for row in record.rows:
        units.setdefault(row.get("neuron"), []).append(row)
    groups = [sorted(rs, key=lambda r: int(r.get("rank") or 1)) for rs in units.values()]
    cards = [card(record, rs, thumbs, synthetic, top) for rs in groups]
    pages = []
    for start in range(0, len(cards), PAGE):
        first, last = groups[start][0]["neuron"], groups[min(start + PAGE, len(cards)) - 1][0][
            "neuron"]
        body = "".join(cards[start:start + PAGE])
        if len(cards) <= PAGE:
            pages.append(f'<div class="cards">{body}</div>')
        else:
            opened = " open" if open_ and start == 0 else ""  # the run's first cards
            pages.append(f"<details{opened}><summary>neurons {first}-{last}</summary>"
                         f'<div class="cards">{body}</div></details>')
    title = (f"{escape(label)}: {escape(str(meta.get('model')))} / "
             f"{escape(str(meta.get('layer')))} / {escape(str(meta.get('explainer')))} "
             f"({len(groups)} neurons)")
    return (f'<details class="run"{" open" if open_ else ""}><summary>{title}</summary>'
            f'{"".join(pages)}</details>')
