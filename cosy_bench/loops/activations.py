"""The activation pass: a LightningModule predict loop over a dataset of PIL images.

Under DDP (see :mod:`cosy_bench.distributed`) each rank takes its shard of the dataset
(:class:`~cosy_bench.distributed.shards.ShardSampler`: every image once, no padding copies), the
shards' outputs are gathered on every rank and put back in dataset order by their index, so
the result is the single-process result whatever the number of ranks or the batch size.
"""

from __future__ import annotations

import logging

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from cosy_bench.distributed.ranks import gather_objects
from cosy_bench.distributed.session import require_session
from cosy_bench.distributed.shards import ShardSampler, merge_by_index
from cosy_bench.models.layers import LayerExtractor

log = logging.getLogger(__name__)


class _Transformed(Dataset):
    def __init__(self, dataset: Dataset, transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        image = self.dataset[i]
        return None if image is None else (self.transform(image), i)


def _collate(items):
    items = [it for it in items if it is not None]
    if not items:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return torch.stack([x for x, _ in items]), torch.tensor([i for _, i in items])


class ActivationModule(L.LightningModule):
    """Wraps a :class:`LayerExtractor`; ``predict_step`` returns (activations [B, K], index [B])."""

    def __init__(self, extractor: LayerExtractor):
        super().__init__()
        self.extractor = extractor

    def predict_step(self, batch, batch_idx):
        images, index = batch
        if images.numel() == 0:
            return None
        acts = self.extractor(images).float()
        return acts.cpu(), index.cpu()


def collect_activations(extractor: LayerExtractor, dataset: Dataset, transform, trainer,
                        batch_size: int = 64, num_workers: int = 0
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations of ``extractor`` on every readable image of ``dataset``.

    Returns (activations float32 [N', K], index long [N']) in dataset order, where N' counts
    the readable images (unreadable ones are skipped with a warning). Under DDP every rank
    computes its shard and returns the whole result.
    """
    if len(dataset) == 0:
        raise ValueError("the dataset is empty: nothing to collect activations on")
    require_session(trainer)
    data = _Transformed(dataset, transform)
    loader = DataLoader(data, batch_size=batch_size, sampler=ShardSampler(data),
                        num_workers=num_workers, collate_fn=_collate)
    outputs = [o for o in (trainer.predict(ActivationModule(extractor), dataloaders=loader) or [])
               if o is not None]
    local = merge_by_index(outputs)
    merged = merge_by_index(gather_objects(local))
    if merged is None:
        raise ValueError("no image of the dataset could be read")
    return merged
