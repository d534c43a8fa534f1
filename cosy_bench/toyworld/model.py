"""ToyCNN: a small CNN for the toy world, with ground-truth concept units.

Layers (the names the suite hooks):

* ``conv1`` .. ``conv4``: conv blocks of 1, 2, 1, 2 convs (conv -> BatchNorm -> ReLU; conv1
  and conv2 start with stride 2, conv3 ends with a max-pool), outputs [B, 32, 32, 32],
  [B, 64, 16, 16], [B, 96, 8, 8], [B, 128, 8, 8].
* ``avgpool``: ``nn.AdaptiveAvgPool2d(1)``, output [B, 128, 1, 1].
* ``concepts``: ``nn.Linear(128, len(CONCEPTS))``; unit ``j`` is trained (BCE with logits) to
  detect ``CONCEPTS[j]``; its raw logits [B, C] are the layer's activations.
* ``fc``: ``nn.Linear(128, len(CLASS_NAMES))``, the classifier (the ``output`` layer), in
  parallel with ``concepts`` on the pooled features; ``forward`` returns its logits.
* ``mixed``: ``nn.Linear(128, 12)`` on the pooled features, polysemantic units in
  superposition (:mod:`cosy_bench.toyworld.mixed`); its weights ship in their own file and
  are made last at initialisation, so the other layers do not depend on it.

Inputs are 64 x 64 RGB images preprocessed by :func:`preprocess` (ToTensor + Normalize with
:data:`MEAN`, :data:`STD`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from cosy_bench.toyworld.mixed import load_mixed_head, mixed_head
from cosy_bench.toyworld.vocab import CLASS_NAMES, CONCEPTS

MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
STD: tuple[float, float, float] = (0.25, 0.25, 0.25)
IMAGE_SIZE = 64

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHIPPED_WEIGHTS = WEIGHTS_DIR / "toy_cnn.safetensors"
TRAIN_COMMAND = (
    "python -m cosy_bench.toyworld.training.cnn --seed 0 --steps 2400 "
    "--out cosy_bench/toyworld/weights/toy_cnn.safetensors"
)


def _block(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, n_convs: int = 1,
           pool: bool = False) -> nn.Sequential:
    """``n_convs`` x (conv without bias -> BatchNorm -> ReLU) [-> MaxPool 2]; only the first
    conv has ``kernel`` and ``stride``, the others are 3 x 3 with stride 1."""
    layers: list[nn.Module] = []
    for k in range(n_convs):
        layers += [
            nn.Conv2d(c_in if k == 0 else c_out, c_out, kernel if k == 0 else 3,
                      stride=stride if k == 0 else 1, padding=(kernel if k == 0 else 3) // 2,
                      bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class ToyCNN(nn.Module):
    """Four conv blocks, global average pooling, a concept head and a class head.

    Args:
        n_classes: outputs of ``fc`` (default ``len(CLASS_NAMES)`` = 48).
        n_concepts: outputs of ``concepts`` (default ``len(CONCEPTS)`` = 25).
        mixed: add the ``mixed`` head (as :func:`load_toy_cnn` does); without it the state
            dict is the trunk file's (training, MILAN's toy encoder).
    """

    def __init__(self, n_classes: int = len(CLASS_NAMES), n_concepts: int = len(CONCEPTS),
                 mixed: bool = False):
        super().__init__()
        self.conv1 = _block(3, 32, kernel=5, stride=2)  # [B, 32, 32, 32]
        self.conv2 = _block(32, 64, stride=2, n_convs=2)  # [B, 64, 16, 16]
        self.conv3 = _block(64, 96, pool=True)  # [B, 96, 8, 8]
        self.conv4 = _block(96, 128, n_convs=2)  # [B, 128, 8, 8]
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # [B, 128, 1, 1]
        self.concepts = nn.Linear(128, n_concepts)  # [B, 25]
        self.fc = nn.Linear(128, n_classes)  # [B, 48]
        if mixed:  # [B, 12]; made last: the layers above draw the same initialisation
            self.mixed = mixed_head(128)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features [B, 128] of images x [B, 3, 64, 64]."""
        x = self.conv4(self.conv3(self.conv2(self.conv1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward_both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits [B, n_classes] and concept logits [B, n_concepts] of x [B, 3, 64, 64]."""
        h = self.features(x)
        return self.fc(h), self.concepts(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits [B, n_classes] of normalised images x [B, 3, 64, 64].

        The ``concepts`` and ``mixed`` heads run too, so hooks on them see their activations.
        """
        h = self.features(x)
        self.concepts(h)
        if hasattr(self, "mixed"):
            self.mixed(h)
        return self.fc(h)


def preprocess_transform():
    """The torchvision transform PIL image -> normalised tensor [3, 64, 64]."""
    from torchvision import transforms

    return transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


def preprocess(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Normalise a batch of uint8 images [B, H, W, 3] into a float tensor [B, 3, H, W].

    Equal to applying :func:`preprocess_transform` to each image as a PIL image.
    """
    t = torch.as_tensor(np.asarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (t - mean) / std


def save_toy_cnn(model: ToyCNN, path: str | Path, metadata: dict[str, str] | None = None,
                 dtype: torch.dtype = torch.float16) -> None:
    """Save the model's state dict as safetensors (floating tensors cast to ``dtype``),
    without the ``mixed`` head (it ships in its own file)."""
    from safetensors.torch import save_file

    state = {
        k: (v.to(dtype) if v.is_floating_point() else v).contiguous()
        for k, v in model.state_dict().items() if not k.startswith("mixed.")
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=metadata)


def load_toy_cnn(weights: str | Path | None = "toy_cnn", seed: int = 0,
                 mixed: str | Path | None = "toy_mixed") -> ToyCNN:
    """Build a :class:`ToyCNN` in eval mode.

    Args:
        weights: None for a random initialisation (seeded with ``seed``); ``"toy_cnn"`` for
            the shipped weights ``cosy_bench/toyworld/weights/toy_cnn.safetensors``; any other
            string is the path of a safetensors file written by :func:`save_toy_cnn`.
        seed: seed of the random initialisation when ``weights`` is None.
        mixed: the ``mixed`` head's weights (:func:`~cosy_bench.toyworld.mixed.load_mixed_head`:
            ``"toy_mixed"`` the shipped head, a path, None its random initialisation);
            ignored when ``weights`` is None (all random).

    Raises:
        FileNotFoundError: when the weights file does not exist (the message names the path
            and the command that trains it).
    """
    if weights is None:
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            model = ToyCNN(mixed=True)
        finally:
            torch.random.set_rng_state(state)
        return model.eval()
    path = SHIPPED_WEIGHTS if str(weights) == "toy_cnn" else Path(weights)
    if not path.is_file():
        raise FileNotFoundError(
            f"toy CNN weights not found at {path}. Train them with:\n  {TRAIN_COMMAND}"
            if path == SHIPPED_WEIGHTS
            else f"toy CNN weights not found at {path}. Train a model with:\n"
            f"  python -m cosy_bench.toyworld.training.cnn --seed 0 --steps 2400 --out {path}"
        )
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as err:  # SafetensorError names no file
        raise ValueError(f"toy CNN weights {path} are damaged or not a safetensors file "
                         f"({err}); set model.weights to an intact file") from err
    model = ToyCNN(mixed=True)
    reference = model.state_dict()
    if str(meta.get("format", "")).startswith("cosy_bench.toy_clip"):
        raise ValueError(f"model.weights={str(weights)!r} is the toy CLIP's weights file, not "
                         "a toy CNN's: set model.weights to a file written by save_toy_cnn "
                         "(default: toy_cnn, the shipped one); the toy CLIP is the clip "
                         "group's (clip=toyworld, clip.weights=...)")
    # the mixed head (layer=mixed) is shipped in its own file: a trunk file need not hold it
    missing = sorted(k for k in set(reference) - set(state) if not k.startswith("mixed."))
    unexpected = sorted(set(state) - set(reference))
    wrong = [k for k in set(reference) & set(state) if state[k].shape != reference[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(f"model.weights={str(weights)!r} ({path}) holds no toy CNN state dict "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]}, other shapes "
                         f"{sorted(wrong)[:3]}): set model.weights to a file written by "
                         "save_toy_cnn (default: toy_cnn, the shipped one)")
    model.load_state_dict({k: v.to(reference[k].dtype) for k, v in state.items()}, strict=False)
    load_mixed_head(model.mixed, mixed)
    return model.eval()
