"""Labelled probe sets for explainers that need concept labels (INVERT) or just images
(CLIP-Dissect, MILAN). A labelled probe set has ``labels`` (bool [N, C]) and ``concepts``
(C names) besides the image-dataset protocol (``__getitem__ -> PIL``, ``name``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cosy_bench.data.datasets import (
    IMAGE_EXTENSIONS,
    SyntheticControlSet,
    load_image,
    seeded_subset,
)

WNIDS_FILE = Path(__file__).with_name("imagenet_wnids.txt")


def imagenet_wnids() -> list[str]:
    """The 1000 ImageNet-1k WordNet ids in torchvision's class-index order."""
    return [w for w in WNIDS_FILE.read_text().split() if w.startswith("n")]


def wnid_indices(root: Path, classes: list[str]) -> list[int]:
    """Class index of each folder named by an ImageNet-1k wnid; an unknown name is an error
    naming the folder."""
    index = {w: i for i, w in enumerate(imagenet_wnids())}
    unknown = [c for c in classes if c not in index]
    if unknown:
        raise ValueError(
            f"probe folder {str(root / unknown[0])!r} is not named by an ImageNet-1k wnid "
            f"({len(unknown)} such folder(s)); name class folders by wnid (n01440764 ...), "
            "or set probe.names_from_model=false to use the folder names as concepts")
    return [index[c] for c in classes]


class LabelledImageFolder(torch.utils.data.Dataset):
    """``root/<class>/<image>``: one concept per sub-folder (ImageNet train layout).

    ``names_from_model``: the sub-folders are ImageNet-1k wnids (``n01440764``...), named by
    the model's class names through their class index (:func:`wnid_indices`), so a folder
    holding a subset of the classes is named right. ``limit`` keeps a seeded subset of
    images (INVERT/CoSy used 50,000 ImageNet train images).
    """

    def __init__(self, root: str | None, name: str = "labelled_folder", limit: int | None = None,
                 seed: int = 0, names_from_model: bool = False, config_key: str = "probe.root"):
        if root in (None, "", "???"):
            raise ValueError(f"no probe folder given: set {config_key}=/path/to/train "
                             f"(probe set {name!r})")
        self.root = Path(str(root)).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"probe folder {str(self.root)!r} does not exist "
                                    f"(set {config_key})")
        classes = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        self.class_indices = wnid_indices(self.root, classes) if names_from_model else None
        files, targets = [], []
        for c, cls in enumerate(classes):
            for f in sorted((self.root / cls).rglob("*")):
                if f.suffix.lower() in IMAGE_EXTENSIONS:
                    files.append(f)
                    targets.append(c)
        if not files:
            raise ValueError(f"probe folder {str(self.root)!r} holds no images in class "
                             f"sub-folders (set {config_key})")
        keep = seeded_subset(len(files), limit, seed)
        files, targets = [files[i] for i in keep], [targets[i] for i in keep]
        self.files = files
        self.concepts = classes
        self.names_from_model = names_from_model
        self.labels = torch.zeros(len(files), len(classes), dtype=torch.bool)
        self.labels[torch.arange(len(files)), torch.tensor(targets)] = True
        self.name = f"{name}:{self.root.resolve()}:n{len(files)}" + (f":s{seed}" if limit else "")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        return load_image(self.files[i])


class SyntheticProbeSet(SyntheticControlSet):
    """Synthetic images with seeded random single labels, for smoke runs only."""

    def __init__(self, n: int = 64, size: int = 224, seed: int = 1, num_concepts: int = 10,
                 names_from_model: bool = True):
        super().__init__(n=n, size=size, seed=seed)
        rng = np.random.default_rng(seed)
        targets = torch.as_tensor(rng.integers(0, num_concepts, size=n))
        self.labels = torch.zeros(n, num_concepts, dtype=torch.bool)
        self.labels[torch.arange(n), targets] = True
        self.concepts = [f"concept {i}" for i in range(num_concepts)]
        self.names_from_model = names_from_model
        self.name = f"synthetic-probe:n{n}:size{size}:s{seed}:c{num_concepts}"


def probe_concepts(probe, model) -> list[str]:
    """The probe set's concept names, or the model's class names where the probe asks for them
    (by each folder's class index where it has them: wnid folders)."""
    indices = getattr(probe, "class_indices", None)
    if getattr(probe, "names_from_model", False) and model.class_names and indices is not None:
        if max(indices) >= len(model.class_names):
            raise ValueError(f"probe {probe.name!r}: wnid folders name ImageNet-1k classes, "
                             f"but model {model.name!r} has {len(model.class_names)} classes")
        return [model.class_names[i] for i in indices]
    if getattr(probe, "names_from_model", False) and model.class_names:
        names = model.class_names
        if len(names) >= len(probe.concepts):
            return list(names[: len(probe.concepts)])
    return list(probe.concepts)
