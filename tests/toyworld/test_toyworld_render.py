"""Tests of the toy world's vocabulary, renderer, generator and datasets."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from cosy_bench.generators.base import Generator
from cosy_bench.toyworld.data import ToyControlSet, ToyProbeSet
from cosy_bench.toyworld.generator import ToyWorldGenerator
from cosy_bench.toyworld.render import render, render_batch, render_scene
from cosy_bench.toyworld.scenes import PLAIN, RENDERER_VERSION, caption, sample_scene, scene_rng
from cosy_bench.toyworld.vocab import (
    BACKGROUNDS,
    CLASS_NAMES,
    COLOURS,
    CONCEPT_INDEX,
    CONCEPTS,
    FAMILIES,
    PATTERNS,
    SHAPES,
    class_index,
    parse_concepts,
)


def test_vocabulary_sizes_and_order():
    assert len(CONCEPTS) == len(set(CONCEPTS)) == 25
    assert CONCEPTS == COLOURS + SHAPES + PATTERNS + BACKGROUNDS
    assert sum(len(v) for v in FAMILIES.values()) == len(CONCEPTS)
    assert 24 <= len(CLASS_NAMES) <= 60 and len(set(CLASS_NAMES)) == len(CLASS_NAMES)
    assert CLASS_NAMES[class_index("red", "circle")] == "red circle"
    assert CLASS_NAMES[class_index("white", "heart")] == "white heart"


@pytest.mark.parametrize(
    ("text", "concepts", "unknown"),
    [
        ("realistic photo of a close up of red circle", ["red", "circle"], []),
        ("a painting of stripes", ["stripes"], []),
        ("photo of striped squares", ["stripes", "square"], []),
        ("Polka-dotted HEARTS", ["dots", "heart"], []),
        ("a polka dots star on a brick wall", ["dots", "star", "brick"], []),
        ("chequered crosses in the night sky", ["checkerboard", "cross", "night"], []),
        ("zig zag triangles at the beach", ["zigzag", "triangle", "sand"], []),
        ("blue and blue circles", ["blue", "circle"], []),
        ("a pomegranate", [], ["pomegranate"]),
        ("", [], []),
    ],
)
def test_parse_concepts(text, concepts, unknown):
    assert parse_concepts(text) == (concepts, unknown)


def test_parse_dotted_synonyms():
    for word in ["dots", "dotted", "dot", "spotted", "polka dots"]:
        assert parse_concepts(f"a {word} circle")[0] == ["dots", "circle"], word


def test_scene_deterministic_per_seed():
    a = render_scene(3, 17)
    b = render_scene(3, 17)
    c = render_scene(3, 18)
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.masks, b.masks)
    assert not np.array_equal(a.image, c.image)
    assert a.image.shape == (64, 64, 3) and a.image.dtype == np.uint8
    assert a.masks.shape == (len(CONCEPTS), 64, 64) and a.labels.shape == (len(CONCEPTS),)


def test_labels_are_nonempty_masks():
    images, labels, masks = render_batch(40, seed=5)
    assert np.array_equal(labels, masks.any(axis=(2, 3)))
    # Every scene has a main object: exactly one colour and one shape at least.
    assert (labels[:, : len(COLOURS)].sum(1) >= 1).all()
    assert (labels[:, len(COLOURS) : len(COLOURS) + len(SHAPES)].sum(1) >= 1).all()
    # At most one background, whose mask never overlaps an object colour's mask.
    bg = labels[:, -len(BACKGROUNDS):]
    assert (bg.sum(1) <= 1).all() and 0 < bg.sum() < 40
    objects = masks[:, : len(COLOURS)].any(1)
    backgrounds = masks[:, -len(BACKGROUNDS):].any(1)
    assert not (objects & backgrounds).any()


def test_batch_independence():
    one, l1, m1 = render_batch(1, seed=11, start=5)
    eight, l8, m8 = render_batch(8, seed=11)
    assert np.array_equal(one[0], eight[5])
    assert np.array_equal(l1[0], l8[5]) and np.array_equal(m1[0], m8[5])
    required, _, _ = render_batch(3, seed=11, required=["red"])
    assert not np.array_equal(required[0], eight[0])


@pytest.mark.parametrize("seed", range(5))
def test_required_concepts_shown_prominently(seed):
    rng = scene_rng(99, seed)
    spec = sample_scene(rng, ["red", "stripes", "circle", "grass"])
    main = spec.objects[0]
    assert (main.colour, main.shape, main.pattern) == ("red", "circle", "stripes")
    assert spec.background == "grass"
    r = render(spec, rng)
    for concept in ["red", "stripes", "circle", "grass"]:
        assert r.labels[CONCEPT_INDEX[concept]]
        assert r.masks[CONCEPT_INDEX[concept]].sum() >= 200  # of 4096 pixels
    assert CLASS_NAMES[r.class_index] == "red circle"


def test_two_colours_go_to_two_objects():
    spec = sample_scene(scene_rng(1, 2), ["red", "white", "square"])
    assert [(o.colour, o.shape) for o in spec.objects[:2]] == [("red", "square"),
                                                              ("white", "square")]
    with pytest.raises(ValueError, match="pomegranate"):
        sample_scene(scene_rng(1, 2), ["pomegranate"])


def test_required_pixels_match_colour():
    r = render_scene(4, 0, required=["blue"])
    pixels = r.image[r.masks[CONCEPT_INDEX["blue"]]].astype(float)
    # Blue dominates the object (pattern / outline pixels are darker but still blue-ish).
    assert np.median(pixels[:, 2]) > np.median(pixels[:, 0]) + 60


def test_caption_round_trips_through_parser():
    for i in range(30):
        r = render_scene(8, i)
        text = caption(r)
        assert set(parse_concepts(text)[0]) == {CONCEPTS[j] for j in np.flatnonzero(r.labels)}
        label_text = caption(r.labels)
        assert set(parse_concepts(label_text)[0]) == set(parse_concepts(text)[0])
    spec = sample_scene(scene_rng(0, 0), ["red", "stripes", "circle", "grass"])
    assert caption(spec).startswith("a red striped circle")
    assert caption(spec).endswith("on grass")


def test_generator_prompts(caplog):
    gen = ToyWorldGenerator()
    assert isinstance(gen, Generator) and gen.name == f"toyworld-{RENDERER_VERSION}"
    images = gen.generate(["realistic photo of a close up of red circle"] * 2, [1, 2])
    assert [im.size for im in images] == [(64, 64)] * 2 and images[0].mode == "RGB"
    assert not np.array_equal(np.asarray(images[0]), np.asarray(images[1]))
    again = gen.generate(["realistic photo of a close up of red circle"], [1])
    assert np.array_equal(np.asarray(images[0]), np.asarray(again[0]))

    r = gen.render("realistic photo of a close up of red circle", 1)
    assert np.array_equal(r.image, np.asarray(images[0]))
    assert r.masks[CONCEPT_INDEX["red"]].sum() > 0 and r.masks[CONCEPT_INDEX["circle"]].any()
    assert CLASS_NAMES[r.class_index] == "red circle"

    r = gen.render("a painting of stripes", 7)
    assert r.labels[CONCEPT_INDEX["stripes"]] and r.masks[CONCEPT_INDEX["stripes"]].sum() > 100

    with caplog.at_level(logging.WARNING, logger="cosy_bench.toyworld"):
        gen.generate(["pomegranate", "pomegranate", "red circle"], [1, 2, 3])
    warnings = [rec for rec in caplog.records if rec.name == "cosy_bench.toyworld"]
    assert len(warnings) == 1 and "pomegranate" in warnings[0].getMessage()
    random_scene = gen.render("pomegranate", 5)
    assert random_scene.labels.sum() >= 2  # still a full random scene

    assert ToyWorldGenerator(size=32).generate(["stars"], [0])[0].size == (32, 32)
    assert ToyWorldGenerator(size=32).name != gen.name


def test_background_prompt_sets_background():
    gen = ToyWorldGenerator()
    for seed in range(5):
        r = gen.render("photo of snow", seed)
        assert r.spec.background == "snow"
        assert r.masks[CONCEPT_INDEX["snow"]].mean() > 0.5  # small objects, big background
    assert PLAIN not in BACKGROUNDS


def test_datasets():
    control = ToyControlSet(n=30)
    assert control.name == f"toyworld-{RENDERER_VERSION}-control-n30-s12345"
    assert len(control) == 30
    image = control[3]
    assert image.mode == "RGB" and image.size == (64, 64)
    assert np.array_equal(np.asarray(image), render_scene(12345, 3).image)
    probe = ToyProbeSet(n=20, seed=54321)
    assert probe.name == f"toyworld-{RENDERER_VERSION}-probe-n20-s54321"
    assert probe.concepts == CONCEPTS
    assert probe.labels.shape == (20, len(CONCEPTS)) and probe.labels.dtype.is_floating_point \
        is False
    masks = probe.masks(4)
    assert masks.shape == (len(CONCEPTS), 64, 64)
    assert np.array_equal(masks.any(-1).any(-1).numpy(), probe.labels[4].numpy())
    assert not np.array_equal(np.asarray(probe[0]), np.asarray(control[0]))
    assert np.array_equal(ToyControlSet(n=40).images[:30], control.images)
    with pytest.raises(IndexError):
        control[30]
