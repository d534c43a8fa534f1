"""Ranks of a DDP run and the collectives every stage uses to agree: who am I
(:func:`get_rank`), what does rank 0 say (:func:`agreed`, :func:`broadcast_object`), what do
all ranks hold (:func:`gather_objects`). Outside a process group each is the identity."""

from __future__ import annotations

from typing import Any

import torch

# ----------------------------------------------------------------------------- ranks


def is_distributed() -> bool:
    """Is this process one of several in an initialised process group?"""
    return (torch.distributed.is_available() and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1)


def get_rank() -> int:
    """This process's rank in the process group; 0 without one."""
    return torch.distributed.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return torch.distributed.get_world_size() if is_distributed() else 1


def is_rank_zero() -> bool:
    return get_rank() == 0


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (``obj`` itself in a single process)."""
    if not is_distributed():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def agreed(value: Any) -> Any:
    """Rank 0's ``value`` everywhere: decisions that gate a predict loop (is it cached?) must
    be the same on every rank, even when another job writes the cache in between."""
    return broadcast_object(value)


def gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` in one process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if is_distributed():
        torch.distributed.barrier()

