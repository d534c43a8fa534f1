"""A picture of what the toy-world generator makes of a few prompts.

    python -m cosy_bench.toyworld.gallery --out docs/toyworld.png

One row per prompt (its text as the row title), ``--per-prompt`` images per row, rendered
with the same seeds CoSy uses (:func:`generators.base.image_seed`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from cosy_bench.generators.base import image_seed
from cosy_bench.toyworld.generator import ToyWorldGenerator

DEFAULT_PROMPTS: list[str] = [
    "realistic photo of a close up of red circle",
    "realistic photo of a close up of stripes",
    "photo of blue star on grass",
    "a painting of dots",
    "a yellow checkerboard heart at night",
    "red and white squares in the snow",
    "realistic photo of a close up of pomegranate",
]


def gallery(prompts: Sequence[str] = DEFAULT_PROMPTS, per_prompt: int = 8, scale: int = 2,
            size: int = 64) -> Image.Image:
    """Grid image: a title line and ``per_prompt`` generated scenes per prompt.

    Returns:
        RGB image of width ``per_prompt * (size * scale + 4) + 4``.
    """
    generator = ToyWorldGenerator(size=size)
    tile, pad, title_h = size * scale, 4, 16
    width = per_prompt * (tile + pad) + pad
    height = len(prompts) * (title_h + tile + pad) + pad
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    y = pad
    for prompt in prompts:
        concepts = generator.concepts_of(prompt)
        note = f"  -> {', '.join(concepts)}" if concepts else "  -> (not understood: random)"
        draw.text((pad, y + 2), f'"{prompt}"{note}', fill=(0, 0, 0), font=font)
        y += title_h
        seeds = [image_seed(prompt, prompt, i) for i in range(per_prompt)]
        for i, image in enumerate(generator.generate([prompt] * per_prompt, seeds)):
            big = image.resize((tile, tile), Image.NEAREST)
            sheet.paste(big, (pad + i * (tile + pad), y))
        y += tile + pad
    return sheet


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description="Render a gallery of toy-world prompts.")
    parser.add_argument("--out", type=Path, default=Path("docs/toyworld.png"))
    parser.add_argument("--per-prompt", type=int, default=8)
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--prompt", action="append", dest="prompts",
                        help="a prompt (repeatable); default: a built-in list")
    args = parser.parse_args(argv)
    sheet = gallery(args.prompts or DEFAULT_PROMPTS, per_prompt=args.per_prompt,
                    scale=args.scale)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"saved {args.out} ({sheet.width}x{sheet.height})")
    return args.out


if __name__ == "__main__":
    main()
