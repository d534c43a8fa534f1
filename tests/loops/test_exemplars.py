"""MILAN's exemplar pass: unit maps of a layer (SpatialExtractor), the running top-k by
spatial max, the quantile level and the masks, on a model with planted units whose answers
are known; the class-activation maps of the toy CNN; batch-size and DDP independence."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from cosy_bench.explainers.milan.exemplars import exemplar_images
from cosy_bench.loops.exemplars import (
    Exemplars,
    TopK,
    collect_exemplars,
    merge_top_k,
    sample_positions,
    unit_quantile,
)
from cosy_bench.models.layers import LayerSpec, SpatialExtractor

TESTS = Path(__file__).resolve().parent

# ----------------------------------------------------------------------------- planted world

SIZE = 64  # image side; the planted layer's maps are SIZE / 2
GRAY, RED, GREEN = (128, 128, 128), (255, 0, 0), (0, 255, 0)
A = 128 / 255  # a gray channel after ToTensor

# image index -> (colour, top, left, height, width) rectangles on a gray background; all
# even-aligned with even sides, so the 2 x 2 pooled maps of pointwise units are exact
DOTS = [(RED, 6 + 14 * i, 6 + 14 * j, 2, 2) for i in range(4) for j in range(4)]
SCENES: dict[int, list] = {
    0: [],
    1: [(RED, 4, 6, 30, 30)],
    2: [(GREEN, 10, 20, 30, 30)],
    3: [(RED, 30, 36, 24, 24)],
    4: [],
    5: [(RED, 20, 20, 6, 6)],
    6: [(GREEN, 8, 8, 24, 24)],
    7: DOTS,  # more red pixels (64) than image 5 or 9, but a small spatial max
    8: [(RED, 40, 10, 20, 20)],
    9: [(RED, 30, 40, 4, 4), (GREEN, 4, 4, 10, 12)],
    10: [(GREEN, 40, 40, 20, 20)],
    11: [(RED, 50, 50, 2, 2)],
}
N = len(SCENES)


def truth(i: int, colour) -> torch.Tensor:
    """bool [SIZE, SIZE]: the pixels of ``colour`` in image i."""
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    for c, top, left, h, w in SCENES[i]:
        if c == colour:
            mask[top:top + h, left:left + w] = True
    return mask


class PlantedImages(torch.utils.data.Dataset):
    """The SCENES as PIL images; ``unreadable`` indices return None."""

    def __init__(self, unreadable: tuple[int, ...] = ()):
        self.unreadable = set(unreadable)
        self.loads: list[int] = []

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int):
        self.loads.append(i)
        if i in self.unreadable:
            return None
        a = np.empty((SIZE, SIZE, 3), np.uint8)
        a[:] = GRAY
        for colour, top, left, h, w in SCENES[i]:
            a[top:top + h, left:left + w] = colour
        return Image.fromarray(a, "RGB")


class Planted(nn.Module):
    """``features`` [B, 3, 32, 32] (9 x 9 conv, replicate padding, then 2 x 2 average pool):

    * unit 0: R - G - B at the centre tap: red pixels 1, gray -A, green -1;
    * unit 1: R - G - B averaged over the 9 x 9 window: its max grows with the red area
      (saturating at 1 from a 9 x 9 red square on);
    * unit 2: G - R - B at the centre tap: green pixels 1, gray -A, red -1.

    Then global average pooling (``gap``) and a seeded Linear ``fc`` [B, 4].
    """

    def __init__(self, relu_before_pool: bool = False):
        super().__init__()
        conv = nn.Conv2d(3, 3, 9, padding=4, padding_mode="replicate", bias=False)
        w = torch.zeros(3, 3, 9, 9)
        w[0, :, 4, 4] = torch.tensor([1.0, -1.0, -1.0])
        w[1] = torch.tensor([1.0, -1.0, -1.0])[:, None, None] / 81
        w[2, :, 4, 4] = torch.tensor([-1.0, 1.0, -1.0])
        conv.weight.data.copy_(w)
        self.features = nn.Sequential(conv, nn.AvgPool2d(2))
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(3, 4)
        with torch.no_grad():
            self.fc.weight.copy_(torch.arange(12.0).view(4, 3).sin())
            self.fc.bias.copy_(torch.arange(4.0).cos())
        self.relu_before_pool = relu_before_pool
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        if self.relu_before_pool:
            f = F.relu(f)  # functional: no module to read the rectified map at
        return self.fc(self.gap(f).flatten(1))


def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255


def trainer() -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                     enable_model_summary=False)


def planted_exemplars(**kw) -> Exemplars:
    ext = SpatialExtractor(Planted(), LayerSpec("features", "features"))
    return collect_exemplars(ext, PlantedImages(), to_tensor, trainer(), **kw)


def all_maps() -> torch.Tensor:
    """float [N, 3, 32, 32]: the planted maps of every image, computed directly."""
    ext = SpatialExtractor(Planted(), LayerSpec("features", "features"))
    x = torch.stack([to_tensor(PlantedImages()[i]) for i in range(N)])
    with torch.no_grad():
        return ext(x)


# the quantile that puts the level of units 0 and 2 half-way between gray (-A) and their
# colour (1): 499 of the 12 * 32 * 32 pooled positions are red (and 499 green)
COLOURED = sum(h * w for i in SCENES for c, _, _, h, w in SCENES[i] if c == RED) // 4
POSITIONS = N * 32 * 32
MID_GAP = (POSITIONS - COLOURED - 0.5) / (POSITIONS - 1)


@pytest.fixture(scope="module")
def exact():
    """The planted exemplars with every position in the level sample (exact levels)."""
    assert COLOURED == sum(h * w for i in SCENES for c, _, _, h, w in SCENES[i]
                           if c == GREEN) // 4 == 499
    return planted_exemplars(k=5, quantile=MID_GAP, quantile_samples=POSITIONS)


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum()) / float((a | b).sum())


# ----------------------------------------------------------------------------- planted units


def test_planted_units_rank_images_by_spatial_max_ties_by_index(exact):
    assert exact.indices.dtype == torch.long and exact.indices.shape == (3, 5)
    # unit 0 (red pixels): every red image reaches 1; ties keep dataset order
    assert exact.indices[0].tolist() == [1, 3, 5, 7, 8]
    torch.testing.assert_close(exact.scores[0], torch.ones(5))
    # unit 1 (red area up to 9 x 9): the three big squares (saturated, by index), then the
    # 6 x 6 and the 4 x 4 squares; not the 16 dots (64 red pixels), whose max is that of one
    # 2 x 2 dot: a ranking by the mean would put them second
    assert exact.indices[1].tolist() == [1, 3, 8, 5, 9]
    expected = torch.tensor([1.0, 1.0, 1.0, (36 - 45 * A) / 81, (16 - 65 * A) / 81])
    torch.testing.assert_close(exact.scores[1], expected, atol=1e-5, rtol=0)
    # unit 2 (green): the four green images, then the best of the rest (gray: -A), by index
    assert exact.indices[2].tolist() == [2, 6, 9, 10, 0]
    torch.testing.assert_close(exact.scores[2], torch.tensor([1.0, 1, 1, 1, -A]))


def test_exemplar_maps_are_the_units_maps_of_those_images(exact):
    maps = all_maps()  # [N, K, 32, 32]
    assert exact.maps.shape == (3, 5, 32, 32)
    for unit in range(3):
        torch.testing.assert_close(exact.maps[unit], maps[exact.indices[unit], unit])
        torch.testing.assert_close(exact.scores[unit],
                                   maps[exact.indices[unit], unit].amax(dim=(1, 2)))


def test_levels_sit_half_way_between_background_and_planted_colour(exact):
    maps = all_maps()
    # float64: torch.quantile places the rank in the input's dtype
    reference = torch.quantile(maps.transpose(0, 1).flatten(1).double(), MID_GAP, dim=1)
    torch.testing.assert_close(exact.levels, reference.float(), atol=1e-6, rtol=0)
    half_way = (1 - A) / 2  # between gray (-A) and red / green (1)
    assert exact.levels[0].item() == pytest.approx(half_way, abs=1e-4)
    assert exact.levels[2].item() == pytest.approx(half_way, abs=1e-4)


def test_masks_mark_the_planted_pixels(exact):
    masks = exact.masks(SIZE)
    assert masks.dtype == torch.bool and masks.shape == (3, 5, SIZE, SIZE)
    for unit, colour in ((0, RED), (2, GREEN)):
        for j, i in enumerate(exact.indices[unit].tolist()):
            if truth(i, colour).any():
                assert iou(masks[unit, j], truth(i, colour)) > 0.8, (unit, i)
            else:
                assert not masks[unit, j].any(), (unit, i)
    # image 9 holds a red and a green patch: each unit marks its own
    assert iou(masks[2, 2], truth(9, GREEN)) > 0.8 and not (masks[2, 2] & truth(9, RED)).any()
    # a subset of units and a rectangular size
    some = exact.masks((SIZE, SIZE // 2), units=torch.tensor([2]))
    assert some.shape == (1, 5, SIZE, SIZE // 2)
    direct = F.interpolate(exact.maps[2][:, None], size=(SIZE, SIZE // 2), mode="bilinear",
                           align_corners=False)[:, 0] > exact.levels[2]
    assert torch.equal(some[0], direct)


def test_result_does_not_depend_on_the_batch_size():
    kw = dict(k=4, quantile=0.95, quantile_samples=1200)  # 100 sampled positions per image
    small = planted_exemplars(batch_size=3, **kw)
    large = planted_exemplars(batch_size=64, **kw)
    for name, value in small.to_tensors().items():
        assert torch.equal(value, large.to_tensors()[name]), name


def test_a_probe_set_larger_than_the_sample_gives_a_bounded_batch_independent_sample():
    from cosy_bench.loops.exemplars import sampled_images

    index = torch.arange(20_000)
    keep = sampled_images(index, 20_000, 1_000, seed=0)
    assert 800 <= int(keep.sum()) <= 1_200  # about quantile_samples images, one value each
    assert torch.equal(keep[5000:5100], sampled_images(index[5000:5100], 20_000, 1_000, 0))
    assert not torch.equal(keep, sampled_images(index, 20_000, 1_000, seed=1))
    assert bool(sampled_images(index[:10], 10, 1_000, seed=0).all())
    # through the pass: fewer images than N give positions; still batch-independent
    kw = dict(k=3, quantile=0.9, quantile_samples=6)
    small, large = planted_exemplars(batch_size=3, **kw), planted_exemplars(batch_size=64, **kw)
    for name, value in small.to_tensors().items():
        assert torch.equal(value, large.to_tensors()[name]), name


def test_sampled_levels_estimate_the_quantile():
    maps = all_maps().transpose(0, 1).flatten(1)  # [K, N * 32 * 32]
    est = planted_exemplars(k=3, quantile=0.9, quantile_samples=1200).levels
    low = torch.quantile(maps, 0.87, dim=1)
    high = torch.quantile(maps, 0.93, dim=1)
    assert bool(((low <= est) & (est <= high)).all()), (low, est, high)
    other_seed = planted_exemplars(k=3, quantile=0.9, quantile_samples=1200, seed=1).levels
    assert not torch.equal(est, other_seed)  # the sample is drawn, not all positions


def test_sample_positions_are_distinct_and_fixed_by_seed_and_index():
    a = sample_positions(torch.tensor([4, 7, 9]), 50, 10, seed=0)
    b = sample_positions(torch.tensor([9, 4]), 50, 10, seed=0)
    assert a.shape == (3, 10)
    assert all(len(set(row)) == 10 and max(row) < 50 for row in a.tolist())
    assert torch.equal(a[0], b[1]) and torch.equal(a[2], b[0])
    assert not torch.equal(a, sample_positions(torch.tensor([4, 7, 9]), 50, 10, seed=1))
    assert torch.equal(sample_positions(torch.tensor([3]), 6, 6, seed=0)[0], torch.arange(6))


def test_unit_quantile_matches_torch_quantile():
    g = torch.Generator().manual_seed(0)
    values = torch.randn(1001, 7, generator=g).round(decimals=1)  # with ties
    for q in (0.01, 0.5, 0.9, 0.99, 0.123456):
        torch.testing.assert_close(unit_quantile(values, q), torch.quantile(values, q, dim=0))
    torch.testing.assert_close(unit_quantile(values[:1], 0.99), values[0])


def test_merged_top_k_does_not_depend_on_how_the_candidates_are_split():
    g = torch.Generator().manual_seed(0)
    n, units, k = 40, 6, 7
    scores = torch.randint(0, 5, (units, n), generator=g).float()  # many ties
    index = torch.randperm(n, generator=g)[None].expand(units, n)
    maps = torch.randn(units, n, 2, 3, generator=g)
    empty = TopK(scores[:, :0], index[:, :0], maps[:, :0])
    whole = merge_top_k(empty, TopK(scores, index, maps), k)
    for cuts in ([13, 27], [1, 2, 3, 39], [20]):
        top = empty
        for lo, hi in zip([0, *cuts], [*cuts, n], strict=True):
            top = merge_top_k(top, TopK(scores[:, lo:hi], index[:, lo:hi], maps[:, lo:hi]), k)
        for got, want in zip(top, whole, strict=True):
            assert torch.equal(got, want)
    # best first, ties by lower index; maps travel with their image
    order = sorted(range(n), key=lambda j: (-scores[0, j].item(), index[0, j].item()))[:k]
    assert whole.indices[0].tolist() == index[0, order].tolist()
    assert torch.equal(whole.maps[0], maps[0, order])


def test_unreadable_images_are_skipped():
    ext = SpatialExtractor(Planted(), LayerSpec("features", "features"))
    got = collect_exemplars(ext, PlantedImages(unreadable=(1, 3)), to_tensor, trainer(), k=5)
    assert got.indices[0].tolist() == [5, 7, 8, 9, 11]


# ----------------------------------------------------------------------------- maps of layers


def test_pooling_layers_read_their_feature_map():
    model = Planted()
    x = torch.stack([to_tensor(PlantedImages()[i]) for i in (1, 6, 9)])
    with torch.no_grad():
        features = model.features(x)
        cam = SpatialExtractor(model, LayerSpec("fc", "fc", spatial="features"))(x)
        pooled = SpatialExtractor(model, LayerSpec("gap", "gap", spatial="features"))(x)
        logits = model(x)
    assert cam.shape == (3, 4, 32, 32)
    torch.testing.assert_close(cam.mean(dim=(2, 3)), logits, atol=1e-5, rtol=0)
    expected = torch.einsum("kc,bchw->bkhw", model.fc.weight, features)
    torch.testing.assert_close(cam, expected + model.fc.bias[None, :, None, None])
    assert torch.equal(pooled, features)


@pytest.fixture(scope="module")
def toy_cnn(compose):
    from cosy_bench.models import create_model

    return create_model(compose(["model=toy_cnn"]).model)  # the shipped weights


def test_toy_cnn_class_activation_maps_average_to_the_layer(toy_cnn):
    from cosy_bench.toyworld.data import ToyControlSet

    bundle = toy_cnn
    data = ToyControlSet(n=6)
    x = torch.stack([bundle.transform(data[i]) for i in range(len(data))])
    with torch.no_grad():
        for layer in ("concepts", "fc", "avgpool"):
            maps = bundle.spatial_extractor(layer)(x)
            acts = bundle.extractor(layer)(x)
            assert maps.shape == (6, acts.shape[1], 8, 8), layer
            torch.testing.assert_close(maps.mean(dim=(2, 3)), acts, atol=1e-4, rtol=0)
        assert bundle.layer("concepts").spatial == "conv4"
        # the maps vary over the image: a unit fires in places
        assert bundle.spatial_extractor("concepts")(x).std(dim=(2, 3)).mean() > 0.1


def test_toy_cnn_concept_units_exemplars_show_their_concept_where_masked(toy_cnn):
    """The trained toy CNN's ``concepts`` units (known ground truth): every exemplar holds
    the unit's concept, and the masks fall on its pixels, not on another concept's."""
    from cosy_bench.toyworld.data import ToyProbeSet

    data = ToyProbeSet(n=300, seed=54321)
    ex = collect_exemplars(toy_cnn.spatial_extractor("concepts"), data, toy_cnn.transform,
                           trainer(), k=5)
    units = torch.arange(len(data.concepts))
    assert data.labels[ex.indices, units[:, None]].float().mean() >= 0.95
    masks = ex.masks(64)  # [25, 5, 64, 64]
    concept = torch.stack([torch.stack([data.masks(i) for i in row])
                           for row in ex.indices.tolist()])  # [25, 5, C, 64, 64]
    own = concept[units, :, units]  # [25, 5, 64, 64]: the unit's concept in its exemplars
    other = concept[units, :, units.roll(7)]
    assert (masks & own).sum() / masks.sum() > 0.6
    assert (masks & other).sum() / masks.sum() < 0.2


def test_vit_tokens_become_a_grid_of_patch_tokens():
    class Tokens(nn.Module):
        def __init__(self, n_tokens: int):
            super().__init__()
            self.n_tokens = n_tokens
            self.encoder = nn.Identity()

        def forward(self, x):
            t = torch.arange(x.shape[0] * self.n_tokens * 2.0).view(x.shape[0], -1, 2)
            return self.encoder(t)

    x = torch.zeros(2, 3, 8, 8)
    grid = SpatialExtractor(Tokens(17), LayerSpec("encoder", "encoder", "cls"))(x)
    tokens = Tokens(17)(x)
    assert grid.shape == (2, 2, 4, 4)
    assert torch.equal(grid[1, :, 2, 3], tokens[1, 1 + 2 * 4 + 3])  # CLS dropped, row-major
    with pytest.raises(ValueError, match="square grid"):
        SpatialExtractor(Tokens(18), LayerSpec("encoder", "encoder"))(x)


# ----------------------------------------------------------------------------- errors


def test_errors_name_the_setting_to_change():
    ext = SpatialExtractor(Planted(), LayerSpec("features", "features"))
    data = PlantedImages()
    with pytest.raises(ValueError, match=r"explainer\.k=13.* 12 images"):
        collect_exemplars(ext, data, to_tensor, trainer(), k=13)
    with pytest.raises(ValueError, match=r"explainer\.k=0"):
        collect_exemplars(ext, data, to_tensor, trainer(), k=0)
    for q in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"explainer\.quantile="):
            collect_exemplars(ext, data, to_tensor, trainer(), k=3, quantile=q)
    assert data.loads == []  # refused before reading any image
    x = torch.zeros(1, 3, SIZE, SIZE)
    for name in ("fc", "gap"):  # [B, 4] logits, [B, 3, 1, 1] pooled: no map without spatial
        with pytest.raises(ValueError, match=rf"set layers\.{name}\.spatial=<module path"):
            SpatialExtractor(Planted(), LayerSpec(name, name))(x)
    with pytest.raises(ValueError, match="layers.fc.spatial="):  # through the predict loop
        collect_exemplars(SpatialExtractor(Planted(), LayerSpec("fc", "fc")), data, to_tensor,
                          trainer(), k=2)
    # a nonlinearity between the map and the pooling: the CAM would not be the layer's
    with pytest.raises(ValueError, match="differs from its activations"):
        SpatialExtractor(Planted(relu_before_pool=True),
                         LayerSpec("fc", "fc", spatial="features"))(to_tensor(data[1])[None])
    with pytest.raises(ValueError, match="did not run before the layer"):
        SpatialExtractor(Planted(), LayerSpec("gap", "gap", spatial="fc"))(x)
    pool_then_conv = nn.Sequential(nn.Conv2d(3, 5, 1), nn.AdaptiveAvgPool2d(1), nn.Conv2d(5, 2, 1))
    with pytest.raises(ValueError, match="units per image but spatial='0' has 5 channels"):
        SpatialExtractor(pool_then_conv, LayerSpec("2", "2", spatial="0"))(x)
    pool_2x2 = nn.Sequential(nn.Conv2d(3, 5, 1), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                             nn.Linear(20, 2))
    with pytest.raises(ValueError, match="the Linear reads 20 features"):
        SpatialExtractor(pool_2x2, LayerSpec("3", "3", spatial="0"))(x)


# ----------------------------------------------------------------------------- images, cache


def test_exemplar_images_undo_the_normalisation_of_the_toy_cnn_transform(compose):
    from hydra.utils import instantiate

    from cosy_bench.toyworld.data import ToyControlSet

    transform = instantiate(compose(["model=toy_cnn"]).model.preprocess)  # Compose(.., Normalize)
    data = ToyControlSet(n=5)
    loads = []

    class Counting(torch.utils.data.Dataset):
        def __len__(self):
            return len(data)

        def __getitem__(self, i):
            loads.append(i)
            return data[i]

    indices = torch.tensor([[3, 1], [3, 0]])
    images = exemplar_images(Counting(), transform, indices)
    assert images.shape == (2, 2, 3, 64, 64) and images.dtype == torch.float32
    assert sorted(loads) == [0, 1, 3]  # each distinct image once
    for pos in ((0, 0), (0, 1), (1, 0), (1, 1)):
        rendered = torch.from_numpy(data.images[indices[pos].item()]).permute(2, 0, 1) / 255
        torch.testing.assert_close(images[pos], rendered, atol=1e-5, rtol=0)
    # without a Normalize the transform's values are returned as they are
    plain = exemplar_images(data, to_tensor, torch.tensor([2]))
    torch.testing.assert_close(plain[0], to_tensor(data[2]))


def test_exemplars_round_trip_through_safetensors(exact, tmp_path):
    from safetensors.torch import load_file, save_file

    save_file(exact.to_tensors(), tmp_path / "e.safetensors")
    back = Exemplars.from_tensors(load_file(tmp_path / "e.safetensors"))
    for name, value in exact.to_tensors().items():
        assert torch.equal(getattr(back, name), value), name
    with pytest.raises(ValueError, match="levels"):
        Exemplars.from_tensors({k: v for k, v in exact.to_tensors().items() if k != "levels"})


# ----------------------------------------------------------------------------- two ranks

_WORKER = textwrap.dedent("""
    import sys
    from pathlib import Path
    import lightning as L, torch
    from omegaconf import OmegaConf
    from cosy_bench.distributed.session import session
    sys.path.insert(0, sys.argv[2])
    from test_exemplars import PlantedImages, Planted, to_tensor
    from cosy_bench.loops.exemplars import collect_exemplars
    from cosy_bench.models.layers import LayerSpec, SpatialExtractor

    out = Path(sys.argv[1])
    tcfg = dict(accelerator="cpu", devices=2, strategy="ddp", num_nodes=1)
    with session(OmegaConf.create(tcfg)) as s:
        trainer = L.Trainer(logger=False, enable_progress_bar=False,
                            enable_model_summary=False, **tcfg)
        ext = SpatialExtractor(Planted(), LayerSpec("features", "features"))
        got = collect_exemplars(ext, PlantedImages(), to_tensor, trainer, k=4, quantile=0.95,
                                quantile_samples=1200, batch_size=2)
        torch.save(got.to_tensors(), out / f"rank{s.rank}.pt")
""")


def test_two_ranks_give_the_single_process_exemplars(tmp_path):
    from helpers import run_two_ranks

    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    start = time.monotonic()
    run_two_ranks(script, str(tmp_path), str(TESTS), timeout=120)
    reference = planted_exemplars(k=4, quantile=0.95, quantile_samples=1200).to_tensors()
    for r in range(2):
        got = torch.load(tmp_path / f"rank{r}.pt")
        assert json.dumps(sorted(got)) == json.dumps(sorted(reference))
        for name, value in reference.items():
            assert torch.equal(got[name], value), (r, name)
    assert time.monotonic() - start < 120
