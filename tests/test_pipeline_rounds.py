"""n_images=auto: synthesis in rounds, stopped per explanation by the DeLong interval; its
images are the fixed-size run's images."""

from __future__ import annotations

import pytest

from cosy_bench.pipeline import run

GT_OUTPUT = ["layer=output", "explainer=ground_truth"]


def test_auto_rounds_stop_when_decided_or_at_the_cap(compose, smoke, tmp_path):
    cache = tmp_path / "cache"
    auto = ["n_images=auto", "n_images_round=2", "n_images_max=4"]
    # any interval is narrower than 1.5: one round decides every explanation
    wide = run(compose(smoke(cache, *GT_OUTPUT, *auto, "ci_width=1.5")), tmp_path / "a")
    meta = wide.meta
    assert meta["synthesis_rounds"] == 1 and meta["n_images"] == "auto"
    assert {r["n_images"] for r in wide.rows} == {2.0}
    assert meta["images_used"] == meta["images_generated"] == 2 * len(wide.rows)
    assert meta["images_fixed"] == 4 * len(wide.rows)

    # a fixed run of the same size reuses every image and scores the same
    fixed = run(compose(smoke(cache, *GT_OUTPUT, "n_images=2")), tmp_path / "b")
    assert fixed.meta["images_generated"] == 0
    assert [r["auc"] for r in fixed.rows] == pytest.approx([r["auc"] for r in wide.rows],
                                                           abs=1e-12)

    # a narrow width: undecided explanations go on to the cap; the first round is cached
    narrow = run(compose(smoke(cache, *GT_OUTPUT, *auto, "ci_width=0.01")), tmp_path / "c")
    counts = [r["n_images"] for r in narrow.rows]
    assert set(counts) <= {2.0, 4.0} and narrow.meta["synthesis_rounds"] == max(counts) / 2
    assert narrow.meta["images_used"] == sum(counts)  # one explanation per neuron here
    assert narrow.meta["images_generated"] == sum(counts) - 2 * len(counts)
    for row, first in zip(narrow.rows, wide.rows, strict=True):
        if row["n_images"] == 2.0:  # stopped after the first round: its images, its score
            assert row["auc"] == pytest.approx(first["auc"], abs=1e-12)


def test_auto_settings_are_checked(compose, smoke, tmp_path):
    cfg = compose(smoke(tmp_path / "cache", *GT_OUTPUT, "n_images=auto", "n_images_round=1"))
    with pytest.raises(ValueError, match="n_images_round"):
        run(cfg, tmp_path / "out")
