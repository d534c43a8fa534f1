"""Deterministic toy-world datasets: a control set (random scenes) and a labelled probe set."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from cosy_bench.toyworld.inputs import refuse_real_inputs
from cosy_bench.toyworld.render import render_batch_with_classes, render_scene
from cosy_bench.toyworld.scenes import RENDERER_VERSION
from cosy_bench.toyworld.vocab import CLASS_NAMES, CONCEPTS

CONTROL_SEED = 12345


class ToyControlSet(Dataset):
    """``n`` random toy-world scenes (the CoSy control data of toy-world models).

    All images are rendered in ``__init__`` (about a millisecond each); scene ``i`` depends
    only on ``(seed, i, size)``, so a larger ``n`` extends a smaller one.

    Args:
        n: number of images.
        seed: stream seed of the scenes.
        size: image side in pixels.
        transform: optional callable applied to each PIL image in ``__getitem__``.
        root: null (the key of image folders, see :mod:`.inputs`).

    Attributes:
        name: cache key, e.g. ``"toyworld-v3-control-n2000-s12345"`` (renderer version, n, seed).
        images: uint8 [N, H, W, 3].
        labels: bool tensor [N, C] over ``vocab.CONCEPTS``.
        targets: int64 tensor [N], index in ``vocab.CLASS_NAMES`` of each scene's main object.
    """

    kind = "control"

    def __init__(self, n: int = 2000, seed: int = CONTROL_SEED, size: int = 64,
                 transform: Callable | None = None, root: str | None = None):
        key = "probe.root" if self.kind == "probe" else "dataset.root"
        refuse_real_inputs(f"{self.kind} set", **{key: root})
        self.n, self.seed, self.size, self.transform = int(n), int(seed), int(size), transform
        self.name = f"toyworld-{RENDERER_VERSION}-{self.kind}-n{self.n}-s{self.seed}" + (
            "" if self.size == 64 else f"-{self.size}px")
        images, labels, classes = render_batch_with_classes(self.n, self.seed, size=self.size)
        self.images: np.ndarray = images
        self.labels: torch.Tensor = torch.from_numpy(labels)
        self.targets: torch.Tensor = torch.from_numpy(classes)
        self.concepts: list[str] = list(CONCEPTS)
        self.classes: list[str] = list(CLASS_NAMES)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        """The RGB PIL image of scene ``i`` (passed through ``transform`` if one is set)."""
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} images")
        image = Image.fromarray(self.images[i], "RGB")
        return self.transform(image) if self.transform is not None else image


class ToyProbeSet(ToyControlSet):
    """A concept-labelled probe set of random scenes (for explainers such as INVERT).

    Same as :class:`ToyControlSet`, but ``n`` and ``seed`` have one source: the run's
    ``probe`` config (``conf/probe/toyworld.yaml``: 3000 scenes, seed 777), so they are
    required here. ``labels[i, j]`` says whether ``concepts[j]`` shows in image ``i`` and
    :meth:`masks` gives its pixels.

    Attributes:
        name: cache key, e.g. ``"toyworld-v3-probe-n3000-s777"``.
    """

    kind = "probe"

    def __init__(self, *, n: int, seed: int, size: int = 64,
                 transform: Callable | None = None, root: str | None = None,
                 names_from_model: bool = False):
        refuse_real_inputs("probe set", **{"probe.names_from_model": names_from_model or None})
        super().__init__(n=n, seed=seed, size=size, transform=transform, root=root)

    def masks(self, i: int) -> torch.Tensor:
        """Concept masks of image ``i``: bool [C, H, W] (re-rendered, identical pixels)."""
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} images")
        rendered = render_scene(self.seed, i, size=self.size)
        return torch.from_numpy(rendered.masks)
