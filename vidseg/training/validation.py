"""Validation during training: held-out videos through the inference session, scored with J and F."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from vidseg.evaluation.protocols import evaluate_sequence_arrays, global_metrics
from vidseg.inference.recurrent import RecurrentPropagator
from vidseg.inference.session import InferenceSession
from vidseg.training.data import ValSequence


def validate(
    model: nn.Module,
    sequences: Sequence[ValSequence],
    max_side: int,
    device: str | torch.device = "cpu",
    max_frames: int = 0,
) -> dict[str, float]:
    """Semi-supervised J / F / J&F means (over objects) of ``model`` on ``sequences``.

    Each video runs through :class:`InferenceSession` from its first-frame mask (the objects of frame
    0) at working size ``max_side``; ``max_frames`` > 0 truncates the videos. ``model`` is not changed
    (the propagator works on an eval-mode copy).
    """
    propagator = RecurrentPropagator(model, device=device, max_side=max_side, optimize=False)
    objects = []
    for seq in sequences:
        count = len(seq.frames) if not max_frames else min(len(seq.frames), max_frames)
        session = InferenceSession(propagator)
        predictions = [session.step(seq.frames[t], seq.masks[0] if t == 0 else None) for t in range(count)]
        result = evaluate_sequence_arrays(seq.masks[:count], np.stack(predictions), name=seq.name)
        objects.extend(result.objects)
    if not objects:
        return {"J": math.nan, "F": math.nan, "J&F": math.nan}
    metrics = global_metrics(objects)
    return {"J": metrics["J-Mean"], "F": metrics["F-Mean"], "J&F": metrics["J&F-Mean"]}


__all__ = ["validate"]
