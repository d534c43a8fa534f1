"""What a toy-world scene is and how one is drawn at random: objects (a colour, a shape and
optionally a pattern each) on a background, :class:`SceneSpec`; the seeded sampler
:func:`sample_scene`, which shows required concepts prominently; the :class:`Rendered`
result the renderer (:mod:`.render`) returns; and :func:`caption`, a sentence naming a scene.

``objects[0]`` is the *main* object: the largest, drawn last (on top), and the one that
defines the scene's class (``"{colour} {shape}"``, see ``vocab.CLASS_NAMES``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cosy_bench.toyworld.vocab import (
    BACKGROUNDS,
    COLOURS,
    CONCEPT_INDEX,
    CONCEPTS,
    FAMILY_OF,
    PATTERNS,
    SHAPES,
    class_index,
)

#: Version of the scene distribution and drawing; part of every toy-world cache key (the
#: generator's name and the datasets' names). Bump it whenever any image would change.
RENDERER_VERSION = "v3"

#: Base RGB (0-255) of each colour concept.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 35),
    "orange": (245, 135, 20),
    "yellow": (245, 222, 40),
    "green": (40, 170, 55),
    "blue": (35, 75, 225),
    "purple": (140, 50, 185),
    "pink": (250, 135, 195),
    "white": (245, 245, 245),
}

#: Background used when a random scene has none of the vocabulary's backgrounds (no concept).
PLAIN = "plain"
#: Probability that a random (not required) background is :data:`PLAIN`.
P_PLAIN = 0.3
#: Probability that a random main object is solid (has no pattern).
P_SOLID_MAIN = 0.5
#: Probability that a random secondary object is solid.
P_SOLID_SECONDARY = 0.75
#: Shape scale so that every shape covers ``2 * radius**2`` (in units of the image side).
SHAPE_SCALE: dict[str, float] = {
    "circle": 0.887, "square": 0.982, "triangle": 1.240, "star": 1.230, "cross": 1.022,
    "heart": 0.850,
}
#: Farthest shape point from the centre, in units of ``radius``.
SHAPE_EXTENT: dict[str, float] = {
    "circle": 0.80, "square": 1.00, "triangle": 1.24, "star": 1.23, "cross": 1.02,
    "heart": 0.99,
}
#: Largest rotation of a shape (radians); shapes are shown roughly upright.
MAX_ROTATION = np.pi / 6
#: Minimum number of visible pixels (at 64 px) for an object's concepts to be labelled.
MIN_VISIBLE_PIXELS = 6

PATTERN_ADJECTIVES: dict[str, str] = {
    "stripes": "striped",
    "dots": "dotted",
    "checkerboard": "checkerboard",
    "zigzag": "zigzag",
}
BACKGROUND_PHRASES: dict[str, str] = {
    "grass": "on grass",
    "sky": "in the sky",
    "sand": "on sand",
    "water": "on water",
    "brick": "in front of a brick wall",
    "night": "at night",
    "snow": "in the snow",
    PLAIN: "on a plain background",
}


@dataclass(frozen=True)
class ObjectSpec:
    """One object of a scene. Positions and lengths are fractions of the image side.

    Attributes:
        colour, shape: members of ``vocab.COLOURS`` / ``vocab.SHAPES``.
        pattern: a member of ``vocab.PATTERNS``, or None for a solid object.
        cx, cy: centre (x to the right, y down), in [0, 1].
        radius: size of the shape: it covers ``2 * radius**2`` (all shapes alike); its
            farthest point is ``radius * SHAPE_EXTENT[shape]`` from the centre.
        angle: rotation of the shape, radians.
        pattern_period: period of the pattern.
        pattern_angle: rotation of the pattern relative to the shape, radians.
        pattern_phase: (phase_a, phase_b) offsets of the pattern, in periods.
    """

    colour: str
    shape: str
    pattern: str | None
    cx: float
    cy: float
    radius: float
    angle: float
    pattern_period: float = 7.0 / 64
    pattern_angle: float = 0.0
    pattern_phase: tuple[float, float] = (0.0, 0.0)

    @property
    def reach(self) -> float:
        """Distance from the centre to the farthest point of the shape."""
        return self.radius * SHAPE_EXTENT[self.shape]

    @property
    def concepts(self) -> list[str]:
        """The concepts this object carries: colour, shape and (if any) pattern."""
        return [self.colour, self.shape] + ([self.pattern] if self.pattern else [])

    def describe(self) -> str:
        """Phrase such as ``"red striped circle"``."""
        words = [self.colour]
        if self.pattern:
            words.append(PATTERN_ADJECTIVES[self.pattern])
        words.append(self.shape)
        return " ".join(words)


@dataclass(frozen=True)
class SceneSpec:
    """What a scene shows. ``objects[0]`` is the main object (largest, drawn on top).

    Attributes:
        background: a member of ``vocab.BACKGROUNDS`` or :data:`PLAIN` (no concept).
        objects: the objects, main object first; drawn in reverse order.
        size: side of the rendered image in pixels.
    """

    background: str
    objects: tuple[ObjectSpec, ...]
    size: int = 64

    @property
    def main(self) -> ObjectSpec:
        return self.objects[0]

    @property
    def class_index(self) -> int:
        """Index in ``vocab.CLASS_NAMES`` of the main object's ``"{colour} {shape}"``."""
        return class_index(self.main.colour, self.main.shape)


