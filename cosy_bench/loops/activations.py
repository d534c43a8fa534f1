"""The activation pass: a LightningModule predict loop over a dataset of PIL images.

Under DDP (see :mod:`cosy_bench.distributed`) each rank takes its shard of the dataset
(:class:`~cosy_bench.distributed.shards.ShardSampler`: every image once, no padding copies), the
shards' outputs are gathered on every rank and put back in dataset order by their index, so
the result is the single-process result whatever the number of ranks or the batch size.

Speed (``python -m cosy_bench.bench activations``): DataLoader workers chosen from the cores
(``num_workers="auto"``, :func:`resolve_num_workers`), JPEGs decoded at the size the
transform needs (:meth:`cosy_bench.data.ImageFolder.with_decode_size`) or on the model's
device (``dataset.decode=gpu``: :class:`cosy_bench.data.gpu_decode.DevicePreprocess`), pinned
memory on a GPU, the forward pass stopped at the layer (:class:`LayerExtractor`), ``channels_last``
convolutions, and on a GPU an optional bf16/fp16 autocast (``precision``).
"""

from __future__ import annotations

import logging
import os

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from cosy_bench.data.decode import resize_short_side
from cosy_bench.data.gpu_decode import DevicePreprocess, EncodedJpeg, collate_encoded
from cosy_bench.distributed.ranks import gather_objects
from cosy_bench.distributed.session import require_session
from cosy_bench.distributed.shards import ShardSampler, merge_by_index
from cosy_bench.models.layers import LayerExtractor

log = logging.getLogger(__name__)

