"""The synthesis pass: a LightningModule predict loop that turns work items into image files.

A work item is (concept, prompt, index, seed, path); its image depends on nothing else, so
the images do not depend on the batch size, the order or the number of processes. Items
whose file already exists are dropped before the loop (a second run generates nothing); under
DDP rank 0 decides which items are missing and every rank takes its shard of that list
(:class:`~cosy_bench.distributed.shards.ShardSampler`), so nothing is generated twice or skipped.
Each image is written atomically (temporary file, then rename) with its checksum
(:mod:`cosy_bench.cache.images`); an image that does not verify counts as missing.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
from torch.utils.data import DataLoader

from cosy_bench.cache.images import check_png, save_png
from cosy_bench.distributed.ranks import agreed, gather_objects, is_rank_zero
from cosy_bench.distributed.session import require_session
from cosy_bench.distributed.shards import ShardSampler
from cosy_bench.generators.base import Generator


@dataclass(frozen=True)
class WorkItem:
    concept: str
    prompt: str
    index: int
    seed: int
    path: str

    @property
    def key(self) -> str:
        """What the image's checksum binds it to: its prompt, index and seed."""
        return f"{self.prompt}\x1f{self.index}\x1f{self.seed}"


class SynthesisModule(L.LightningModule):
    """``predict_step`` generates one batch of work items and writes their PNG files."""

    def __init__(self, generator: Generator):
        super().__init__()
        self.generator = generator

    def on_predict_start(self) -> None:
        self.generator.setup(str(self.device))

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch  # work items are descriptions, not tensors

    def predict_step(self, batch: list[WorkItem], batch_idx: int) -> int:
        images = self.generator.generate([it.prompt for it in batch], [it.seed for it in batch])
        for item, image in zip(batch, images, strict=True):
            save_png(image, item.path, item.key)
        return len(batch)


def pending(items: list[WorkItem], move: bool = True) -> list[WorkItem]:
    """The items whose image is not in the cache yet, or does not verify (moved aside when
    ``move``)."""
    return [it for it in items if not check_png(it.path, it.key, move=move)]


def synthesize(generator: Generator, items: list[WorkItem], trainer, batch_size: int = 8) -> int:
    """Generate the missing images of ``items``; returns how many were generated (by all
    ranks). Under DDP call it on every rank with the same ``items``; it returns once every
    rank's images are on disk."""
    require_session(trainer)
    # rank 0's view of the cache decides, so that all ranks shard the same list
    todo_at = agreed([i for i, it in enumerate(items) if not check_png(it.path, it.key)]
                     if is_rank_zero() else None)
    if not todo_at:
        return 0
    todo = [items[i] for i in todo_at]
    loader = DataLoader(todo, batch_size=batch_size, sampler=ShardSampler(todo), collate_fn=list)
    counts = trainer.predict(SynthesisModule(generator), dataloaders=loader) or []
    return int(sum(gather_objects(int(sum(c for c in counts if c)))))
