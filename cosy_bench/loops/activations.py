"""The activation pass: a LightningModule predict loop over a dataset of PIL images."""

from __future__ import annotations

import logging

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

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
    the readable images (unreadable ones are skipped with a warning).
    """
    if len(dataset) == 0:
        raise ValueError("the dataset is empty: nothing to collect activations on")
    loader = DataLoader(_Transformed(dataset, transform), batch_size=batch_size,
                        shuffle=False, num_workers=num_workers, collate_fn=_collate)
    outputs = trainer.predict(ActivationModule(extractor), dataloaders=loader)
    outputs = [o for o in outputs if o is not None]
    if not outputs:
        raise ValueError("no image of the dataset could be read")
    acts = torch.cat([a for a, _ in outputs])
    index = torch.cat([i for _, i in outputs])
    order = torch.argsort(index)
    acts, index = acts[order], index[order]
    keep = torch.ones_like(index, dtype=torch.bool)
    keep[1:] = index[1:] != index[:-1]  # distributed samplers may repeat items to pad shards
    return acts[keep], index[keep]
