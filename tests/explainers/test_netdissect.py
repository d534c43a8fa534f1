"""NetDissect: threshold and IoU against an independent per-unit numpy computation (PIL
resizing as in the authors' NetDissect-Lite), and the toy world's concept units."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cosy_bench.explainers.netdissect import Tally, dissect, probe_categories, unit_masks
from cosy_bench.loops.exemplars import collect_exemplars

N, K, SIDE, MASK = 7, 5, 16, 12  # images, units, image side, mask side
CONCEPTS = ["a0", "a1", "b0", "b1", "b2", "scene0", "scene1"]
CATEGORIES = ["A", "A", "B", "B", "B", "scene", "scene"]
IMAGE_LEVEL = [False] * 5 + [True, True]


class RandomSegmentedProbe(torch.utils.data.Dataset):
    """Seeded random images with Broden-style labels: pixel masks of five concepts (some
    images leave category B unannotated) and two image-level scene labels."""

    mask_size = (MASK, MASK)

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.images = rng.integers(0, 256, (N, SIDE, SIDE, 3), dtype=np.uint8)
        self.pixels = rng.random((N, 5, MASK, MASK)) < 0.3
        self.pixels[rng.random(N) < 0.4, 2:5] = False  # category B not annotated there
        self.scenes = rng.random((N, 2)) < 0.5
        self.concepts, self.categories = CONCEPTS, CATEGORIES
        self.name = f"random-segmented-{seed}"

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int):
        return Image.fromarray(self.images[i], "RGB")

    def segmentation(self, i: int, size):
        assert tuple(size) == (MASK, MASK)
        c, flat = torch.from_numpy(self.pixels[i]).flatten(1).nonzero(as_tuple=True)
        return torch.stack([c, flat]), torch.from_numpy(np.flatnonzero(self.scenes[i]) + 5)


def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255


def extractor() -> nn.Module:
    torch.manual_seed(0)
    return nn.Conv2d(3, K, 4, stride=4).eval().requires_grad_(False)  # maps [B, K, 4, 4]


def trainer() -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                     enable_model_summary=False)


def numpy_dissection(maps: np.ndarray, probe: RandomSegmentedProbe, quantile: float,
                     union: str = "overlap"):
    """Per unit, per image, as NetDissect-Lite's tally: PIL bilinear resize, threshold,
    counts; category-wise unit counts where the unit's pixels overlap a label of the category
    (``overlap``, the authors') or on images annotated in it (``annotated``)."""
    thr = np.quantile(maps.transpose(1, 0, 2, 3).reshape(K, -1), 1 - quantile, axis=1)
    cat_names = sorted(set(CATEGORIES))
    iou = np.zeros((K, len(CONCEPTS)))
    for k in range(K):
        both, labels = np.zeros(len(CONCEPTS)), np.zeros(len(CONCEPTS))
        units_cat = dict.fromkeys(cat_names, 0.0)
        for i in range(N):
            up = np.asarray(Image.fromarray(maps[i, k].astype(np.float32), mode="F")
                            .resize((MASK, MASK), Image.BILINEAR))
            hit = up > thr[k]
            full = np.concatenate([probe.pixels[i], np.broadcast_to(
                probe.scenes[i][:, None, None], (2, MASK, MASK))])
            both += (full & hit).sum(axis=(1, 2))
            labels += full.sum(axis=(1, 2))
            for g in cat_names:
                seen = [(full[c] & hit) if union == "overlap" else full[c]
                        for c in range(len(CONCEPTS)) if CATEGORIES[c] == g]
                if any(m.any() for m in seen):
                    units_cat[g] += hit.sum()
        for c in range(len(CONCEPTS)):
            denom = units_cat[CATEGORIES[c]] + labels[c] - both[c]
            iou[k, c] = both[c] / denom if denom else 0.0
    return thr, iou


def test_threshold_and_iou_equal_a_per_unit_numpy_computation():
    probe, ext = RandomSegmentedProbe(), extractor()
    with torch.no_grad():
        maps = ext(torch.stack([to_tensor(probe[i]) for i in range(N)]))
    ref_thr, ref_iou = numpy_dissection(maps.numpy(), probe, 0.005)
    # the shared estimator (MILAN's exemplar pass) is exact with every position sampled
    levels = collect_exemplars(ext, probe, to_tensor, trainer(), k=1, quantile=0.995,
                               quantile_samples=10**6).levels
    np.testing.assert_allclose(levels.numpy(), ref_thr, rtol=0, atol=1e-6)
    tally, labelcat, _ = dissect(ext, probe, to_tensor, trainer(), levels, (MASK, MASK),
                                 batch_size=3)
    iou = tally.iou(labelcat)
    np.testing.assert_allclose(iou.numpy(), ref_iou, rtol=0, atol=1e-6)
    assert (ref_iou > 0).sum() > K  # not a vacuous comparison
    # the batch size does not matter
    again, _, _ = dissect(ext, probe, to_tensor, trainer(), levels, (MASK, MASK), batch_size=7)
    torch.testing.assert_close(again.iou(labelcat), iou)
    # both rules at a lower threshold (top 5%), where they differ: the suite's former rule,
    # kept as union=annotated, against its own reference
    for union in ("overlap", "annotated"):
        thr, ref = numpy_dissection(maps.numpy(), probe, 0.05, union=union)
        got, _, _ = dissect(ext, probe, to_tensor, trainer(), torch.from_numpy(thr).float(),
                            (MASK, MASK), batch_size=3, union=union)
        np.testing.assert_allclose(got.iou(labelcat).numpy(), ref, rtol=0, atol=1e-6)
        if union == "overlap":
            first = ref
    assert not np.allclose(first, ref)  # the two rules differ on this probe
    with pytest.raises(ValueError, match="explainer.union='any'"):
        dissect(ext, probe, to_tensor, trainer(), levels, (MASK, MASK), union="any")


def test_the_overlap_rule_counts_unit_pixels_only_where_they_meet_the_category():
    from cosy_bench.explainers.netdissect import Segmentation

    # one image, 4 pixels; concept 0 (category A) on pixel 0, concept 1 (category B) on
    # pixel 3, image-level concept 2 (category C); the unit fires on pixels 0 and 1
    labelcat = torch.eye(3, dtype=torch.float64)
    masks = torch.tensor([[[True, True, False, False]]])
    seg = Segmentation(torch.tensor([[0, 1], [0, 3]]), torch.tensor([2]))
    overlap, annotated = Tally.zeros(1, 3, 3), Tally.zeros(1, 3, 3)
    overlap.add(masks, [seg], labelcat)
    annotated.add(masks, [seg], labelcat, union="annotated")
    # A: overlapped (2 unit pixels); B: on the image but not under the unit (0 under the
    # authors' rule, 2 under the annotated one); C: image-level label (2)
    assert overlap.units_cat.tolist() == [[2.0, 0.0, 2.0]]
    assert annotated.units_cat.tolist() == [[2.0, 2.0, 2.0]]
    # IoU of B: 0 / (0 + 1 - 0) either way, but A's union is 2 + 1 - 1
    assert overlap.iou(labelcat).tolist() == [[0.5, 0.0, 2 / 4]]


def test_authors_threshold_reads_the_midrank_quantile_at_994_of_999():
    from cosy_bench.explainers.netdissect import authors_level
    from cosy_bench.loops.exemplars import unit_quantile

    assert authors_level(0.005) == 994 / 999
    values = torch.arange(1000, dtype=torch.float32)[:, None]  # one unit, values 0..999
    # linear: rank 0.995 * 999 = 994.005; mid-rank: 994/999 * 1000 - 0.5 = 994.49499...
    assert unit_quantile(values, 0.995).item() == pytest.approx(994.005, abs=1e-3)
    assert unit_quantile(values, authors_level(0.005), "midrank").item() == pytest.approx(
        994 / 999 * 1000 - 0.5, abs=1e-3)
    # mid-rank clamps at the ends to the extremes, as the sketch's min/max
    assert unit_quantile(values, 0.0001, "midrank").item() == 0.0
    assert unit_quantile(values, 0.9999, "midrank").item() == 999.0


def test_unit_masks_upsample_like_pil():
    rng = np.random.default_rng(3)
    maps = rng.normal(size=(2, 3, 5, 5)).astype(np.float32)
    got = unit_masks(torch.from_numpy(maps), torch.zeros(3), (15, 15)).view(2, 3, 15, 15)
    for i in range(2):
        for k in range(3):
            up = np.asarray(Image.fromarray(maps[i, k], mode="F").resize((15, 15),
                                                                          Image.BILINEAR))
            np.testing.assert_array_equal(got[i, k].numpy(), up > 0)


def test_a_label_twice_on_a_pixel_counts_once_and_categories_are_one_hot():
    from cosy_bench.explainers.netdissect import Segmentation

    tally = Tally.zeros(1, 2, 1)
    masks = torch.tensor([[[True, False, True, False]]])  # [B=1, K=1, P=4]
    seg = Segmentation(torch.tensor([[0, 0, 1], [0, 0, 3]]), torch.empty(0, dtype=torch.long))
    tally.add(masks, [seg], torch.ones(2, 1, dtype=torch.float64), fully_annotated=True)
    assert tally.both.tolist() == [[1.0, 0.0]]
    assert tally.labels.tolist() == [1.0, 1.0]
    assert tally.iou(torch.ones(2, 1, dtype=torch.float64)).tolist() == [[0.5, 0.0]]
    names, onehot = probe_categories(RandomSegmentedProbe())
    assert names == ["A", "B", "scene"] and onehot.sum(1).tolist() == [1.0] * 7


def test_a_probe_without_masks_is_refused_with_the_fix():
    from cosy_bench.explainers.netdissect import segmentation

    with pytest.raises(ValueError, match="probe=toyworld or probe=broden"):
        segmentation(object(), 0, (4, 4))


@pytest.fixture(scope="module")
def toy_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("netdissect")


def test_netdissect_names_the_toy_worlds_concept_units(compose, toy_cache, tmp_path):
    from cosy_bench.pipeline import run

    report = run(compose([f"paths.cache_dir={toy_cache}", "logger=none", "n_images=5",
                          "layer=concepts", "explainer=netdissect"]), tmp_path)
    assert report.summary["ground_truth_match"] >= 0.9
    assert report.summary["auc"]["mean"] >= 0.9
    row = report.rows[0]
    assert float(row["netdissect_iou"]) > 0.04 and row["netdissect_category"] == "colour"


def test_union_and_threshold_overrides_compose_and_reach_the_explainer(compose):
    from hydra.utils import instantiate

    cfg = compose(["explainer=netdissect", "explainer.union=annotated",
                   "explainer.threshold=authors"])
    explainer = instantiate(cfg.explainer)
    assert (explainer.union, explainer.threshold) == ("annotated", "authors")
    key = explainer.cache_key()
    assert key["union"] == "annotated" and key["threshold"] == "authors"
    default = instantiate(compose(["explainer=netdissect"]).explainer)
    assert (default.union, default.threshold) == ("overlap", "exact")
    from hydra.errors import InstantiationException

    with pytest.raises(InstantiationException, match="explainer.union='pixels'"):
        instantiate(compose(["explainer=netdissect", "explainer.union=pixels"]).explainer)
    compexp = instantiate(compose(["explainer=compexp", "explainer.threshold=authors"]).explainer)
    assert compexp.threshold == "authors"
