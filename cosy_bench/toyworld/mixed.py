"""The toy CNN's ``mixed`` layer: polysemantic units in superposition, with planted truth.

``mixed`` is ``nn.Linear(128, len(MIXED_UNITS))`` on the frozen trunk's pooled features
(``avgpool``, [B, 128]); its raw outputs [B, 12] are the layer's activations. Unit ``k`` is
trained (``python -m cosy_bench.toyworld.training.mixed``) to fire for the OR of the planted
concepts ``MIXED_UNITS[k]`` (two, once three, from different families), while a linear
read-out of all 12 units recovers every one of the 25 concepts: 12 units carry 25 concepts,
so each unit is polysemantic (superposition), and the concepts stay linearly recoverable
from the layer (measured in ``weights/toy_mixed.json``).

The ground truth of a unit is its planted concepts joined by ``|`` (:data:`TRUTH_SEP`), in
``MIXED_UNITS`` order, e.g. ``"red|grass"``; :func:`truth_concepts` splits such a string.
The head ships on its own (``weights/toy_mixed.safetensors``), so the trunk's file and every
other layer are unchanged.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cosy_bench.toyworld.vocab import CONCEPT_INDEX, FAMILY_OF

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHIPPED_MIXED = WEIGHTS_DIR / "toy_mixed.safetensors"
TRAIN_COMMAND = ("python -m cosy_bench.toyworld.training.mixed --seed 0 "
                 "--out cosy_bench/toyworld/weights/toy_mixed.safetensors")
#: separator of a polysemantic unit's planted concepts in its ground-truth string
TRUTH_SEP = "|"

#: The planted concepts of each unit: every one of the 25 concepts in exactly one unit, the
#: concepts of a unit from different families (a background OR a colour, a shape, ...).
MIXED_UNITS: list[tuple[str, ...]] = [
    ("red", "grass"), ("orange", "sky"), ("yellow", "sand"), ("green", "water"),
    ("stripes", "brick"), ("dots", "night"), ("circle", "snow"),
    ("blue", "square"), ("purple", "triangle"), ("pink", "star"), ("heart", "zigzag"),
    ("white", "cross", "checkerboard"),
]
#: The ground truth of every unit (``"red|grass"``, ...), the layer's ``ground_truth``.
MIXED_TRUTH: list[str] = [TRUTH_SEP.join(unit) for unit in MIXED_UNITS]


def truth_concepts(truth: str) -> list[str]:
    """The planted concepts of a ground-truth string (``"red|grass"`` -> ``["red",
    "grass"]``; a single concept -> a list of one)."""
    return [t.strip() for t in str(truth).split(TRUTH_SEP) if t.strip()]


def membership() -> torch.Tensor:
    """``M[c, k] = 1`` where concept ``c`` is planted in unit ``k``: float32 [25, 12]."""
    m = torch.zeros(len(CONCEPT_INDEX), len(MIXED_UNITS))
    for k, unit in enumerate(MIXED_UNITS):
        for concept in unit:
            m[CONCEPT_INDEX[concept], k] = 1.0
    return m


def _check_units() -> None:
    seen = [c for unit in MIXED_UNITS for c in unit]
    assert sorted(seen) == sorted(CONCEPT_INDEX), "every concept in exactly one unit"
    for unit in MIXED_UNITS:
        assert len(unit) >= 2 and len({FAMILY_OF[c] for c in unit}) == len(unit), unit


_check_units()


def mixed_head(in_features: int = 128) -> nn.Linear:
    """A fresh head ``nn.Linear(in_features, len(MIXED_UNITS))``."""
    return nn.Linear(in_features, len(MIXED_UNITS))


def load_mixed_head(head: nn.Linear, weights: str | Path | None = "toy_mixed") -> nn.Linear:
    """Load ``head``'s weights in place: ``"toy_mixed"`` for the shipped file, another
    string for a safetensors file written by the training module, None to keep ``head``
    as it is (its random initialisation).

    Raises:
        FileNotFoundError: the file is missing (the message gives the training command).
        ValueError: the file is damaged or holds another head.
    """
    if weights is None:
        return head
    path = SHIPPED_MIXED if str(weights) == "toy_mixed" else Path(weights)
    if not path.is_file():
        raise FileNotFoundError(
            f"toy CNN mixed-head weights not found at {path}. Train them with:\n  "
            f"{TRAIN_COMMAND}" if path == SHIPPED_MIXED else
            f"toy CNN mixed-head weights not found at {path}; set model.mixed=toy_mixed (the "
            f"shipped head) or train one with python -m cosy_bench.toyworld.training.mixed "
            f"--out {path}")
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as err:  # SafetensorError names no file
        raise ValueError(f"mixed-head weights {path} are damaged or not a safetensors file "
                         f"({err}); set model.mixed to an intact file") from err
    reference = head.state_dict()
    if set(state) != set(reference) or any(state[k].shape != reference[k].shape
                                           for k in reference):
        raise ValueError(f"{path} holds no mixed head of shape "
                         f"{tuple(reference['weight'].shape)}: keys {sorted(state)}")
    head.load_state_dict({k: v.to(reference[k].dtype) for k, v in state.items()})
    return head


def save_mixed_head(head: nn.Linear, path: str | Path, metadata: dict[str, str] | None = None
                    ) -> None:
    """Save the head's state dict as float16 safetensors."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(torch.float16).contiguous() for k, v in head.state_dict().items()},
              str(path), metadata=metadata)
