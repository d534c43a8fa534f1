"""The prompt of an explanation: CoSy's templates, and Broden's label names read as words."""

from __future__ import annotations

import pytest

from cosy_bench.prompts import TEMPLATES, make_prompt, prompt_words


def test_templates_are_the_authors_in_their_order():
    assert list(TEMPLATES) == ["p1", "p2", "p3", "p4", "p5"]
    assert make_prompt("p5", "pomegranate") == "realistic photo of a close up of pomegranate"
    assert make_prompt("a drawing of", "dog") == "a drawing of dog"  # raw text as template


@pytest.mark.parametrize(("explanation", "words"), [
    ("kitchen-s", "kitchen"),                                   # Broden scene
    ("red-c", "red"),                                           # Broden colour
    ("sea_lion", "sea lion"),
    ("(grass AND kitchen-s) AND NOT red-c", "(grass AND kitchen) AND NOT red"),  # CompExp
    ("kitchen-s OR street-s", "kitchen OR street"),
    # other text as written: hyphenated words, MILAN captions, ImageNet names
    ("t-shirt", "t-shirt"), ("x-ray", "x-ray"), ("blue-cheese", "blue-cheese"),
    ("tench, Tinca tinca", "tench, Tinca tinca"), ("red circles", "red circles"),
])
def test_broden_names_become_words_and_other_text_stays(explanation, words):
    assert prompt_words(explanation) == words
    assert make_prompt("p1", explanation) == f"a {words}"
