"""Golden figures of a small toy-world run (INVERT on the planted `concepts` units): any change
to the toy world, the explainer, the generator, the activation pass or the scores that moves
a result shows here. Tolerances allow for float rounding on other CPUs (one flipped near-tie
moves an AUC by 1/(N M) = 3.3e-4), not for a change of method.

Regenerate, only after a deliberate change (and say why in the commit):
``python -m cosy_bench "neurons.ids=[0,5,12,24]" n_images=10 dataset.n=300 probe.n=600``."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
from helpers import REPO

pytestmark = pytest.mark.slow

OVERRIDES = ["neurons.ids=[0,5,12,24]", "n_images=10", "dataset.n=300", "probe.n=600",
             "logger=none"]
#: neuron: (explanation, invert_auc, auc, mad), measured 2026-12-06
GOLDEN = {0: ("red", 1.0, 0.97933, 2.53838),
          5: ("purple", 1.0, 0.98400, 3.16877),
          12: ("cross", 0.98981, 0.97633, 2.53400),
          24: ("snow", 1.0, 0.96200, 3.17596)}


def test_a_small_toy_run_gives_its_golden_figures(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "cosy_bench", *OVERRIDES,
                           f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run}"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {int(r["neuron"]): r for r in csv.DictReader((run / "results.csv").open())}
    assert sorted(rows) == sorted(GOLDEN)
    for neuron, (explanation, invert_auc, auc, mad) in GOLDEN.items():
        row = rows[neuron]
        assert (row["rank"], row["explanation"], row["ground_truth"]) == ("1", explanation,
                                                                         explanation)
        assert float(row["invert_auc"]) == pytest.approx(invert_auc, abs=2e-3)
        assert float(row["auc"]) == pytest.approx(auc, abs=2e-3), neuron
        assert float(row["mad"]) == pytest.approx(mad, rel=2e-3), neuron
    summary = json.loads((run / "summary.json").read_text())
    assert summary["auc"]["mean"] == pytest.approx(0.97538, abs=1e-3)
    assert summary["ground_truth_match"] == 1.0 and summary["run"]["n_control"] == 300
