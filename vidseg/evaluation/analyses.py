"""Analyses from the HS2S paper (Azimi et al.), computed from the per-frame scores of an evaluation.

Frame positions ``t`` count annotated frames from the start of the sequence (0 = first annotated
frame; on DAVIS every frame is annotated, on YouTube-VOS every 5th frame is, so ``t`` is in 6 fps
steps as in the paper). Every figure is a mean over objects of a per-object mean over the selected
frames (like the global DAVIS numbers); objects with no selected frame are left out and counted.

* **Sequence length** (:func:`length_analysis`): sequences with more than 20 annotated frames; J and
  F over the early frames ``t < 10`` versus the late frames ``t > 20``.
* **Occlusion** (:func:`occlusion_analysis`): for each object and area threshold (0, 50, 100 px), the
  frames from its first re-appearance on: the object is visible (GT area > threshold), then fully
  gone (area <= threshold) for at least one scored frame, then visible again; the frames from that
  re-appearance to the end are scored with mean ``(J + F) / 2``.
* **Per-frame curves** (:func:`j_curves`, :func:`mean_curve`): J over ``t`` for each object and the
  mean over objects at each ``t``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from vidseg.evaluation.results import ObjectResult, SequenceResult

OCCLUSION_THRESHOLDS = (0, 50, 100)

__all__ = [
    "OCCLUSION_THRESHOLDS",
    "j_curves",
    "length_analysis",
    "mean_curve",
    "occlusion_analysis",
    "reappearance_start",
    "run_analyses",
]


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan


def _clean(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def length_analysis(
    sequences: Sequence[SequenceResult], min_length: int = 20, early: int = 10, late: int = 20
) -> dict:
    """J and F on early (``t < early``) versus late (``t > late``) frames of sequences longer than
    ``min_length`` annotated frames."""
    chosen = [s for s in sequences if s.n_frames > min_length]
    out: dict = {"min_length": min_length, "early_before": early, "late_after": late, "n_sequences": len(chosen)}
    for label, select in (("early", lambda t: t < early), ("late", lambda t: t > late)):
        j_values, f_values = [], []
        for seq in chosen:
            for obj in seq.objects:
                keep = select(obj.t)
                if keep.any():
                    j_values.append(_nanmean(obj.J[keep]))
                    f_values.append(_nanmean(obj.F[keep]))
        jm, fm = _nanmean(np.array(j_values)), _nanmean(np.array(f_values))
        out[f"n_objects-{label}"] = len(j_values)
        out[f"J-{label}"] = _clean(jm)
        out[f"F-{label}"] = _clean(fm)
        out[f"J&F-{label}"] = _clean((jm + fm) / 2)
    return out


def reappearance_start(area: np.ndarray, threshold: float = 0) -> int | None:
    """Index of the first frame where an object is visible again after having been visible and then
    fully gone (visible = ``area > threshold``); ``None`` when that never happens."""
    visible = np.asarray(area) > threshold
    shown = np.flatnonzero(visible)
    if shown.size == 0:
        return None
    hidden = np.flatnonzero(~visible[shown[0] :])
    if hidden.size == 0:
        return None
    gone = shown[0] + hidden[0]
    back = np.flatnonzero(visible[gone:])
    return int(gone + back[0]) if back.size else None


def occlusion_analysis(
    sequences: Sequence[SequenceResult], thresholds: Sequence[float] = OCCLUSION_THRESHOLDS
) -> dict:
    """Mean J, F and J&F over the frames after each object's first full disappearance and re-appearance."""
    out = {}
    for threshold in thresholds:
        j_values, f_values, names = [], [], []
        for seq in sequences:
            for obj in seq.objects:
                start = reappearance_start(obj.gt_area, threshold)
                if start is None:
                    continue
                j_values.append(_nanmean(obj.J[start:]))
                f_values.append(_nanmean(obj.F[start:]))
                names.append(obj.name)
        jm, fm = _nanmean(np.array(j_values)), _nanmean(np.array(f_values))
        out[str(threshold)] = {
            "threshold_px": threshold,
            "n_objects": len(names),
            "objects": names,
            "J&F-Mean": _clean((jm + fm) / 2),
            "J-Mean": _clean(jm),
            "F-Mean": _clean(fm),
        }
    return out


def j_curves(sequences: Sequence[SequenceResult]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-object J over time: ``{object name: (t, J)}``."""
    return {obj.name: (obj.t, obj.J) for seq in sequences for obj in seq.objects}


def mean_curve(objects: Sequence[ObjectResult], measure: str = "J") -> dict:
    """Mean over objects of ``measure`` (``"J"`` or ``"F"``) at each frame position ``t``."""
    if not objects:
        return {"t": [], measure: [], "n": []}
    length = max((int(o.t.max()) + 1 for o in objects if o.t.size), default=0)
    sums = np.zeros(length)
    counts = np.zeros(length, dtype=np.int64)
    for obj in objects:
        values = getattr(obj, measure)
        keep = ~np.isnan(values)
        np.add.at(sums, obj.t[keep], values[keep])
        np.add.at(counts, obj.t[keep], 1)
    present = np.flatnonzero(counts)
    return {
        "t": present.tolist(),
        measure: (sums[present] / counts[present]).tolist(),
        "n": counts[present].tolist(),
    }


def run_analyses(sequences: Sequence[SequenceResult]) -> dict:
    """All analyses as a JSON-ready dict (``length``, ``occlusion``, ``mean_J_curve``)."""
    objects = [o for s in sequences for o in s.objects]
    return {
        "length": length_analysis(sequences),
        "occlusion": occlusion_analysis(sequences),
        "mean_J_curve": mean_curve(objects, "J"),
    }
