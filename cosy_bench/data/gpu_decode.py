"""JPEG decoding on the model's device: ``dataset.decode=gpu``.

The DataLoader workers only read a JPEG's bytes (:func:`read_jpeg`); the activation pass
decodes a whole batch on the model's device with ``torchvision.io.decode_jpeg(list,
device=...)`` (nvJPEG on a GPU) and resizes, centre-crops and normalises it there with the
model's own transform parameters (:func:`tensor_recipe`, ``torchvision.transforms.v2``
functional ops on uint8 tensors, ``antialias=True``): :class:`DevicePreprocess`. Files that
are not baseline RGB/grey JPEGs (PNG, CMYK, ...) take the CPU path per image
(:func:`cosy_bench.data.datasets.load_image` and the model's transform in the worker), and
so does a JPEG the device decoder rejects. Without CUDA the same tensor path runs on the CPU
(logged): on CPU-decoded JPEGs the model input equals the PIL path to one 0-255 level
(``bench activations --decode gpu`` prints the measured difference).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

log = logging.getLogger(__name__)

#: steps of a transform that leave an RGB PIL image's pixels as they are (the tensor path
#: converts to float and normalises itself)
_NO_OPS = ("ToTensor", "PILToTensor", "ConvertImageDtype", "ToImage", "ToDtype",
           "_convert_to_rgb", "convert_to_rgb")


@dataclass(frozen=True)
class TensorRecipe:
    """What a model's transform does, as tensor operations: resize (the short side ``[s]``
    or ``[h, w]``), centre crop ``[h, w]`` (or None), then ``(x / 255 - mean) / std``."""

    resize: tuple[int, ...] | None
    interpolation: object  # torchvision InterpolationMode
    crop: tuple[int, ...] | None
    mean: tuple[float, ...]
    std: tuple[float, ...]


def _size(value) -> tuple[int, ...] | None:
    if value is None:
        return None
    size = (value,) if isinstance(value, int) else tuple(int(v) for v in value)
    return size if len(size) in (1, 2) else None


def tensor_recipe(transform) -> TensorRecipe | None:
    """The :class:`TensorRecipe` of ``transform``, or None where it does something else.

    Understands torchvision's weights transforms (``ImageClassification``) and a ``Compose``
    of ``Resize``, ``CenterCrop``, ``ToTensor``/``PILToTensor`` and ``Normalize`` (this
    suite's ``preprocess.standard``, open_clip's preprocess). The output must have one size
    (a crop, or a resize to ``[h, w]``) so that a batch stacks.
    """
    from torchvision.transforms import InterpolationMode

    if type(transform).__name__ == "ImageClassification":
        return TensorRecipe(_size(transform.resize_size), transform.interpolation,
                            _size(transform.crop_size), tuple(transform.mean),
                            tuple(transform.std))
    resize = crop = mean = std = None
    interpolation = InterpolationMode.BILINEAR
    for step in getattr(transform, "transforms", None) or ():
        name = getattr(step, "__name__", type(step).__name__)
        if name == "Resize" and resize is None and crop is None and mean is None:
            if getattr(step, "max_size", None) is not None:
                return None
            resize, interpolation = _size(step.size), step.interpolation
            if resize is None:
                return None
        elif name == "CenterCrop" and crop is None and mean is None:
            crop = _size(step.size)
            crop = crop * 2 if crop is not None and len(crop) == 1 else crop
        elif name == "Normalize" and mean is None:
            mean, std = tuple(step.mean), tuple(step.std)
        elif name not in _NO_OPS:
            return None  # a step the tensor path does not do
    if mean is None or (crop is None and (resize is None or len(resize) != 2)):
        return None
    return TensorRecipe(resize, interpolation, crop, mean, std)


class EncodedJpeg:
    """The bytes of a JPEG file, left for the device to decode: ``data`` uint8 [n_bytes].

    A plain class (not a tensor, tuple or dataclass), so Lightning leaves it on the CPU,
    where ``decode_jpeg`` wants its input whatever the device."""

    __slots__ = ("data",)

    def __init__(self, data: torch.Tensor):
        self.data = data


def read_jpeg(path: str | Path) -> EncodedJpeg | None:
    """The bytes of a baseline RGB or grey JPEG (read without decoding: the header tells),
    or None for any other file (PNG, CMYK or 16-bit images, unreadable files), which the
    CPU path decodes (or skips with a warning)."""
    try:
        with Image.open(path) as im:
            if im.format != "JPEG" or im.mode not in ("RGB", "L"):
                return None
        data = Path(path).read_bytes()
    except Exception:
        return None
    return EncodedJpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8))


class EncodedBatch:
    """A batch in ``decode=gpu`` mode: JPEG bytes still to decode with their dataset indices,
    and the images that took the CPU path, already transformed (``images`` [B', 3, H, W])."""

    __slots__ = ("jpegs", "jpeg_index", "images", "index")

    def __init__(self, jpegs, jpeg_index, images, index):
        self.jpegs, self.jpeg_index, self.images, self.index = jpegs, jpeg_index, images, index


def collate_encoded(items) -> EncodedBatch:
    """Collate ``(EncodedJpeg | Tensor, index)`` items (None for unreadable images) into an
    :class:`EncodedBatch`."""
    items = [it for it in items if it is not None]
    jpegs = [(x.data, i) for x, i in items if isinstance(x, EncodedJpeg)]
    done = [(x, i) for x, i in items if not isinstance(x, EncodedJpeg)]
    return EncodedBatch([x for x, _ in jpegs], torch.tensor([i for _, i in jpegs], dtype=torch.long),
                        torch.stack([x for x, _ in done]) if done else torch.empty(0),
                        torch.tensor([i for _, i in done], dtype=torch.long))


class DevicePreprocess:
    """Decode and preprocess an :class:`EncodedBatch` on a device, as ``transform`` would.

    ``transform``: the model's transform (PIL image -> tensor); its :func:`tensor_recipe` is
    applied on the device, and ``transform`` itself to a JPEG the device cannot decode.
    Raises ValueError naming the fix where the transform is not one the tensor path knows.
    """

    def __init__(self, transform):
        recipe = tensor_recipe(transform)
        if recipe is None:
            raise ValueError(
                f"dataset.decode=gpu needs a model transform of Resize, CenterCrop, ToTensor "
                f"and Normalize (or torchvision weights transforms); got {transform!r}. "
                f"Use dataset.decode=full (or reduced) for this model")
        self.transform, self.recipe = transform, recipe
        self._logged = False

    def decode(self, jpegs: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
        """uint8 [3, H, W] images on ``device``; None for a JPEG no decoder can read."""
        from torchvision.io import ImageReadMode, decode_jpeg

        if not jpegs:
            return []
        try:
            return list(decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=device))
        except Exception:  # one bad file fails the batch: decode each, PIL where needed
            out = []
            for data in jpegs:
                try:
                    out.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
                except Exception:
                    out.append(None)
            return out

    def _pil(self, data: torch.Tensor, device: torch.device) -> torch.Tensor | None:
        from cosy_bench.data.modes import to_rgb

        try:
            with Image.open(io.BytesIO(data.numpy().tobytes())) as im:
                image = to_rgb(im)
        except Exception as err:
            log.warning("skipping unreadable JPEG (%s)", err)
            return None
        return self.transform(image).to(device)

    def apply(self, image: torch.Tensor) -> torch.Tensor:
        """The recipe on one uint8 image [3, H, W]: resized and cropped, still uint8."""
        from torchvision.transforms.v2 import functional as F

        r = self.recipe
        if r.resize is not None:
            image = F.resize(image, list(r.resize), interpolation=r.interpolation,
                             antialias=True)
        if r.crop is not None:
            image = F.center_crop(image, list(r.crop))
        return image

    def __call__(self, batch: EncodedBatch, device: torch.device
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(model input float32 [B, 3, H, W] on ``device``, dataset index [B])."""
        from torchvision.transforms.v2 import functional as F

        if not self._logged:
            self._logged = True
            if device.type == "cpu":
                log.warning("dataset.decode=gpu: no GPU, JPEGs are decoded and preprocessed on "
                            "the CPU (the same tensor path, in the main process)")
            else:
                log.info("dataset.decode=gpu: JPEGs are decoded on %s", device)
        images, index = [], []
        decoded = self.decode(batch.jpegs, device)
        jpeg_index = batch.jpeg_index.tolist()
        ready = [(self.apply(im), i) for im, i in zip(decoded, jpeg_index, strict=True)
                 if im is not None]
        if ready:
            x = F.to_dtype(torch.stack([im for im, _ in ready]), torch.float32, scale=True)
            images.append(F.normalize(x, list(self.recipe.mean), list(self.recipe.std)))
            index += [i for _, i in ready]
        for data, im, i in zip(batch.jpegs, decoded, jpeg_index, strict=True):
            if im is None and (x := self._pil(data, device)) is not None:
                images.append(x[None])
                index.append(i)
        if batch.images.numel():
            images.append(batch.images.to(device, non_blocking=True))
            index += batch.index.tolist()
        if not images:
            return torch.empty(0, device=device), torch.empty(0, dtype=torch.long)
        return torch.cat(images), torch.tensor(index, dtype=torch.long)
