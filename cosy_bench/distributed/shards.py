"""Splitting work across ranks without duplicates or padding, and putting the pieces back.

:class:`ShardSampler` gives rank ``r`` of ``w`` the items ``r, r + w, ...``: every item exactly
once, no padding copies, for any length (7 items on 2 ranks: 4 + 3). Outputs carry their
dataset index; :func:`merge_by_index` puts the gathered pieces back in input order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import DistributedSampler

from cosy_bench.distributed.ranks import get_rank, get_world_size


def shard(n: int, rank: int, world: int) -> range:
    """Positions of ``n`` items handled by ``rank`` of ``world``: strided, no padding, so the
    shards are disjoint, cover every item and differ in length by at most one."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} of world {world}")
    return range(rank, n, world)


class ShardSampler(DistributedSampler):
    """A :class:`DistributedSampler` that never pads: rank ``r`` of ``w`` gets items
    ``r, r + w, r + 2w, ...`` of the dataset, in order. Lightning leaves a sampler of this type
    in place (it only injects its own into loaders without a distributed sampler)."""

    def __init__(self, dataset, num_replicas: int | None = None, rank: int | None = None):
        num_replicas = get_world_size() if num_replicas is None else num_replicas
        rank = get_rank() if rank is None else rank
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False,
                         drop_last=False)
        self.indices = shard(len(dataset), rank, num_replicas)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def merge_by_index(parts: Sequence[tuple[torch.Tensor, torch.Tensor] | None]
                   ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Concatenate (values [n_i, ...], index [n_i]) pieces and sort them by index; an index
    seen twice (a padded shard) is kept once. ``None`` when every piece is empty."""
    parts = [p for p in parts if p is not None and p[1].numel()]
    if not parts:
        return None
    values = torch.cat([v for v, _ in parts])
    index = torch.cat([i for _, i in parts])
    order = torch.argsort(index, stable=True)
    values, index = values[order], index[order]
    keep = torch.ones_like(index, dtype=torch.bool)
    keep[1:] = index[1:] != index[:-1]
    return values[keep], index[keep]


# ----------------------------------------------------------------------------- sessions
