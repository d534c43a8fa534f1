"""The toy world's vocabulary: atomic concepts, their families, synonyms and prompt parsing.

The order of :data:`CONCEPTS` is the unit order of the toy CNN's ``concepts`` layer and of
every label matrix the toy world produces (``labels[:, j]`` is concept ``CONCEPTS[j]``).
:data:`CLASS_NAMES` is the toy CNN's classification task: the colour and shape of the main
(largest, front-most) object of a scene, e.g. ``"red circle"``.
"""

from __future__ import annotations

import re

COLOURS: list[str] = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "white"]
SHAPES: list[str] = ["circle", "square", "triangle", "star", "cross", "heart"]
PATTERNS: list[str] = ["stripes", "dots", "checkerboard", "zigzag"]
BACKGROUNDS: list[str] = ["grass", "sky", "sand", "water", "brick", "night", "snow"]

FAMILIES: dict[str, list[str]] = {
    "colour": COLOURS,
    "shape": SHAPES,
    "pattern": PATTERNS,
    "background": BACKGROUNDS,
}

#: All atomic concepts, in the fixed unit order of the ``concepts`` layer (25 concepts).
CONCEPTS: list[str] = [c for members in FAMILIES.values() for c in members]
CONCEPT_INDEX: dict[str, int] = {c: i for i, c in enumerate(CONCEPTS)}
#: Family of every concept, e.g. ``FAMILY_OF["stripes"] == "pattern"``.
FAMILY_OF: dict[str, str] = {c: fam for fam, members in FAMILIES.items() for c in members}

#: The classifier's classes: ``"{colour} {shape}"`` of the main object (8 x 6 = 48 classes).
CLASS_NAMES: list[str] = [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]
CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASS_NAMES)}


def class_index(colour: str, shape: str) -> int:
    """Index in :data:`CLASS_NAMES` of the class ``"{colour} {shape}"``."""
    return COLOURS.index(colour) * len(SHAPES) + SHAPES.index(shape)


#: Words and phrases (lower case) that name a concept, besides the concept's own name.
#: Regular plurals ("circles", "crosses", "stars") are handled by :func:`parse_concepts`.
SYNONYMS: dict[str, list[str]] = {
    "red": ["reddish", "crimson", "scarlet"],
    "orange": ["orangish", "tangerine"],
    "yellow": ["yellowish", "golden", "gold", "lemon"],
    "green": ["greenish", "lime"],
    "blue": ["bluish", "azure", "cobalt"],
    "purple": ["purplish", "violet", "lilac", "lavender", "magenta"],
    "pink": ["pinkish", "rose"],
    "white": ["whitish", "ivory"],
    "circle": ["circular", "round", "disc", "disk", "ball", "sphere"],
    "square": ["squared", "box", "cube"],
    "triangle": ["triangular"],
    "star": ["pentagram"],
    "cross": ["plus", "plus sign", "x shape"],
    "heart": ["hearts", "heart shaped", "heart shape"],
    "stripes": ["stripe", "striped", "stripy", "stripey", "banded", "pinstripes",
                "lines", "lined"],
    "dots": ["dot", "dotted", "polka dots", "polka dot", "polka", "spots", "spot", "spotted",
             "spotty", "speckled"],
    "checkerboard": ["checkered", "chequered", "checkerboards", "checker", "checkers",
                     "checked", "checks", "chessboard", "chess board", "checker board",
                     "checkered pattern", "gingham", "plaid", "tartan"],
    "zigzag": ["zigzags", "zig zag", "zig zags", "zig-zag", "zigzagged", "chevron",
               "chevrons", "herringbone"],
    "grass": ["grassy", "lawn", "meadow", "field", "turf", "pasture"],
    "sky": ["skies", "clouds", "cloud", "cloudy", "blue sky", "daytime sky"],
    "sand": ["sandy", "beach", "desert", "dune", "dunes"],
    "water": ["sea", "ocean", "lake", "pond", "waves", "underwater", "river"],
    "brick": ["bricks", "brick wall", "brickwork", "masonry", "wall"],
    "night": ["nighttime", "night sky", "starry sky", "starry night", "midnight"],
    "snow": ["snowy", "winter", "snowfield", "snowflakes", "snowfall"],
}

#: Template and filler words that carry no concept and are not reported as unknown.
STOP_WORDS: frozenset[str] = frozenset(
    """
    a an the of on in at to with and or but by for from into onto over under near next
    beside behind between against above below along around inside outside upon off
    this that these those it its is are was were be being been has have having
    realistic realism realistically photo photos photograph photography photographic
    picture pictures image images close closeup up painting paint painted drawing drawn
    sketch illustration render rendering rendered view shot scene scenes detail detailed
    high quality hd 4k 8k photorealistic style art artwork digital macro
    background backdrop foreground front plain solid simple single one two three some many
    several few small large big tiny huge little bright dark light pale deep very
    object objects shape shapes thing things pattern patterns patterned texture textures
    textured surface made shaped sign symbol
    """.split()
)

# Concept phrases are matched before stop words, so "plus sign" names the cross.
_PHRASES: dict[tuple[str, ...], str] = {}
for _concept in CONCEPTS:
    for _text in [_concept, *SYNONYMS.get(_concept, [])]:
        _PHRASES[tuple(re.findall(r"[a-z]+", _text.lower()))] = _concept
_MAX_PHRASE = max(len(p) for p in _PHRASES)


def _singular(word: str) -> str | None:
    """The concept named by a regular plural ("circles", "crosses", "skies"), else None."""
    for suffix, repl in (("ies", "y"), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            stem = word[: -len(suffix)] + repl
            if (stem,) in _PHRASES:
                return _PHRASES[(stem,)]
    return None


def parse_concepts(text: str) -> tuple[list[str], list[str]]:
    """Read the vocabulary concepts named in a prompt.

    Case-insensitive; multi-word synonyms ("polka dots", "brick wall", "night sky") are matched
    before single words, regular plurals map to their singular, template and filler words
    ("realistic photo of a close up of", "a painting of", "and", "on", ...) are skipped.

    Args:
        text: any prompt, e.g. ``"realistic photo of a close up of red striped circles"``.

    Returns:
        ``(concepts, unknown)``: the concepts named (members of :data:`CONCEPTS`, in order of
        first mention, without repeats), and the words that were neither a concept word nor a
        stop word (in order, without repeats).
    """
    words = re.findall(r"[a-z]+", text.lower())
    concepts: list[str] = []
    unknown: list[str] = []
    i = 0
    while i < len(words):
        match: str | None = None
        length = 0
        for n in range(min(_MAX_PHRASE, len(words) - i), 0, -1):
            phrase = tuple(words[i : i + n])
            if phrase in _PHRASES:
                match, length = _PHRASES[phrase], n
                break
        if match is None and words[i] not in STOP_WORDS:
            match = _singular(words[i])
            length = 1
        if match is not None:
            if match not in concepts:
                concepts.append(match)
            i += length
            continue
        if words[i] not in STOP_WORDS and words[i] not in unknown:
            unknown.append(words[i])
        i += 1
    return concepts, unknown
