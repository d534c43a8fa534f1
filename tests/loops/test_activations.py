"""The activation pass's speed options change nothing but float rounding."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torchvision

from cosy_bench.data import SyntheticControlSet
from cosy_bench.loops.activations import (
    AUTO_WORKERS_MIN_IMAGES,
    available_cores,
    collect_activations,
    resolve_num_workers,
)
from cosy_bench.models.layers import LayerExtractor, LayerSpec
from cosy_bench.models.preprocess import standard


def _trainer():
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, enable_checkpointing=False)


def test_resolve_num_workers(monkeypatch):
    assert resolve_num_workers(3) == 3 and resolve_num_workers("2") == 2
    assert resolve_num_workers("auto", AUTO_WORKERS_MIN_IMAGES - 1) == 0
    auto = resolve_num_workers("auto", 10_000)
    assert auto == max(1, min(8, available_cores() - 1))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(4 * available_cores()))
    assert resolve_num_workers("auto", 10_000) == 1  # at least one per rank
    with pytest.raises(ValueError, match="num_workers"):
        resolve_num_workers("many")
    with pytest.raises(ValueError, match="num_workers"):
        resolve_num_workers(-1)


def test_fast_options_equal_the_plain_pass():
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    transform = standard(72, 64, [0.5] * 3, [0.25] * 3)
    data = SyntheticControlSet(n=10, size=80)

    def run(layer, **kwargs):
        plain = torchvision.models.resnet18().eval()
        plain.load_state_dict(model.state_dict())
        return collect_activations(LayerExtractor(plain, LayerSpec(layer, layer)), data,
                                   transform, _trainer(), batch_size=4, **kwargs)

    for layer in ("layer2", "avgpool"):
        ref, index = run(layer, num_workers=0, channels_last=False)
        assert index.tolist() == list(range(10))
        fast, _ = run(layer, num_workers=2, channels_last=True)
        assert fast.is_contiguous() and fast.dtype == torch.float32
        assert torch.allclose(fast, ref, rtol=1e-4, atol=1e-5)
        same, _ = run(layer, num_workers=1, channels_last=False)
        assert torch.equal(same, ref)  # workers change nothing


def test_decode_gpu_on_the_cpu_equals_the_pil_pass_and_falls_back_per_image(tmp_path):
    import numpy as np
    from PIL import Image

    from cosy_bench.data import ImageFolder

    rng = np.random.default_rng(0)
    for i, (w, h, fmt, mode) in enumerate([(500, 375, "JPEG", "RGB"), (240, 320, "PNG", "RGB"),
                                           (400, 300, "JPEG", "CMYK"), (300, 300, "JPEG", "L"),
                                           (1024, 768, "JPEG", "RGB")]):
        img = Image.fromarray(rng.integers(0, 255, (h // 20, w // 20, 3), dtype=np.uint8))
        img.resize((w, h), Image.BICUBIC).convert(mode).save(tmp_path / f"{i}.{fmt.lower()}",
                                                             format=fmt)
    (tmp_path / "5.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")  # skipped by both
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    transform = standard(72, 64, [0.5] * 3, [0.25] * 3)

    def run(decode, workers):
        extractor = LayerExtractor(model, LayerSpec("avgpool", "avgpool"))
        return collect_activations(extractor, ImageFolder(str(tmp_path), decode=decode),
                                   transform, _trainer(), batch_size=4, num_workers=workers,
                                   channels_last=False)

    ref, ref_index = run("full", 0)
    assert ref_index.tolist() == [0, 1, 2, 3, 4]
    for workers in (0, 1):
        got, index = run("gpu", workers)
        assert torch.equal(index, ref_index)
        spread = ref.std(dim=0).clamp_min(1e-6)
        # one 0-255 level of the input at most; the PNG and CMYK rows are the PIL path itself
        assert float(((got - ref).abs() / spread).max()) < 0.05
        assert torch.allclose(got[1:3], ref[1:3], atol=1e-5)


def test_bad_precision_is_a_clear_error():
    from cosy_bench.loops.activations import ActivationModule

    with pytest.raises(ValueError, match="precision"):
        ActivationModule(torch.nn.Identity(), precision="int8")


def test_bfloat16_autocast_runs_on_the_cpu_and_float16_is_refused_there():
    """precision=bfloat16 autocasts the CPU pass (values move by bf16 rounding, so it is on);
    float16 needs a GPU and says so."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    transform = standard(72, 64, [0.5] * 3, [0.25] * 3)
    data = SyntheticControlSet(n=6, size=80)

    def run(precision):
        return collect_activations(LayerExtractor(model, LayerSpec("layer2", "layer2")), data,
                                   transform, _trainer(), batch_size=3, precision=precision)[0]

    ref, bf16 = run(None), run("bfloat16")
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, ref)  # autocast was on
    assert (bf16 - ref).abs().max() <= 0.02 * ref.abs().max()  # bf16 rounding, no other result
    assert torch.equal(run("float32"), ref)
    with pytest.raises(ValueError, match="precision=float16 needs a GPU"):
        run("float16")
