"""The report's neurons-vs-latents table."""

from __future__ import annotations

from omegaconf import OmegaConf

from cosy_bench.record import RunRecord
from cosy_bench.report.units import pairs, side_by_side, unit_row


def _record(layer, units=None, auc=0.8, mono=0.5):
    meta = {"model": "toy_cnn", "layer": layer, "explainer": "invert", "generator": "toyworld",
            "prompt": "p5", "n_neurons": 4}
    block = {"kind": "neurons", "n_units": 4, "n_with_truth": 2, "monosemantic_fraction": mono,
             "ground_truth_match": 0.5}
    if units:
        meta.update(units="sae", base_layer=layer.removesuffix("+sae"))
        block.update(kind="sae", sae={"r2": 0.9, "l0": 4.0, "dead_fraction": 0.25})
    summary = {"auc": {"mean": auc}, "mad": {"mean": 1.0}, "run": meta, "units": block,
               "ground_truth_coverage": 0.75 if units else 0.5, "polysemanticity": 0.25}
    return RunRecord([], summary, "", OmegaConf.create({}))


def test_pairs_and_rows():
    neurons, sae = _record("conv4"), _record("conv4+sae", units=True, auc=0.6, mono=1.0)
    other = _record("conv3+sae", units=True)
    assert pairs([neurons, sae, other]) == [(neurons, sae)]
    row = unit_row(sae)
    assert row["layer"] == "conv4" and row["units"] == "sae latents"
    assert row["with truth"] == "2/4 (50%)" and row["monosemantic"] == "1.000"
    assert row["R²"] == "0.900" and row["dead"] == "0.250"
    assert row["coverage"] == "0.750" and unit_row(neurons)["coverage"] == "0.500"
    assert row["polysemanticity"] == "0.250"
    assert unit_row(neurons)["R²"] == "–"
    html = side_by_side([neurons, sae])
    assert "Neurons vs SAE latents" in html and html.count("<tr") == 3
    assert "<th>coverage</th><th>polysemanticity</th>" in html and "<td class=num>0.750</td>" in html
    assert side_by_side([neurons]) == ""


def test_a_units_card_lists_its_k_explanations_by_rank_with_scores_and_images(tmp_path):
    """explainer.top_k=2: one card per unit, rank 1 first whatever the row order, each rank
    with its AUC (and interval), MAD and its own synthetic images; the unit's
    polysemanticity in the head."""
    from PIL import Image

    from cosy_bench.report.cards import Thumbnails, run_cards

    images = []
    for concept, colour in (("grass", (0, 200, 0)), ("red", (200, 0, 0))):
        for i in range(2):
            path = tmp_path / f"{concept}{i}.png"
            Image.new("RGB", (16, 16), colour).save(path)
            images.append({"concept": concept, "index": i, "path": str(path)})
    rows = [{"neuron": 3, "rank": 2, "explanation": "red", "auc": 0.71, "auc_ci_low": 0.6,
             "auc_ci_high": 0.8, "mad": 0.5, "polysemanticity": 0.42},
            {"neuron": 3, "rank": 1, "explanation": "grass", "auc": 0.93, "auc_ci_low": 0.9,
             "auc_ci_high": 0.96, "mad": 2.5, "polysemanticity": 0.42}]
    record = RunRecord(rows, {"run": {}}, "", OmegaConf.create({}), images=images)
    thumbs = Thumbnails(tmp_path / "report")
    html = run_cards(record, "run", thumbs, open_=True)
    assert html.count('<div class="card">') == 1
    first, second = html.index("#1 grass: AUC <b>0.930</b> [0.90, 0.96]"), html.index(
        "#2 red: AUC <b>0.710</b> [0.60, 0.80]")
    assert first < second and "MAD 2.5" in html and "MAD 0.5" in html
    assert "polysemanticity 0.420" in html
    assert thumbs.written == 4  # both ranks' two images each
    strips = html.split('<span class="lab">synthetic</span>')[1:]
    assert [s.count("<img") for s in strips] == [2, 2]
