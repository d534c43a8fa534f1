"""``bench synthesis`` at a reduced size on the CPU: both ways run and give the same images."""

from __future__ import annotations

import pytest
from stamped import assert_stamped

from cosy_bench.bench.__main__ import main as bench_main


def test_bench_runs_at_reduced_size(tmp_path, capsys):
    argv = ["synthesis", "--size", "128", "--steps", "2", "--images", "2", "--batch", "2",
            "--scale", "16", "--device", "cpu", "--markdown", str(tmp_path / "synthesis.md")]
    assert bench_main(argv) == 0
    out = capsys.readouterr().out
    assert_stamped(tmp_path / "synthesis.md", argv, out, "way ")
    assert "authors (1 prompt/call)" in out and "cosy_bench (batch 2)" in out
    line = next(x for x in out.splitlines() if x.startswith("speed-up"))
    max_diff = float(line.split("differ by max ")[1].split(",")[0])
    assert max_diff <= 2.0  # same seeds: float rounding only


def test_bench_runs_stable_cascade_at_reduced_size(capsys):
    from cosy_bench.generators.faithful_cascade import cascade_flops

    argv = ["synthesis", "--model", "stable_cascade", "--size", "128", "--steps", "1",
            "--images", "2", "--batch", "2", "--scale", "16", "--device", "cpu"]
    assert bench_main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    title = next(x for x in lines if x.startswith("Stable Cascade shape x1/16"))
    assert "128 px, 1+1 steps (prior+decoder), 2 images, torch.float32 on cpu" in title
    prior, decoder = cascade_flops(128, 1, 16)
    assert f"{prior * 2 / 1e12:.3g} TFLOP prior with guidance" in title
    assert f"{decoder / 1e12:.3g} TFLOP decoder" in title
    head = next(x for x in lines if x.startswith("way"))
    assert head.split() == ["way", "images/s", "s/image", "prior", "s", "prior", "TFLOP/s",
                            "decoder", "s", "decoder", "TFLOP/s", "of", "peak", "peak", "GPU",
                            "mem"]
    for label in ("authors (1 prompt/call)", "cosy_bench (batch 2)"):
        row = next(x for x in lines if x.startswith(label))[len(label):].split()
        images_s, s_image, prior_s, prior_tf, dec_s, dec_tf = map(float, row[:6])
        assert images_s > 0 and s_image == pytest.approx(1 / images_s, rel=0.02)
        assert prior_s > 0 and dec_s > 0 and prior_tf > 0 and dec_tf > 0
        assert row[6:] == ["n/a", "n/a", "(cpu)"]  # no peak, no GPU memory on a CPU
    line = next(x for x in lines if x.startswith("speed-up"))
    assert float(line.split("differ by max ")[1].split(",")[0]) <= 2.0  # same seeds


def test_vae_fp16_is_refused_for_stable_cascade():
    with pytest.raises(SystemExit, match="vae-fp16"):
        bench_main(["synthesis", "--model", "stable_cascade", "--vae-fp16", "--scale", "16",
                    "--size", "128", "--device", "cpu"])
