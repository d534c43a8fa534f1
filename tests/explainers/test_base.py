"""Explanation tables survive the cache byte for byte (explainers/base.py with the checked
text files of cache/store.py)."""

from __future__ import annotations

import pytest

from cosy_bench.cache.store import Cache, write_text_checked
from cosy_bench.explainers.base import Explanations

TEXTS = {
    0: "red\rcircle",
    1: "red\r\ncircle",
    2: "red\ncircle",
    3: 'a "quoted", comma\tand tab',
    4: "éléphant ☕ 日本の猫 — \u2028 line sep",
    5: " leading and trailing spaces ",
    6: "\r\n\r",
    7: "ends with a quote\"",
}


@pytest.mark.parametrize("neuron", sorted(TEXTS))
def test_each_text_survives_the_cache_round_trip(tmp_path, neuron):
    expl = Explanations({neuron: TEXTS[neuron]}, extra={"metric": {neuron: "0.5"}})
    path = tmp_path / "explanations" / "k.csv"
    write_text_checked(path, expl.to_csv())
    back = Explanations.from_csv(Cache(tmp_path).read_text(path))
    assert back.texts == {neuron: TEXTS[neuron]}
    assert back.texts[neuron].encode() == TEXTS[neuron].encode()
    assert back.extra == {"metric": {neuron: "0.5"}}


def test_all_texts_together(tmp_path):
    path = tmp_path / "k.csv"
    write_text_checked(path, Explanations(TEXTS).to_csv())
    assert Explanations.from_csv(Cache(tmp_path).read_text(path)).texts == TEXTS
