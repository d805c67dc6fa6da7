"""Validation during training: held-out videos through the inference session, scored with J and F."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from vidseg.evaluation import evaluate_sequence_arrays, global_metrics
from vidseg.inference.session import InferenceSession, Propagator
from vidseg.training.data import ValSequence


def validate(
    propagator: Propagator,
    sequences: Sequence[ValSequence],
    protocol: str = "semi-supervised",
    max_frames: int = 0,
) -> dict[str, float]:
    """J / F / J&F means (over objects) of a method on ``sequences``.

    Each video runs through an :class:`InferenceSession`: with the masks of frame 0 (``semi-supervised``)
    or with none, scored with the DAVIS unsupervised protocol (``unsupervised``). ``max_frames`` > 0
    truncates the videos.
    """
    objects = []
    for seq in sequences:
        count = len(seq.frames) if not max_frames else min(len(seq.frames), max_frames)
        session = InferenceSession(propagator)
        given = seq.masks[0] if protocol == "semi-supervised" else None
        predictions = [session.step(seq.frames[t], given if t == 0 else None) for t in range(count)]
        result = evaluate_sequence_arrays(seq.masks[:count], np.stack(predictions), protocol, name=seq.name)
        objects.extend(result.objects)
    if not objects:
        return {"J": math.nan, "F": math.nan, "J&F": math.nan}
    metrics = global_metrics(objects)
    return {"J": metrics["J-Mean"], "F": metrics["F-Mean"], "J&F": metrics["J&F-Mean"]}


__all__ = ["validate"]
