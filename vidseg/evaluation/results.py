"""Result containers of an evaluation (per object, per sequence, whole run) and the global means.

Kept free of scoring and file handling so that the analyses and reports can build on them alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from vidseg.evaluation.metrics import statistics

STAT_KEYS = ("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
GLOBAL_KEYS = ("J&F-Mean",) + STAT_KEYS
YTVOS_KEYS = ("Overall", "J-Seen", "J-Unseen", "F-Seen", "F-Unseen")


@dataclass
class ObjectResult:
    """Per-frame and summary scores of one ground-truth object.

    ``t`` holds the positions of the scored frames among the sequence's annotated frames (0 = first
    annotated frame); ``J``, ``F`` and ``gt_area`` (GT pixels of the object) are aligned with it.
    """

    sequence: str
    name: str
    object_id: int
    frames: tuple[str, ...]
    t: np.ndarray
    J: np.ndarray
    F: np.ndarray
    gt_area: np.ndarray
    proposal_id: int | None = None
    category: str | None = None
    seen: bool | None = None
    stats: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        jm, jr, jd = statistics(self.J)
        fm, fr, fd = statistics(self.F)
        self.stats = {"J-Mean": jm, "J-Recall": jr, "J-Decay": jd, "F-Mean": fm, "F-Recall": fr, "F-Decay": fd}

    @property
    def jf_mean(self) -> float:
        return (self.stats["J-Mean"] + self.stats["F-Mean"]) / 2

    def row(self) -> dict:
        """One table row: ``Sequence`` (the toolkit's ``<seq>_<k>`` name) then the six statistics."""
        row = {"Sequence": self.name, **self.stats}
        if self.category is not None or self.seen is not None:
            row["Category"] = self.category
            row["Seen"] = self.seen
        return row

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "sequence": self.sequence,
            "object_id": self.object_id,
            "proposal_id": self.proposal_id,
            "category": self.category,
            "seen": self.seen,
            **{k: _json_float(v) for k, v in self.stats.items()},
            "frames": list(self.frames),
            "t": [int(v) for v in self.t],
            "J": [_json_float(v) for v in self.J],
            "F": [_json_float(v) for v in self.F],
            "gt_area": [int(v) for v in self.gt_area],
        }


@dataclass
class SequenceResult:
    """Scores of one sequence: its objects in table order and its number of annotated frames."""

    name: str
    n_frames: int
    objects: list[ObjectResult]
    shape: tuple[int, int] = (0, 0)

    @property
    def jf_mean(self) -> float:
        values = [o.jf_mean for o in self.objects if not math.isnan(o.jf_mean)]
        return float(np.mean(values)) if values else math.nan


@dataclass
class EvaluationResult:
    """Everything :func:`evaluate` measured.

    ``global_metrics`` maps ``J&F-Mean``, ``J-Mean``, ``J-Recall``, ``J-Decay``, ``F-Mean``,
    ``F-Recall``, ``F-Decay`` (and on YouTube-VOS ``Overall``, ``J-Seen``, ``J-Unseen``, ``F-Seen``,
    ``F-Unseen``) to floats; ``per_object`` holds one row dict per object in table order;
    ``analyses`` the HS2S length and occlusion analyses (:mod:`vidseg.evaluation.analyses`).
    """

    task: str
    dataset: str
    split: str
    global_metrics: dict[str, float]
    sequences: list[SequenceResult]
    analyses: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    @property
    def objects(self) -> list[ObjectResult]:
        return [o for s in self.sequences for o in s.objects]

    @property
    def per_object(self) -> list[dict]:
        return [o.row() for o in self.objects]

    def to_dict(self, per_frame: bool = True) -> dict:
        objects = [o.to_dict() for o in self.objects]
        if not per_frame:
            for o in objects:
                for key in ("frames", "t", "J", "F", "gt_area"):
                    o.pop(key)
        return {
            "task": self.task,
            "dataset": self.dataset,
            "split": self.split,
            "settings": self.settings,
            "global": {k: _json_float(v) for k, v in self.global_metrics.items()},
            "sequences": [
                {"name": s.name, "n_frames": s.n_frames, "J&F-Mean": _json_float(s.jf_mean)} for s in self.sequences
            ],
            "objects": objects,
            "analyses": self.analyses,
        }


def _json_float(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _mean(values: Sequence[float]) -> float:
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return math.nan
    if np.isnan(array).any():
        array = array[~np.isnan(array)]
        return float(np.mean(array)) if array.size else math.nan
    return float(np.mean(array))


def global_metrics(objects: Sequence[ObjectResult], youtube_vos: bool = False) -> dict[str, float]:
    """Means over objects (not sequences) of each statistic; ``J&F-Mean = (J-Mean + F-Mean) / 2``.

    Objects without any scored frame (NaN statistics) are left out. With ``youtube_vos`` the seen /
    unseen means and ``Overall`` (mean of the four that exist) come first.
    """
    out: dict[str, float] = {}
    if youtube_vos:
        groups = {}
        for label, flag in (("Seen", True), ("Unseen", False)):
            chosen = [o for o in objects if bool(o.seen) == flag]
            groups[label] = chosen
            for measure in ("J", "F"):
                out[f"{measure}-{label}"] = _mean([o.stats[f"{measure}-Mean"] for o in chosen])
        parts = [out[k] for k in ("J-Seen", "J-Unseen", "F-Seen", "F-Unseen")]
        out = {"Overall": _mean(parts), **out}
    stats = {key: _mean([o.stats[key] for o in objects]) for key in STAT_KEYS}
    return {**out, "J&F-Mean": (stats["J-Mean"] + stats["F-Mean"]) / 2, **stats}