@dataclass
class Rendered:
    """A rendered scene.

    Attributes:
        image: uint8 [H, W, 3] RGB.
        labels: bool [C], multi-hot over ``vocab.CONCEPTS`` (concepts with a visible mask).
        masks: bool [C, H, W], pixels of each present concept (object pixels for a colour,
            shape or pattern, visible background pixels for a background); None when the
            renderer was asked to skip them.
        spec: the scene that was drawn.
        visible: per object of ``spec.objects``, whether enough of it shows to be labelled.
        areas: float32 [C], fraction of the image each concept covers (0 when absent).
    """

    image: np.ndarray
    labels: np.ndarray
    masks: np.ndarray | None
    spec: SceneSpec = field(repr=False)
    visible: tuple[bool, ...] = ()
    areas: np.ndarray | None = None

    @property
    def class_index(self) -> int:
        return self.spec.class_index


# ----------------------------------------------------------------------------- sampling


def scene_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of scene ``index`` of a stream ``seed``: independent of batch layout."""
    return np.random.default_rng([int(seed) & 0xFFFF_FFFF_FFFF_FFFF, int(index)])


def _split_required(required: Sequence[str]) -> dict[str, list[str]]:
    by_family: dict[str, list[str]] = {"colour": [], "shape": [], "pattern": [], "background": []}
    for concept in required:
        if concept not in CONCEPT_INDEX:
            raise ValueError(f"unknown toy-world concept {concept!r}; known: {CONCEPTS}")
        family = by_family[FAMILY_OF[concept]]
        if concept not in family:
            family.append(concept)
    return by_family


def _pattern_params(rng: np.random.Generator) -> dict:
    return {
        "pattern_period": float(rng.uniform(5.5, 8.5)) / 64,
        "pattern_angle": float(rng.uniform(0, np.pi)),
        "pattern_phase": (float(rng.random()), float(rng.random())),
    }


def _place(
    rng: np.random.Generator, reach: float, placed: list[ObjectSpec], must: bool
) -> tuple[float, float] | None:
    """Centre for a new object of extent ``reach`` that overlaps the placed ones little.

    Returns None if no free spot is found in 30 tries; with ``must`` the least-overlapping
    candidate is returned instead.
    """
    best, best_score = None, -np.inf
    lo, hi = min(0.75 * reach, 0.5), max(1 - 0.75 * reach, 0.5)
    for _ in range(30):
        cx, cy = (float(v) for v in rng.uniform(lo, hi, size=2))
        score = min(
            (np.hypot(cx - o.cx, cy - o.cy) / (o.reach + reach) for o in placed),
            default=np.inf,
        )
        if score >= 0.85:
            return cx, cy
        if score > best_score:
            best, best_score = (cx, cy), score
    return best if must else None


def sample_scene(
    rng: np.random.Generator, required: Sequence[str] = (), size: int = 64
) -> SceneSpec:
    """Draw a scene that shows every required concept; everything else is random.

    Required colour, shape and pattern go to the main object, which is then large (a close
    up); a second required colour / shape / pattern goes to a further object, and so on (a
    single required shape is shared by all such objects: "red and white squares"). A
    required background is the scene's background (the objects are then small, unless an
    object concept is required too). Without requirements: background uniform over
    ``BACKGROUNDS`` or plain (probability ``P_PLAIN``), 1-3 objects (probabilities 0.55, 0.35,
    0.1), each attribute uniform,
    main object solid with probability ``P_SOLID_MAIN``.

    Args:
        rng: source of all randomness.
        required: members of ``vocab.CONCEPTS`` (raises ValueError for others).
        size: image side in pixels.

    Returns:
        The scene; ``objects[0]`` is the main object.
    """
    req = _split_required(required)
    n_object_req = max(len(req["colour"]), len(req["shape"]), len(req["pattern"]))
    u = rng.random()
    n_random = 1 if u < 0.55 else 2 if u < 0.9 else 3

    if req["background"]:
        background = req["background"][0]
    else:
        background = PLAIN if rng.random() < P_PLAIN else str(rng.choice(BACKGROUNDS))

    if n_object_req >= 2:
        main_radius = rng.uniform(0.2, 0.28)
        n_objects = max(n_object_req, min(n_random, 2))
    elif n_object_req == 1:
        main_radius = rng.uniform(0.36, 0.44)
        n_objects = min(n_random, 2)
    elif req["background"]:
        main_radius = rng.uniform(0.12, 0.2)
        n_objects = min(n_random, 2)
    else:
        main_radius = rng.uniform(0.2, 0.36)
        n_objects = n_random

    objects: list[ObjectSpec] = []
    for k in range(n_objects):
        is_required = k < n_object_req
        if k == 0:
            radius = float(main_radius)
        elif is_required:
            radius = float(rng.uniform(0.13, 0.18))
        else:
            radius = float(rng.uniform(0.12, max(0.125, min(0.18, 0.55 * main_radius))))
        colour = (req["colour"][k] if k < len(req["colour"])
                  else str(rng.choice(COLOURS)))
        if k < len(req["shape"]):
            shape = req["shape"][k]
        elif is_required and len(req["shape"]) == 1:  # "red and white squares"
            shape = req["shape"][0]
        else:
            shape = str(rng.choice(SHAPES))
        if k < len(req["pattern"]):
            pattern: str | None = req["pattern"][k]
        else:
            p_solid = P_SOLID_MAIN if k == 0 else P_SOLID_SECONDARY
            pattern = None if rng.random() < p_solid or radius < 0.13 else str(
                rng.choice(PATTERNS))
        centre = _place(rng, radius * SHAPE_EXTENT[shape], objects, must=is_required or k == 0)
        params = _pattern_params(rng)
        angle = float(rng.uniform(-MAX_ROTATION, MAX_ROTATION))
        if centre is None:
            continue
        objects.append(ObjectSpec(colour=colour, shape=shape, pattern=pattern, cx=centre[0],
                                  cy=centre[1], radius=radius, angle=angle, **params))
    return SceneSpec(background=background, objects=tuple(objects), size=size)


def caption(scene: SceneSpec | Rendered | np.ndarray | Sequence[bool]) -> str:
    """A sentence naming what a scene shows, e.g. ``"a red striped circle and a blue square
    on grass"``.

    Args:
        scene: a :class:`SceneSpec` / :class:`Rendered` (objects described one by one), or a
            multi-hot label vector bool [C] over ``vocab.CONCEPTS`` (attributes listed by
            family, since labels do not bind colours to shapes).

    Returns:
        The caption; :func:`vocab.parse_concepts` reads back exactly the scene's concepts.
    """
    if isinstance(scene, Rendered):
        spec = scene.spec
        objects = [o for o, ok in zip(spec.objects, scene.visible, strict=True) if ok]
        background = spec.background if scene.labels[CONCEPT_INDEX.get(spec.background, 0)] \
            and spec.background != PLAIN else PLAIN
        return _caption_objects(objects, background)
    if isinstance(scene, SceneSpec):
        return _caption_objects(list(scene.objects), scene.background)
    labels = np.asarray(scene, dtype=bool)
    if labels.shape != (len(CONCEPTS),):
        raise ValueError(f"labels must have shape ({len(CONCEPTS)},), got {labels.shape}")
    present = [CONCEPTS[j] for j in np.flatnonzero(labels)]
    colours = [c for c in present if FAMILY_OF[c] == "colour"]
    patterns = [PATTERN_ADJECTIVES[c] for c in present if FAMILY_OF[c] == "pattern"]
    shapes = [c for c in present if FAMILY_OF[c] == "shape"]
    backgrounds = [c for c in present if FAMILY_OF[c] == "background"]
    parts = [" and ".join(colours), " and ".join(patterns), " and ".join(shapes) or "shapes"]
    text = "a scene of " + " ".join(p for p in parts if p)
    return f"{text} {BACKGROUND_PHRASES[backgrounds[0] if backgrounds else PLAIN]}"


def _caption_objects(objects: list[ObjectSpec], background: str) -> str:
    described = [f"a {o.describe()}" for o in objects] or ["nothing"]
    return f"{' and '.join(described)} {BACKGROUND_PHRASES[background]}"
