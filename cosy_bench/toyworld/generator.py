"""The toy world as a text-to-image generator: prompts in, procedurally rendered scenes out."""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image

from cosy_bench.generators.base import Generator
from cosy_bench.toyworld.inputs import refuse_real_inputs
from cosy_bench.toyworld.render import render
from cosy_bench.toyworld.scenes import RENDERER_VERSION, Rendered, sample_scene
from cosy_bench.toyworld.vocab import parse_concepts

logger = logging.getLogger("cosy_bench.toyworld")

__all__ = ["RENDERER_VERSION", "ToyWorldGenerator"]


class ToyWorldGenerator(Generator):
    """Renders, for each prompt, a toy-world scene showing the concepts the prompt names.

    Concept words are read with :func:`vocab.parse_concepts` (template words such as
    "realistic photo of a close up of" are ignored); the named concepts are shown prominently
    and everything else is random. A prompt that names no concept gets a random scene and a
    warning on the ``cosy_bench.toyworld`` logger (once per prompt text per generator).

    Args:
        size: side of the output images in pixels.
        model_id, num_inference_steps, height, width: null (diffusers' keys, see
            :mod:`.inputs`).
    """

    def __init__(self, size: int = 64, model_id: str | None = None,
                 num_inference_steps: int | None = None, height: int | None = None,
                 width: int | None = None):
        refuse_real_inputs("generator=toyworld", **{"generator.model_id": model_id,
                           "generator.num_inference_steps": num_inference_steps,
                           "generator.height": height, "generator.width": width})
        self.size = int(size)
        self.name = f"toyworld-{RENDERER_VERSION}" + ("" if self.size == 64 else f"-{size}px")
        self._warned: set[str] = set()

    def concepts_of(self, prompt: str) -> list[str]:
        """The concepts a prompt names; warns (once per text) when it names none."""
        concepts, unknown = parse_concepts(prompt)
        if not concepts and prompt not in self._warned:
            self._warned.add(prompt)
            logger.warning(
                "toy world did not understand prompt %r (unknown words: %s); "
                "rendering random scenes", prompt, ", ".join(unknown) or "none",
            )
        return concepts

    def render(self, prompt: str, seed: int, with_masks: bool = True) -> Rendered:
        """The scene of one prompt and seed: image uint8 [H, W, 3], labels bool [C] and
        masks bool [C, H, W] (the pixels :meth:`generate` returns for the same pair)."""
        rng = np.random.default_rng(int(seed))
        spec = sample_scene(rng, self.concepts_of(prompt), size=self.size)
        return render(spec, rng, with_masks=with_masks)

    def generate(self, prompts: list[str], seeds: list[int]) -> list[Image.Image]:
        """One RGB ``size x size`` PIL image per (prompt, seed); image i depends only on
        ``prompts[i]`` and ``seeds[i]``."""
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        return [
            Image.fromarray(self.render(prompt, seed, with_masks=False).image, "RGB")
            for prompt, seed in zip(prompts, seeds, strict=True)
        ]
