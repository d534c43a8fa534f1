"""Image folders as control/probe sets: a seeded subset (``limit``) is stable and sorted."""

from __future__ import annotations

import numpy as np
from PIL import Image

from cosy_bench.data.datasets import ImageFolder, seeded_subset
from cosy_bench.data.probe import LabelledImageFolder


def _folder(root, n, classes=("a",)):
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (i, 0, 0)).save(root / c / f"{i:02d}.png")
    return root


def test_seeded_subset_is_sorted_seeded_and_whole_without_limit():
    assert seeded_subset(5, None, 0) == [0, 1, 2, 3, 4]
    assert seeded_subset(5, 9, 0) == [0, 1, 2, 3, 4]
    a = seeded_subset(100, 10, 3)
    assert a == sorted(a) and len(set(a)) == 10 and a == seeded_subset(100, 10, 3)
    assert a == np.sort(np.random.default_rng(3).choice(100, 10, replace=False)).tolist()
    assert a != seeded_subset(100, 10, 4)


def test_image_folder_limit_keeps_a_seeded_sample(tmp_path):
    root = _folder(tmp_path / "ctrl", 10)
    every = ImageFolder(root).files
    some = ImageFolder(root, limit=4, seed=1).files
    assert len(every) == 10 and len(some) == 4
    assert some == [every[i] for i in seeded_subset(10, 4, 1)]


def test_probe_folder_limit_keeps_files_and_targets_together(tmp_path):
    root = _folder(tmp_path / "probe", 6, classes=("cat", "dog"))
    probe = LabelledImageFolder(root, limit=5, seed=0)
    assert len(probe.files) == 5
    for f, row in zip(probe.files, probe.labels, strict=True):
        assert [probe.concepts[j] for j in row.nonzero().flatten().tolist()] == [f.parent.name]
