"""The five CoSy prompt templates (in the order of the authors' code), and the text of an
explanation inside a prompt."""

import re

TEMPLATES: dict[str, str] = {
    "p1": "a",
    "p2": "a painting of",
    "p3": "photo of",
    "p4": "realistic photo of",
    "p5": "realistic photo of a close up of",
}

# Broden's label names mark scenes and colours with a category suffix ("kitchen-s",
# "red-c") and join words with "_" ("sea_lion"): the names NetDissect and CompExp give
_BRODEN_SUFFIX = re.compile(r"(?<=\w)-[sc](?=$|[\s),])")


def prompt_words(explanation: str) -> str:
    """An explanation as words for the text-to-image model: Broden's category suffixes
    dropped and ``_`` read as a space (``"kitchen-s"`` -> ``"kitchen"``, ``"sea_lion"`` ->
    ``"sea lion"``, ``"grass AND NOT red-c"`` -> ``"grass AND NOT red"``); other text as
    written. The explanation itself (results, label similarity) keeps its spelling."""
    return _BRODEN_SUFFIX.sub("", explanation).replace("_", " ")


def make_prompt(template: str, explanation: str) -> str:
    """``"{template} {explanation}"`` as in CoSy, the explanation read by
    :func:`prompt_words`; ``template`` is a key of TEMPLATES or raw text."""
    text = TEMPLATES.get(template, template)
    return f"{text} {prompt_words(explanation)}".strip()
