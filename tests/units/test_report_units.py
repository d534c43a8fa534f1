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
