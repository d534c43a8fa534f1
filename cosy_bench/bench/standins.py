"""Stand-ins, built offline, for the real inputs of the paper's setup, in their real formats
(issue #19): random torchvision weights under their torchvision file names, ImageNet val and
train folder layouts (grey, CMYK, progressive, EXIF-rotated and truncated JPEGs), a tiny
Stable Diffusion XL pipeline saved with ``save_pretrained`` (fp16 variant; CLIP's real BPE
vocabulary in its two tokenizer folders), a random open_clip
ViT-B-16 weights file, a concept list, a Broden folder (``probe=broden``). Scores on them mean nothing; every loader runs.

    python -m cosy_bench.bench.standins OUT [--image-size 64] [--sample-size 32]

prints the overrides of the headline sweep on them (the real-format end-to-end tests and
``launch/gpu_check.sh`` use it).
"""

from __future__ import annotations

import argparse
import hashlib
import shlex
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image

#: ImageNet-1k classes of the stand-in folders (tench, goldfish, Chihuahua)
WNIDS = ("n01440764", "n01443537", "n02085620")
CONCEPTS = ("fish", "dog", "water", "grass", "red", "striped", "wood", "sky")


def _jpegs(folder: Path, n: int, size: int, seed: int) -> None:
    """``n`` JPEGs in the formats ImageNet holds: RGB, grey, CMYK, progressive, EXIF-rotated,
    and one truncated file (read as far as it goes, or skipped)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        pixels = rng.integers(0, 256, (size, size + 8 * (i % 3), 3), dtype=np.uint8)
        image = Image.fromarray(pixels, "RGB")
        path = folder / f"img_{seed}_{i:04d}.JPEG"
        kind = i % 6
        if kind == 1:
            image.convert("L").save(path, quality=90)
        elif kind == 2:
            image.convert("CMYK").save(path, quality=90)
        elif kind == 3:
            image.save(path, quality=90, progressive=True)
        elif kind == 4:
            exif = Image.Exif()
            exif[0x0112] = 6  # rotated 90 degrees
            image.save(path, quality=90, exif=exif)
        else:
            image.save(path, quality=90)
        if kind == 5:
            data = path.read_bytes()
            path.write_bytes(data[: len(data) * 2 // 3])


def imagenet_folders(root: Path, per_class: int = 5, size: int = 64) -> tuple[Path, Path]:
    """``root/val`` (flat, as the val tarball unpacks) and ``root/train/<wnid>/`` (15 probe
    images by default: MILAN keeps 15 exemplars per unit)."""
    _jpegs(root / "val", per_class * len(WNIDS), size, seed=0)
    for k, wnid in enumerate(WNIDS):
        _jpegs(root / "train" / wnid, per_class, size, seed=k + 1)
    return root / "val", root / "train"


def torchvision_weights(torch_home: Path, archs=("resnet18", "vit_b_16"),
                        weights: str = "IMAGENET1K_V1") -> dict[str, Path]:
    """Random weights of ``archs`` saved under torchvision's file names in
    ``TORCH_HOME/hub/checkpoints/`` (where torchvision looks before downloading); weight
    matrices that torchvision initialises to zero (ViT's head) are drawn at random too, so
    that every unit varies across images as trained weights make it."""
    from torchvision.models import get_model, get_model_weights

    out = {}
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    for arch in archs:
        url = get_model_weights(arch)[weights].url
        path = folder / Path(url).name
        if not path.exists():
            torch.manual_seed(0)
            state = get_model(arch, weights=None).state_dict()
            for value in state.values():  # ViT's head starts at zero: every logit constant
                if value.dim() >= 2 and not value.any():
                    value.normal_(0.0, 0.02)
            torch.save(state, path)
        out[arch] = path
    return out


#: SDXL stand-in widths: SDXL-base-1.0's architecture with every width divided by this
SDXL_SCALE = 32


def diffusers_pipeline(folder: Path, sample_size: int = 32) -> Path:
    """A tiny Stable Diffusion XL pipeline (random weights) saved in the hub layout:
    SDXL-base-1.0's architecture (UNet with text-time conditioning, two text encoders and
    tokenizers holding CLIP's real BPE vocabulary, the VAE) with widths divided by
    :data:`SDXL_SCALE`, its UNet's ``sample_size`` set to ``sample_size`` (default images of
    ``8 * sample_size`` px), saved in fp16 as ``*.fp16.safetensors`` files (as
    ``generator=sdxl``'s ``variant: fp16`` loads them). About 17 MB."""
    from cosy_bench.generators.faithful import build_sdxl

    if not (folder / "model_index.json").exists():
        pipe = build_sdxl(scale=SDXL_SCALE, seed=0)
        pipe.unet.register_to_config(sample_size=sample_size)
        for module in (pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
            torch.nn.Module.to(module, dtype=torch.float16)  # the hub's fp16 files
        pipe.save_pretrained(folder, variant="fp16")
    return folder


def open_clip_file(path: Path, model_name: str = "ViT-B-16") -> Path:
    """Random open_clip weights (a state dict, as open_clip's files hold)."""
    import open_clip

    if not path.exists():
        torch.manual_seed(0)
        model = open_clip.create_model(model_name, pretrained=None, force_quick_gelu=True)
        torch.save(model.state_dict(), path)
    return path


#: Broden labels of the stand-in folder: (name, categories with pixel/image counts); the
#: first category listed is the primary one (the largest coverage in ``c_<category>.csv``)
BRODEN_LABELS = (("red-c", "color(40)"), ("blue-c", "color(30)"), ("sky", "object(30)"),
                 ("tree", "object(20);part(2)"), ("grass", "object(25)"), ("wheel", "part(12)"),
                 ("head", "part(10);object(1)"), ("kitchen-s", "scene(3)"),
                 ("street-s", "scene(3)"), ("striped", "texture(3)"), ("dotted", "texture(3)"))


def segmentation_png(path: Path, labels: np.ndarray) -> str:
    """Write a Broden segmentation PNG (label number = R + 256 G) of ``labels [H, W]``;
    returns the file's name, as ``index.csv`` lists it."""
    rgb = np.zeros((*labels.shape, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1] = labels % 256, labels // 256
    Image.fromarray(rgb).save(path)
    return path.name


def write_broden_tables(root: Path, rows: list[dict], labels, frequency: int) -> None:
    """``index.csv`` (one row per image, ``rows``) and ``label.csv`` of ``labels``, a list of
    ``(number, name, category)`` with the published ``category`` spelling
    (``"object(2);part(1)"``)."""
    import csv

    with open(root / "index.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(root / "label.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["number", "name", "category", "frequency", "coverage", "syns"])
        for number, name, category in labels:
            writer.writerow([number, name, category, frequency, 0.1, ""])


def broden_folder(root: Path, n: int = 8, size: int = 64) -> Path:
    """A Broden folder in the published layout (``broden1_224``): ``index.csv``,
    ``label.csv``, ``c_<category>.csv`` and ``images/`` with JPEGs and segmentation PNGs
    (label number = R + 256 G, at half the image size as the published 112 px of 224)."""
    import csv

    if (root / "index.csv").exists():
        return root
    (root / "images").mkdir(parents=True, exist_ok=True)
    number = {name: i + 1 for i, (name, _) in enumerate(BRODEN_LABELS)}
    rng, seg = np.random.default_rng(7), size // 2
    rows = []

    def png(name: str, labels: np.ndarray) -> str:
        return segmentation_png(root / "images" / name, labels)

    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
            root / "images" / f"{i:04d}.jpg", quality=90)
        color = np.where(rng.random((seg, seg)) < 0.5, number["red-c"], number["blue-c"])
        obj = np.zeros((seg, seg), dtype=np.int64)
        obj[: seg // 3] = number["sky"]
        obj[seg // 3: 2 * seg // 3, : seg // 2] = number["tree"]
        obj[2 * seg // 3:] = number["grass"]
        part = np.zeros((seg, seg), dtype=np.int64)
        part[-seg // 4:, : seg // 4] = number["wheel" if i % 2 else "head"]
        rows.append({"image": f"{i:04d}.jpg", "split": "train" if i % 4 else "val",
                     "ih": size, "iw": size, "sh": seg, "sw": seg,
                     "color": png(f"{i:04d}_color.png", color),
                     "object": png(f"{i:04d}_object.png", obj),
                     "part": png(f"{i:04d}_part.png", part) if i % 3 else "", "material": "",
                     "scene": str(number["kitchen-s" if i % 2 else "street-s"]),
                     "texture": f"{number['striped' if i % 2 else 'dotted']};"})
    write_broden_tables(root, rows, [(number[name], name, cats) for name, cats in BRODEN_LABELS],
                        frequency=n)
    for cat in ("object", "part", "scene", "texture", "color", "material"):
        with open(root / f"c_{cat}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["code", "number", "name", "frequency", "coverage"])
            for name, cats in BRODEN_LABELS:
                listed = [c.split("(")[0] for c in cats.split(";")]
                if cat in listed:  # the first category listed covers most
                    writer.writerow([listed.index(cat) + 1, number[name], name, n,
                                     1.0 / (1 + listed.index(cat))])
    return root


def build(out: Path, image_size: int = 64, sample_size: int = 32) -> dict[str, Path]:
    """Every stand-in under ``out``; returns their paths by role."""
    out.mkdir(parents=True, exist_ok=True)
    val, train = imagenet_folders(out / "imagenet", size=image_size)
    weights = torchvision_weights(out / "torch")
    concepts = out / "concepts.txt"
    concepts.write_text("\n".join(CONCEPTS) + "\n")
    return {"val": val, "train": train, "torch_home": out / "torch", **weights,
            "sdxl": diffusers_pipeline(out / "sdxl-tiny", sample_size),
            "clip": open_clip_file(out / "clip-vit-b-16.pt"), "concepts": concepts,
            "broden": broden_folder(out / "broden1_224", size=image_size)}


def overrides(paths: dict[str, Path]) -> list[str]:
    """The documented local-input overrides of the headline sweep on the stand-ins."""
    return [f"generator.model_id={paths['sdxl']}", f"clip.pretrained={paths['clip']}",
            f"concepts.path={paths['concepts']}", f"dataset.root={paths['val']}",
            f"probe.root={paths['train']}"]


#: the hub repositories the default configs load (generator=sdxl; clip=vit_b16_openai
#: through open_clip's pretrained table) and the file open_clip asks the hub for
SDXL_REPO = "stabilityai/stable-diffusion-xl-base-1.0"
OPENAI_CLIP_REPO, OPENAI_CLIP_FILE = "timm/vit_base_patch16_clip_224.openai", \
    "open_clip_pytorch_model.bin"


def hub_cache(paths: dict[str, Path], hf_home: Path) -> Path:
    """The Hugging Face cache of a user who ran once with a network, offline: the stand-in
    pipeline and CLIP file under the default configs' hub ids in ``hf_home/hub``
    (``models--OWNER--NAME/refs/main`` naming a snapshot folder that holds the files), so
    ``HF_HOME=hf_home HF_HUB_OFFLINE=1`` runs ``generator=sdxl`` and ``clip=vit_b16_openai``
    without ``generator.model_id`` or ``clip.pretrained``. Returns ``hf_home``."""
    def snapshot(repo: str) -> Path:  # models--OWNER--NAME/snapshots/COMMIT, named by refs/main
        commit = hashlib.sha1(repo.encode()).hexdigest()  # a stand-in commit id, one per repo
        root = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
        (root / "refs").mkdir(parents=True, exist_ok=True)
        (root / "refs" / "main").write_text(commit)
        return root / "snapshots" / commit

    pipeline = snapshot(SDXL_REPO)
    if not pipeline.exists():
        shutil.copytree(paths["sdxl"], pipeline)
    clip = snapshot(OPENAI_CLIP_REPO)
    clip.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(paths["clip"], clip / OPENAI_CLIP_FILE)
    return hf_home


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--sample-size", type=int, default=32)
    args = parser.parse_args(argv)
    paths = build(args.out, args.image_size, args.sample_size)
    print(f"TORCH_HOME={shlex.quote(str(paths['torch_home']))}")
    print(" ".join(shlex.quote(o) for o in overrides(paths)))


if __name__ == "__main__":
    main()
