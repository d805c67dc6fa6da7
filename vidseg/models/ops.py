"""Small tensor operations the networks and the inference session share."""

from __future__ import annotations

import torch
from torch import Tensor


def first_argmax(maps: Tensor) -> Tensor:
    """``maps.argmax(0)`` (the first channel among equals) of (C, H, W) maps as int64 (H, W), by C - 1 comparisons:
    a reduction over the outer dimension, which torch's argmax runs about 10x slower on the CPU."""
    best, index = maps[0], torch.zeros(maps.shape[1:], dtype=torch.long, device=maps.device)
    for channel in range(1, len(maps)):
        better = maps[channel] > best
        index.masked_fill_(better, channel)
        best = torch.maximum(best, maps[channel])
    return index


__all__ = ["first_argmax"]
