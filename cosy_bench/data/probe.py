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


class LabelledImageFolder(torch.utils.data.Dataset):
    """``root/<class>/<image>``: one concept per sub-folder (ImageNet train layout).

    ``names_from_model``: name the sorted sub-folders by the model's class names (ImageNet's
    ``n01440764``... folders sort in the order of torchvision's class indices). ``limit`` keeps
    a seeded subset of images (INVERT/CoSy used 50,000 ImageNet train images).
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
    """The probe set's concept names, or the model's class names where the probe asks for them."""
    if getattr(probe, "names_from_model", False) and model.class_names:
        names = model.class_names
        if len(names) >= len(probe.concepts):
            return list(names[: len(probe.concepts)])
    return list(probe.concepts)
