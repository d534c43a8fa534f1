"""A generator around any diffusers text-to-image pipeline.

``build`` makes the pipeline (any callable returning one: ``diffusers.AutoPipelineForText2Image
.from_pretrained`` with a model id, or the tiny random pipeline the tests use); each image gets
its own seeded ``torch.Generator``, so image ``i`` depends only on its prompt and seed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image

from cosy_bench.generators.base import Generator


class PipelineGenerator(Generator):
    """``build() -> pipeline``; ``name`` must change whenever the images would (it is part of
    every cache key)."""

    def __init__(self, build: Callable, name: str, num_inference_steps: int = 25,
                 guidance_scale: float = 7.5):
        self.build, self.name = build, name
        self.num_inference_steps, self.guidance_scale = num_inference_steps, guidance_scale
        self.pipe, self.device = None, "cpu"

    @property
    def cache_key(self) -> str:
        return f"{self.name}-steps{self.num_inference_steps}-cfg{self.guidance_scale}"

    def setup(self, device: str = "cpu") -> None:
        if self.pipe is None:
            self.pipe = self.build()
            self.pipe.set_progress_bar_config(disable=True)
        self.device = device
        self.pipe.to(device)

    def generate(self, prompts: list[str], seeds: list[int]) -> list[Image.Image]:
        if self.pipe is None:
            self.setup(self.device)
        images = []
        for prompt, seed in zip(prompts, seeds, strict=True):  # one image per seed
            gen = torch.Generator(device=self.device).manual_seed(int(seed))
            with torch.inference_mode():
                out = self.pipe(prompt=prompt, generator=gen, guidance_scale=self.guidance_scale,
                                num_inference_steps=self.num_inference_steps)
            images.append(out.images[0].convert("RGB"))
        return images
