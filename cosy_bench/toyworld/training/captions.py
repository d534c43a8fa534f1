"""Captions of toy-world scenes for training the toy CLIP: several phrasings of a scene
(full descriptions, partial descriptions of the main object, single concepts with synonyms
and templates), each with a code of what it claims, and :func:`truth_matrix`, which decides
exactly from the scene specs whether a caption is true of a scene."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cosy_bench.toyworld.scenes import PLAIN, Rendered
from cosy_bench.toyworld.vocab import (
    BACKGROUNDS,
    COLOURS,
    CONCEPT_INDEX,
    CONCEPTS,
    FAMILIES,
    FAMILY_OF,
    PATTERNS,
    SHAPES,
    SYNONYMS,
)

TEMPLATES: list[str] = ["{}", "{}", "{}", "a photo of {}", "a picture of {}", "an image of {}",
                        "a drawing of {}", "a close up of {}"]
SINGLE_TEMPLATES: dict[str, list[str]] = {
    "colour": ["something {}", "the colour {}", "a photo of {}"],
    "shape": ["a {}", "a photo of a {}", "an image of a {}"],
    "pattern": ["{} pattern", "a photo of {}", "an image of {}"],
    "background": ["a photo of {}", "{} background", "an image of {}"],
}
PATTERN_ADJECTIVES: dict[str, list[str]] = {
    "stripes": ["striped", "striped", "stripy"],
    "dots": ["dotted", "dotted", "polka dot", "spotted"],
    "checkerboard": ["checkerboard", "checkered"],
    "zigzag": ["zigzag", "zigzag", "zig zag"],
}
PATTERN_NOUNS: dict[str, list[str]] = {
    "stripes": ["stripes"],
    "dots": ["dots", "polka dots"],
    "checkerboard": ["a checkerboard pattern", "checks"],
    "zigzag": ["zigzags", "a zigzag pattern"],
}
BACKGROUND_PHRASES: dict[str, list[str]] = {
    "grass": ["on grass", "on the grass", "on a grass background"],
    "sky": ["in the sky", "against the sky", "on a sky background"],
    "sand": ["on sand", "on the sand", "on a sand background"],
    "water": ["on water", "on the water", "on a water background"],
    "brick": ["in front of a brick wall", "on brick", "on a brick background"],
    "night": ["at night", "in the night", "on a night background"],
    "snow": ["in the snow", "on snow", "on a snow background"],
    PLAIN: ["on a plain background", "on a grey background", ""],
}
OBJECT_NOUNS: list[str] = ["shape", "object", "thing"]
EXTRA_WORDS: list[str] = ["and"]

_CODES = {**{c: i for i, c in enumerate(COLOURS)}, **{s: i for i, s in enumerate(SHAPES)},
          **{p: i for i, p in enumerate(PATTERNS)}}
_BG_CODES = {**{b: i for i, b in enumerate(BACKGROUNDS)}, PLAIN: len(BACKGROUNDS)}
_ANY = -1
_SOLID = -2
_ABSENT = -9
MAX_OBJECTS = 3


@dataclass
class Caption:
    """A caption and the claims that decide which scenes it is true of.

    Attributes:
        text: the caption.
        objects: per described object ``(colour, shape, pattern)`` codes, ``-1`` where the
            caption does not say (a pattern is only claimed when named).
        background: background code (``BACKGROUNDS`` index, ``len(BACKGROUNDS)`` for plain) or
            ``-1`` when the caption does not name one.
    """

    text: str
    objects: list[tuple[int, int, int]] = field(default_factory=list)
    background: int = _ANY


# ----------------------------------------------------------------------------- captions


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _describe(obj, rng: np.random.Generator, parts: Sequence[str]) -> tuple[str, tuple]:
    """Noun phrase naming the attributes ``parts`` of ``obj``, and its claim."""
    colour = obj.colour if "colour" in parts else None
    shape = obj.shape if "shape" in parts else None
    pattern = obj.pattern if "pattern" in parts and obj.pattern else None
    noun = shape or str(rng.choice(OBJECT_NOUNS))
    words = [colour] if colour else []
    if pattern and rng.random() < 0.7:
        words.append(str(rng.choice(PATTERN_ADJECTIVES[pattern])))
        phrase = _article(" ".join([*words, noun]))
    elif pattern:
        phrase = _article(" ".join([*words, noun])) + " with " + str(
            rng.choice(PATTERN_NOUNS[pattern]))
    else:
        phrase = _article(" ".join([*words, noun]))
    claim = (_CODES[colour] if colour else _ANY, _CODES[shape] if shape else _ANY,
             _CODES[pattern] if pattern else _ANY)
    return phrase, claim


def _with_background(text: str, background: str, rng: np.random.Generator) -> tuple[str, int]:
    """``text`` followed by a phrase naming ``background``, and the background claim."""
    phrase = str(rng.choice(BACKGROUND_PHRASES[background]))
    if not phrase:
        return text, _ANY
    return f"{text} {phrase}", _BG_CODES[background]


def _full_caption(objects: list, background: str, rng: np.random.Generator) -> Caption:
    """All visible objects fully described (sometimes shuffled), usually with the background."""
    order = list(rng.permutation(len(objects))) if rng.random() < 0.3 else range(len(objects))
    described = [_describe(objects[k], rng, ("colour", "shape", "pattern")) for k in order]
    text = " and ".join(d[0] for d in described)
    bg_code = _ANY
    if rng.random() < 0.8:
        text, bg_code = _with_background(text, background, rng)
    text = str(rng.choice(TEMPLATES)).format(text)
    return Caption(text, [d[1] for d in described], bg_code)


def make_caption(scene: Rendered, rng: np.random.Generator, name_shape: bool = False,
                 ) -> Caption:
    """One random caption that is true of ``scene`` (see the module docstring).

    With ``name_shape`` the caption always names the main object's shape (a full or partial
    description, or the bare shape word): used for the two scenes of a shape pair.
    """
    objects = [o for o, ok in zip(scene.spec.objects, scene.visible, strict=True) if ok]
    background = scene.spec.background
    if background != PLAIN and not scene.labels[CONCEPT_INDEX[background]]:
        background = PLAIN  # fully covered: the background is not visible
    if name_shape and objects and objects[0] is scene.spec.main:
        u = rng.random()
        if u < 0.35:
            return _full_caption(objects, background, rng)
        if u < 0.7:
            parts = ["shape"] + [f for f in ("colour", "pattern") if rng.random() < 0.5]
            text, claim = _describe(objects[0], rng, parts)
            return Caption(text, [claim])
        return Caption(objects[0].shape, [(_ANY, _CODES[objects[0].shape], _ANY)])
    u = rng.random()
    if u < 0.3 and objects:  # full description
        return _full_caption(objects, background, rng)
    if u < 0.55 and objects:  # partial description of the main object
        families = ["colour", "shape"] + (["pattern"] if objects[0].pattern else [])
        size = int(rng.integers(1, len(families) + 1))
        parts = [families[k] for k in rng.choice(len(families), size=size, replace=False)]
        text, claim = _describe(objects[0], rng, parts)
        bg_code = _ANY
        if rng.random() < 0.3:
            text, bg_code = _with_background(text, background, rng)
        return Caption(text, [claim], bg_code)
    # a single concept, chosen family first so that rarer families are not drowned out
    present = [CONCEPTS[j] for j in np.flatnonzero(scene.labels)]
    families = sorted({FAMILY_OF[c] for c in present}, key=list(FAMILIES).index)
    if not families:
        text, bg_code = _with_background("nothing", background, rng)
        return Caption(text, [], bg_code)
    family = families[int(rng.integers(len(families)))]
    concept = str(rng.choice([c for c in present if FAMILY_OF[c] == family]))
    v = rng.random()
    if v < 0.75:
        text = concept
    elif v < 0.87 and SYNONYMS.get(concept):
        text = str(rng.choice(SYNONYMS[concept]))
    else:
        text = str(rng.choice(SINGLE_TEMPLATES[family])).format(concept)
    if family == "background":
        return Caption(text, [], _BG_CODES[concept])
    claim = [_ANY, _ANY, _ANY]
    claim[["colour", "shape", "pattern"].index(family)] = _CODES[concept]
    return Caption(text, [tuple(claim)], _ANY)


def caption_vocabulary() -> list[str]:
    """Every word or phrase :func:`make_caption` can emit (their tokens get trained rows)."""
    words: list[str] = [*TEMPLATES, *OBJECT_NOUNS, *EXTRA_WORDS, "nothing",
                        "a", "an", "with", *CONCEPTS]
    for table in (SINGLE_TEMPLATES, PATTERN_ADJECTIVES, PATTERN_NOUNS, BACKGROUND_PHRASES,
                  SYNONYMS):
        for values in table.values():
            words.extend(values)
    return [w.replace("{}", " ").strip() for w in words if w.replace("{}", " ").strip()]


def truth_matrix(scenes: Sequence[Rendered], captions: Sequence[Caption]) -> np.ndarray:
    """bool ``[n_scenes, n_captions]``: whether each caption is true of each scene.

    An object claim holds if some visible object of the scene has every attribute the claim
    names; a background claim if the scene's visible background is the one named.
    """
    n, m = len(scenes), len(captions)
    objs = np.full((n, MAX_OBJECTS, 3), _ABSENT, dtype=np.int64)
    bgs = np.empty(n, dtype=np.int64)
    for i, s in enumerate(scenes):
        visible = [o for o, ok in zip(s.spec.objects, s.visible, strict=True) if ok]
        for k, o in enumerate(visible[:MAX_OBJECTS]):
            objs[i, k] = (_CODES[o.colour], _CODES[o.shape],
                          _CODES[o.pattern] if o.pattern else _SOLID)
        b = s.spec.background
        bgs[i] = _BG_CODES[b if b == PLAIN or s.labels[CONCEPT_INDEX[b]] else PLAIN]
    n_claims = max([len(c.objects) for c in captions] + [1])
    claims = np.full((m, n_claims, 3), _ANY, dtype=np.int64)
    claim_used = np.zeros((m, n_claims), dtype=bool)
    cap_bg = np.array([c.background for c in captions], dtype=np.int64)
    for j, c in enumerate(captions):
        for k, claim in enumerate(c.objects):
            claims[j, k], claim_used[j, k] = claim, True
    # [n, m, claims, objects, attrs]
    attr_ok = (claims[None, :, :, None, :] == _ANY) | (
        claims[None, :, :, None, :] == objs[:, None, None, :, :])
    obj_present = (objs[:, :, 0] != _ABSENT)[:, None, None, :]
    claim_ok = (attr_ok.all(axis=-1) & obj_present).any(axis=-1)
    objects_ok = (claim_ok | ~claim_used[None]).all(axis=-1)
    background_ok = (cap_bg[None, :] == _ANY) | (cap_bg[None, :] == bgs[:, None])
    return objects_ok & background_ok