_AUTOCAST = {"bfloat16": torch.bfloat16, "float16": torch.float16}
#: below this many images, ``num_workers="auto"`` loads in the main process (no start-up)
AUTO_WORKERS_MIN_IMAGES = 256


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_num_workers(num_workers: int | str | None, n_images: int | None = None) -> int:
    """DataLoader workers: an int as is; ``"auto"``: the cores of this process's share
    (cores / local DDP ranks) less one for the forward pass, at least 1 and at most 8, and 0
    (no worker start-up) for fewer than :data:`AUTO_WORKERS_MIN_IMAGES` images."""
    if num_workers is None:
        return 0
    if isinstance(num_workers, str) and num_workers.strip().lower() == "auto":
        if n_images is not None and n_images < AUTO_WORKERS_MIN_IMAGES:
            return 0
        ranks = int(os.environ.get("LOCAL_WORLD_SIZE", 1) or 1)
        return max(1, min(8, available_cores() // max(ranks, 1) - 1))
    try:
        workers = int(num_workers)
    except (TypeError, ValueError):
        workers = -1
    if workers < 0:
        raise ValueError(f"num_workers must be a non-negative integer or 'auto', got "
                         f"{num_workers!r}")
    return workers


class _Transformed(Dataset):
    def __init__(self, dataset: Dataset, transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        image = self.dataset[i]
        if image is None:
            return None
        return (image if isinstance(image, EncodedJpeg) else self.transform(image)), i


def _collate(items):
    items = [it for it in items if it is not None]
    if not items:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return torch.stack([x for x, _ in items]), torch.tensor([i for _, i in items])


class ActivationModule(L.LightningModule):
    """Wraps a :class:`LayerExtractor`; ``predict_step`` returns (activations [B, K], index [B]).

    ``channels_last``: convolutions read NHWC (faster on CPUs and tensor cores; the values
    differ from NCHW by float rounding only). ``precision``: ``"bfloat16"``/``"float16"``
    runs the forward pass under autocast: on a GPU either, on a CPU ``bfloat16`` (fast on
    CPUs with AVX512-BF16 or AMX; ``float16`` on a CPU is refused); activations are
    returned as float32. ``preprocess``: turns a batch into (images, index) on the module's
    device (:class:`~cosy_bench.data.gpu_decode.DevicePreprocess`), or None.
    """

    def __init__(self, extractor: LayerExtractor, channels_last: bool = True,
                 precision: str | None = None, preprocess=None):
        super().__init__()
        if precision not in (None, "float32", *_AUTOCAST):
            raise ValueError(f"precision must be float32, bfloat16 or float16, got {precision!r}")
        self.extractor = extractor
        self.channels_last = channels_last
        self.precision = precision
        self.preprocess = preprocess

    def on_predict_start(self) -> None:
        # only a model with 4-D (convolution) weights gains; lazy modules cannot be converted
        params = list(self.extractor.parameters())
        self.channels_last = self.channels_last and any(p.ndim == 4 for p in params) and \
            not any(isinstance(p, torch.nn.parameter.UninitializedParameter) for p in params)
        if self.channels_last:
            self.extractor.to(memory_format=torch.channels_last)

    def predict_step(self, batch, batch_idx):
        images, index = batch if self.preprocess is None else self.preprocess(batch, self.device)
        if images.numel() == 0:
            return None
        if self.channels_last and images.ndim == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        dtype = _AUTOCAST.get(self.precision or "")
        if dtype is torch.float16 and self.device.type == "cpu":
            raise ValueError("precision=float16 needs a GPU; on a CPU use precision=bfloat16 "
                             "(fast on CPUs with AVX512-BF16 or AMX) or precision=null")
        with torch.autocast(self.device.type, dtype=dtype,
                            enabled=dtype is not None and self.device.type in ("cuda", "cpu")):
            acts = self.extractor(images)
        return acts.float().cpu(), index.cpu()


def collect_activations(extractor: LayerExtractor, dataset: Dataset, transform, trainer,
                        batch_size: int = 64, num_workers: int | str = 0,
                        channels_last: bool = True, precision: str | None = None,
                        pin_memory: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations of ``extractor`` on every readable image of ``dataset``.

    Returns (activations float32 [N', K], index long [N']) in dataset order, where N' counts
    the readable images (unreadable ones are skipped with a warning). Under DDP every rank
    computes its shard and returns the whole result. ``num_workers``: an int or ``"auto"``
    (:func:`resolve_num_workers`); ``pin_memory``: None pins when CUDA is available. A
    dataset with ``with_decode_size`` (image folders) decodes JPEGs at the short side the
    transform resizes to; one with ``decode == "gpu"`` decodes and preprocesses its JPEGs
    on the model's device (on the CPU where there is no GPU).
    """
    if len(dataset) == 0:
        raise ValueError("the dataset is empty: nothing to collect activations on")
    require_session(trainer)
    preprocess = None
    if getattr(dataset, "decode", None) == "gpu":
        preprocess = DevicePreprocess(transform)
        dataset = dataset.with_encoded_jpegs()
    elif hasattr(dataset, "with_decode_size"):
        dataset = dataset.with_decode_size(resize_short_side(transform))
    data = _Transformed(dataset, transform)
    workers = resolve_num_workers(num_workers, len(data))
    pin = torch.cuda.is_available() if pin_memory is None else pin_memory
    loader = DataLoader(data, batch_size=batch_size, sampler=ShardSampler(data),
                        num_workers=workers, pin_memory=pin,
                        collate_fn=_collate if preprocess is None else collate_encoded,
                        persistent_workers=False, prefetch_factor=4 if workers else None)
    module = ActivationModule(extractor, channels_last=channels_last, precision=precision,
                              preprocess=preprocess)
    outputs = [o for o in (trainer.predict(module, dataloaders=loader) or []) if o is not None]
    local = merge_by_index(outputs)
    merged = merge_by_index(gather_objects(local))
    if merged is None:
        raise ValueError(unreadable_message(dataset))
    return merged


def unreadable_message(dataset) -> str:
    """Why a dataset of which no image could be read fails: its folder and the fix."""
    root = getattr(dataset, "root", None)
    files = getattr(dataset, "files", None)
    name = getattr(dataset, "name", type(dataset).__name__)
    where = f"the folder {root}" if root is not None else f"dataset {name!r}"
    if files:
        where += f" ({len(files)} files, e.g. {files[0]})"
    return (f"no image of {where} could be read: it must hold images Pillow can open (PNG, "
            "JPEG, ...) that this user may read; convert or replace the files, or set "
            "dataset.root (probe.root for a probe set) to a folder of readable images")
