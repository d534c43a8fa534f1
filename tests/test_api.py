"""The notebook API: ``import cosy_bench`` stays light, :func:`cosy_bench.evaluate` gives the
CLI's results, :func:`cosy_bench.score` scores explanations a user already has."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import HAS_TOY_MODEL, REPO

import cosy_bench
from cosy_bench.scorers import score_all


def test_import_cosy_bench_stays_light():
    code = ("import sys, cosy_bench\n"
            "heavy = [m for m in ('torch', 'hydra', 'lightning', 'pandas') if m in sys.modules]\n"
            "assert heavy == [], heavy\n"
            "assert callable(cosy_bench.evaluate) and 'torch' in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        cosy_bench.nope  # noqa: B018


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TOY_MODEL, reason="needs the toy world")
def test_evaluate_gives_the_cli_results(tmp_path):
    overrides = ["explainer=random", "layer=concepts", "neurons.ids=[0,3,7]", "n_images=4",
                 f"paths.cache_dir={tmp_path / 'cache'}", "logger=none", "scorer=[auc,mad,utest]"]
    cli = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "cosy_bench", *overrides,
                           f"hydra.run.dir={cli}"], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = cosy_bench.evaluate(*overrides, output_dir=tmp_path / "api")
    assert (tmp_path / "api" / "results.csv").read_text() == (cli / "results.csv").read_text()
    frame = pd.read_csv(cli / "results.csv")
    assert isinstance(record.results, pd.DataFrame)
    assert record.results["neuron"].tolist() == [0, 3, 7]
    np.testing.assert_array_equal(record.results[["auc", "mad", "utest_p"]].to_numpy(),
                                  frame[["auc", "mad", "utest_p"]].to_numpy())
    assert record.summary["auc"]["n"] == 3 and record.folder == tmp_path / "api"
    assert record.summary["run"]["explainer"] == "random"


def test_evaluate_refuses_a_bad_config_before_any_work(tmp_path):
    from cosy_bench.schema import ConfigError

    with pytest.raises(ConfigError, match="n_images=0"):
        cosy_bench.evaluate("n_images=0", output_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()
    with pytest.raises(TypeError, match="overrides are strings"):
        cosy_bench.evaluate(["explainer=invert"], output_dir=tmp_path / "x")


def test_score_matches_score_all_per_neuron_with_differing_image_counts():
    gen = torch.Generator().manual_seed(0)
    control = torch.randn(200, 4, generator=gen)
    concept = {"dog": torch.randn(10, 4, generator=gen) + 1.0,
               "cat": torch.randn(6, 4, generator=gen)}
    explanations = ["dog", "cat", "dog", "cat"]
    frame = cosy_bench.score(control, concept, explanations, scorers=("auc", "mad", "utest"))
    assert list(frame.columns) == ["neuron", "explanation", "auc", "mad", "utest_u", "utest_p"]
    assert frame["explanation"].tolist() == explanations
    for k, text in enumerate(explanations):
        ref = score_all(["auc", "mad", "utest"], control[:, k:k + 1], concept[text][:, k:k + 1])
        for col, value in ref.items():
            assert frame[col][k] == pytest.approx(float(value[0]), rel=1e-12, abs=0), (col, k)
    # numpy arrays work the same
    again = cosy_bench.score(control.numpy(), {t: a.numpy() for t, a in concept.items()},
                             explanations)
    np.testing.assert_array_equal(again["auc"].to_numpy(), frame["auc"].to_numpy())


def test_score_errors_name_the_input_and_the_fix():
    control = torch.randn(20, 2)
    concept = {"dog": torch.randn(5, 2)}
    with pytest.raises(ValueError, match="1 explanations for K = 2 neurons"):
        cosy_bench.score(control, concept, ["dog"])
    with pytest.raises(ValueError, match=r"no activations for explanations \['cat'\]"):
        cosy_bench.score(control, concept, ["dog", "cat"])
    with pytest.raises(ValueError, match=r"concept\['dog'\] has 3 neurons"):
        cosy_bench.score(control, {"dog": torch.randn(5, 3)}, ["dog", "dog"])
    with pytest.raises(ValueError, match="control must be 2-D"):
        cosy_bench.score(torch.randn(20), concept, ["dog"])
    with pytest.raises(ValueError, match="score texts"):
        cosy_bench.score(control, concept, ["dog", "dog"], scorers=["label_similarity"])
    with pytest.raises(ValueError, match="unknown scorer 'auroc'"):
        cosy_bench.score(control, concept, ["dog", "dog"], scorers=["auroc"])
