"""Collective helpers that are no-ops outside a process group."""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Average ``tensor`` over all workers in place (identity on one worker)."""
    n = world_size()
    if n > 1:
        dist.all_reduce(tensor)
        tensor /= n
    return tensor
