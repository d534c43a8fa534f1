"""The Broden loader on a small Broden-format folder written by the test."""

from __future__ import annotations

import csv
import hashlib
import shutil

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cosy_bench.bench.standins import segmentation_png as seg_png
from cosy_bench.bench.standins import write_broden_tables
from cosy_bench.data.broden import BRODEN_MD5, BrodenProbeSet, download
from cosy_bench.explainers.netdissect import dissect, probe_categories

LABELS = [(1, "red", "color(3)"), (2, "dog", "object(2);part(1)"), (3, "ear", "part(4)"),
          (4, "kitchen", "scene(2)"), (5, "striped", "texture(1)")]


@pytest.fixture
def broden(tmp_path):
    root = tmp_path / "broden1_224"
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
            root / "images" / f"im{i}.jpg")
        color = np.zeros((4, 4), dtype=np.int64)
        color[:2, :2] = 1
        obj = np.zeros((4, 4), dtype=np.int64)
        obj[2:, :] = 2
        part = np.zeros((4, 4), dtype=np.int64)
        part[3, 3] = 3
        rows.append({"image": f"im{i}.jpg", "split": "train", "ih": 8, "iw": 8, "sh": 4,
                     "sw": 4,
                     "color": seg_png(root / "images" / f"im{i}_color.png", color),
                     "object": seg_png(root / "images" / f"im{i}_object.png", obj)
                     if i != 2 else "",
                     "part": seg_png(root / "images" / f"im{i}_part.png", part),
                     "material": "", "scene": "4" if i == 0 else "", "texture": "5;"})
    write_broden_tables(root, rows, LABELS, frequency=1)
    return root


def test_concepts_categories_and_segmentation(broden):
    probe = BrodenProbeSet(broden)
    assert probe.concepts == ["red", "dog", "ear", "kitchen", "striped"]
    assert probe.categories == ["color", "object", "part", "scene", "texture"]
    assert probe.mask_size == (4, 4) and len(probe) == 3 and probe[0].size == (8, 8)
    pixels, image = probe.segmentation(0, (4, 4))
    got = {(int(c), int(p)) for c, p in pixels.T}
    want = ({(0, p) for p in (0, 1, 4, 5)} | {(1, p) for p in range(8, 16)} | {(2, 15)})
    assert got == want
    assert sorted(image.tolist()) == [3, 4]  # kitchen, striped: whole-image labels
    # nearest resizing to another mask size keeps the labels
    big, _ = probe.segmentation(0, (8, 8))
    assert (big[0] == 0).sum() == 16
    names, onehot = probe_categories(probe)
    assert names == ["color", "object", "part", "scene", "texture"]
    assert onehot.argmax(1).tolist() == [0, 1, 2, 3, 4]


def test_primary_category_is_the_one_of_largest_coverage_in_c_csv(broden, caplog):
    # without c_*.csv (above): by label.csv's counts, dog = object(2);part(1) -> object, with
    # a warning; with them, as NetDissect-Lite, by coverage: dog covers more as a part
    with caplog.at_level("WARNING", logger="cosy_bench"):
        assert BrodenProbeSet(broden).categories[1] == "object"
    assert "c_object.csv" in caplog.text
    coverage = {"color": [(1, 0.2)], "object": [(2, 0.01)], "part": [(2, 0.05), (3, 0.1)],
                "scene": [(4, 0.9)], "texture": [(5, 1.0)]}
    for cat, rows in coverage.items():
        with open(broden / f"c_{cat}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["code", "number", "name", "frequency", "coverage"])
            for code, (number, cov) in enumerate(rows, start=1):
                w.writerow([code, number, LABELS[number - 1][1], 1, cov])
    probe = BrodenProbeSet(broden)
    assert probe.categories == ["color", "part", "part", "scene", "texture"]
    # only the dissected categories compete: without part, dog is an object again
    assert BrodenProbeSet(broden, categories=("object", "scene", "texture", "color")
                          ).categories[1] == "object"


def test_netdissect_tallies_a_broden_folder(broden):
    probe = BrodenProbeSet(broden)
    conv = nn.Conv2d(3, 2, 4, stride=4).eval().requires_grad_(False)  # maps [B, 2, 2, 2]
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    tr = lambda im: torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255  # noqa: E731
    tally, labelcat, _ = dissect(conv, probe, tr, trainer, torch.full((2,), -1e9), (4, 4))
    # every pixel is active: IoU = concept pixels / pixels of images annotated in its category
    assert tally.labels.tolist() == [12.0, 16.0, 3.0, 16.0, 48.0]
    iou = tally.iou(labelcat)[0]
    # dog: object annotated on 2 images (32 px); kitchen: scene on 1 image (16 px)
    assert iou.tolist() == pytest.approx([12 / 48, 16 / 32, 3 / 48, 16 / 16, 48 / 48])


def test_missing_folder_names_the_setting(tmp_path):
    with pytest.raises(FileNotFoundError, match="probe.root"):
        BrodenProbeSet(tmp_path)
    with pytest.raises(ValueError, match="probe.root"):
        BrodenProbeSet(None)


@pytest.fixture
def broden_zip(broden, tmp_path):
    """``broden1_224.zip`` of the small folder (a ``broden1_224/`` inside, as published)."""
    archive = shutil.make_archive(str(tmp_path / "server" / "broden1_224"), "zip",
                                  root_dir=broden.parent, base_dir=broden.name)
    return tmp_path / "server" / "broden1_224.zip", archive


def test_download_verifies_the_digests_before_unpacking(broden_zip, tmp_path, capsys):
    archive, _ = broden_zip
    url = archive.resolve().as_uri()  # file://: urllib reads it like the authors' server
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    # a wrong MD5 (the pinned one is not this archive's): ValueError naming the file and both
    # digests, and nothing kept
    bad = tmp_path / "bad"
    with pytest.raises(ValueError) as err:
        download(bad, url=url)
    for text in ("broden1_224.zip", BRODEN_MD5, md5):
        assert text in str(err.value)
    assert list(bad.iterdir()) == []
    # a right MD5 but a wrong SHA-256 given by the user
    with pytest.raises(ValueError, match=f"SHA256 {sha} is not the expected {'0' * 64}"):
        download(bad, sha256="0" * 64, url=url, md5=md5)
    assert list(bad.iterdir()) == []
    # right digests: unpacked, and the loader reads it
    good = tmp_path / "good"
    folder = download(good, sha256=sha.upper(), url=url, md5=md5)
    assert folder == good / "broden1_224"
    assert "md5 and sha256 verified" in capsys.readouterr().out
    probe = BrodenProbeSet(folder)
    assert probe.concepts == ["red", "dog", "ear", "kitchen", "striped"] and len(probe) == 3
    assert sorted(p.name for p in good.iterdir()) == ["broden1_224", "broden1_224.zip"]
