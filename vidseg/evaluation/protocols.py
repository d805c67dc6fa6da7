"""Evaluation protocols: DAVIS semi-supervised and unsupervised, YouTube-VOS; files or arrays.

**DAVIS semi-supervised** (as the official DAVIS 2017 toolkit): the first and the last frame are not
scored; the objects are ``1 .. max id of the first annotation`` (so a sequence whose first annotation
holds ids 3, 4, 5 is scored on objects 1..5, objects 1 and 2 counting from their later appearance and
scoring J = F = 1 on frames where they are absent from both masks); a result id missing from a frame
is an empty mask; a result id above that maximum is an error.

**DAVIS unsupervised**: every frame is scored; proposals are the result ids ``1 .. max id over all
result frames`` (at most 20); when there are fewer proposals than objects, empty proposals are added,
as the toolkit does. J and F are computed for every proposal x object pair and frame, and the
proposals are assigned to the objects by the Hungarian algorithm on the per-pair mean over frames of
``(J + F) / 2``. An object without a real proposal is therefore scored against an empty mask (0 where
it is visible, 1 on frames where it is absent), exactly as the toolkit scores it. The per-object rows
come in the toolkit's order and naming: sorted by the matched proposal id, named ``<seq>_<i>`` by
position (the row also records the GT ``object_id`` and the ``proposal_id``).

**DAVIS 2016** (``year="2016"``): single-object; every non-void id of the ground truth and of the
results is merged into object 1.

**YouTube-VOS** (semi-supervised): only annotated frames (frames with a ground-truth PNG) count. An
object is scored on the annotated frames *after* the frame in which it first appears (its first
frame in ``meta.json``, where its mask is given to the method), to the last annotated frame
inclusive. The first-appearance frame is excluded as the YouTube-VOS server does; the last frame is
kept. Objects are the ``meta.json`` objects; a result id that is not one of them is an error.
Seen / unseen objects are reported separately; ``Overall`` is the mean of J-seen, J-unseen, F-seen
and F-unseen (of those that exist). With ``task="unsupervised"`` the same frames are used but each
object's window starts at its first-appearance frame and proposals are matched as on DAVIS.

Ground truth never needs the JPEG frames, and any resolution works: the boundary tolerance follows
the frame size.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vidseg.errors import VidsegError
from vidseg.evaluation.metrics import (
    BOUND_TH,
    VOID_ID,
    boundary_radius,
    score_frame,
    statistics,
)
from vidseg.io.masks import read_mask

TASKS = ("semi-supervised", "unsupervised")
DATASETS = ("davis", "youtube-vos")
MAX_PROPOSALS = 20
PREFETCH = 3  # frames read ahead of the scorer, per sequence
VOID_MODES = ("exclude", "background")
STAT_KEYS = ("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
GLOBAL_KEYS = ("J&F-Mean",) + STAT_KEYS
YTVOS_KEYS = ("Overall", "J-Seen", "J-Unseen", "F-Seen", "F-Unseen")

__all__ = [
    "DATASETS",
    "GLOBAL_KEYS",
    "MAX_PROPOSALS",
    "STAT_KEYS",
    "TASKS",
    "EvaluationResult",
    "ObjectResult",
    "SequenceResult",
    "evaluate",
    "evaluate_sequence_arrays",
    "global_metrics",
]


# --------------------------------------------------------------------------------------------------
# result containers


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


# --------------------------------------------------------------------------------------------------
# sequence scoring from a stream of frames


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise VidsegError(f"unknown task {task!r}", fix=f"use one of {', '.join(TASKS)}")


def _check_void(void: str) -> None:
    if void not in VOID_MODES:
        raise VidsegError(f"unknown void mode {void!r}", fix=f"use one of {', '.join(VOID_MODES)}")


@dataclass
class _ObjectSpec:
    object_id: int
    start: int  # first scored position (inclusive)
    stop: int  # last scored position + 1
    category: str | None = None
    seen: bool | None = None


def _score_stream(
    name: str,
    frames: Sequence[str],
    objects: list[_ObjectSpec],
    pairs: Iterable[tuple[int, np.ndarray, np.ndarray]],
    task: str,
    void: str,
    bound_th: float,
) -> SequenceResult:
    """Score ``(position, gt, pred)`` frames (already validated) and build the per-object results."""
    n_frames = len(frames)
    n_obj = len(objects)
    ids = [o.object_id for o in objects]
    semi = task == "semi-supervised"
    n_cols = n_obj if semi else MAX_PROPOSALS
    j_all = np.full((n_frames, n_cols, n_obj) if not semi else (n_frames, n_obj), np.nan)
    f_all = np.full_like(j_all, np.nan)
    area_all = np.zeros((n_frames, n_obj), dtype=np.int64)
    max_proposal = 0
    radius = None
    shape = (0, 0)
    for position, gt, pred in pairs:
        if radius is None:
            shape = gt.shape
            radius = boundary_radius(gt.shape, bound_th)
        active = [k for k, o in enumerate(objects) if o.start <= position < o.stop]
        if not active:
            continue
        gt_ids = [ids[k] for k in active]
        if semi:
            scores = score_frame(gt, pred, gt_ids, gt_ids, pairs="diagonal", radius=radius, void=void)
            j_all[position, active] = scores.J
            f_all[position, active] = scores.F
        else:
            top = int(pred.max(initial=0))
            max_proposal = max(max_proposal, top)
            proposals = list(range(1, MAX_PROPOSALS + 1))
            scores = score_frame(gt, pred, gt_ids, proposals, pairs="all", radius=radius, void=void)
            j_all[position][:, active] = scores.J
            f_all[position][:, active] = scores.F
        area_all[position, active] = scores.gt_area

    def make(k: int, j: np.ndarray, f: np.ndarray, row_name: str, proposal: int | None) -> ObjectResult:
        spec = objects[k]
        positions = np.arange(spec.start, min(spec.stop, n_frames))
        return ObjectResult(
            sequence=name,
            name=row_name,
            object_id=spec.object_id,
            frames=tuple(frames[p] for p in positions),
            t=positions,
            J=np.ascontiguousarray(j),
            F=np.ascontiguousarray(f),
            gt_area=area_all[positions, k],
            proposal_id=proposal,
            category=spec.category,
            seen=spec.seen,
        )

    results: list[ObjectResult] = []
    if semi:
        for k, spec in enumerate(objects):
            window = slice(spec.start, min(spec.stop, n_frames))
            results.append(make(k, j_all[window, k], f_all[window, k], f"{name}_{spec.object_id}", None))
    elif n_obj:
        from scipy.optimize import linear_sum_assignment

        n_rows = max(max_proposal, n_obj)
        # per pair: (mean over the object's frames of J + the same of F) / 2, laid out (proposal, object, frame)
        cost = np.empty((n_rows, n_obj))
        per_object = []
        for k, spec in enumerate(objects):
            window = slice(spec.start, min(spec.stop, n_frames))
            jk = np.ascontiguousarray(j_all[window, :n_rows, k].T)
            fk = np.ascontiguousarray(f_all[window, :n_rows, k].T)
            per_object.append((jk, fk))
            cost[:, k] = (np.mean(jk, axis=1) + np.mean(fk, axis=1)) / 2
        rows, cols = linear_sum_assignment(-cost)
        for position, (p, k) in enumerate(zip(rows, cols)):
            jk, fk = per_object[k]
            results.append(make(int(k), jk[p], fk[p], f"{name}_{position + 1}", int(p) + 1))
    return SequenceResult(name=name, n_frames=n_frames, objects=results, shape=tuple(shape))


def _first_annotation_objects(first: np.ndarray) -> int:
    """Number of objects as the toolkit counts them: the maximum id of the first annotation (void excluded)."""
    values = first[first != VOID_ID]
    return int(values.max(initial=0))


def _validate_pred(pred: np.ndarray, gt: np.ndarray, allowed_max: int, task: str, sequence: str, frame: str,
                   path: str | os.PathLike | None, allowed_ids: set[int] | None = None) -> None:
    if pred.shape != gt.shape:
        raise VidsegError(
            f"sequence {sequence!r} frame {frame}: result size {pred.shape[1]}x{pred.shape[0]} differs from "
            f"the ground truth's {gt.shape[1]}x{gt.shape[0]}",
            path,
            "write results at the annotation resolution",
        )
    top = int(pred.max(initial=0))
    if task == "unsupervised":
        if top > MAX_PROPOSALS:
            raise VidsegError(
                f"sequence {sequence!r} frame {frame}: result id {top} is above the {MAX_PROPOSALS} proposals allowed",
                path,
                f"keep at most {MAX_PROPOSALS} proposals, ids 1..{MAX_PROPOSALS}",
            )
        return
    if allowed_ids is not None:
        present = np.flatnonzero(np.bincount(pred.ravel(), minlength=256))
        bad = [int(i) for i in present if i != 0 and int(i) not in allowed_ids]
        if bad:
            raise VidsegError(
                f"sequence {sequence!r} frame {frame}: result id {bad[0]} is not a ground-truth object "
                f"(objects: {', '.join(map(str, sorted(allowed_ids))) or 'none'})",
                path,
                "use the object ids of the first annotation",
            )
    elif top > allowed_max:
        raise VidsegError(
            f"sequence {sequence!r} frame {frame}: result id {top} is not a ground-truth object "
            f"(the first annotation has objects 1..{allowed_max})",
            path,
            "use the object ids of the first annotation",
        )


# --------------------------------------------------------------------------------------------------
# arrays


def evaluate_sequence_arrays(
    gt: np.ndarray,
    pred: np.ndarray,
    task: str = "semi-supervised",
    *,
    name: str = "sequence",
    void: str = "exclude",
    bound_th: float = BOUND_TH,
    exclude_first_last: bool | None = None,
) -> SequenceResult:
    """Score one sequence given as arrays, with the DAVIS protocol of ``task``.

    Args:
        gt: ``(T, H, W)`` uint8 ground-truth id maps (0 background, 255 void).
        pred: ``(T, H, W)`` uint8 result id maps.
        task: ``"semi-supervised"`` (objects = 1..max id of ``gt[0]``; first and last frames excluded
            unless ``exclude_first_last=False``) or ``"unsupervised"`` (all frames, Hungarian matching
            of up to 20 proposals).
        name: sequence name used in the object names (``<name>_<k>``).
        void: ``"exclude"`` or ``"background"`` (see :func:`vidseg.evaluation.metrics.score_frame`).
    """
    _check_task(task)
    _check_void(void)
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.ndim == 2 and pred.ndim == 2:  # a single frame
        gt, pred = gt[None], pred[None]
    if gt.ndim != 3 or pred.ndim != 3:
        raise VidsegError(f"sequence {name!r}: expected (T, H, W) arrays, got {gt.shape} and {pred.shape}")
    if len(gt) != len(pred):
        raise VidsegError(f"sequence {name!r}: {len(gt)} ground-truth frames but {len(pred)} result frames")
    for array, label in ((gt, "ground truth"), (pred, "result")):
        if array.dtype != np.uint8:
            if array.size and (array.min() < 0 or array.max() > 255):
                raise VidsegError(f"sequence {name!r}: {label} ids must lie in 0..255")
    gt = gt.astype(np.uint8, copy=False)
    pred = pred.astype(np.uint8, copy=False)
    n_frames = len(gt)
    frames = tuple(f"{i:05d}" for i in range(n_frames))
    if n_frames == 0:
        return SequenceResult(name, 0, [])
    n_obj = _first_annotation_objects(gt[0])
    if task == "semi-supervised":
        skip = True if exclude_first_last is None else exclude_first_last
        start, stop = (1, n_frames - 1) if skip else (0, n_frames)
    else:
        skip = False if exclude_first_last is None else exclude_first_last
        start, stop = (1, n_frames - 1) if skip else (0, n_frames)
    objects = [_ObjectSpec(k, start, max(stop, start)) for k in range(1, n_obj + 1)]

    def stream():
        for position in range(start, stop):
            _validate_pred(pred[position], gt[position], n_obj, task, name, frames[position], None)
            yield position, gt[position], pred[position]

    return _score_stream(name, frames, objects, stream(), task, void, bound_th)


# --------------------------------------------------------------------------------------------------
# files


@dataclass(frozen=True)
class SequenceJob:
    """Everything needed to score one sequence from files (picklable, for worker processes)."""

    name: str
    task: str
    frames: tuple[str, ...]
    gt_paths: tuple[str, ...]
    result_dir: str
    objects: tuple[tuple[int, int, int, str | None, bool | None], ...] | None  # None: from the first annotation
    merge_objects: bool = False
    void: str = "exclude"
    bound_th: float = BOUND_TH
    prefetch: bool = False  # read frames ahead in a thread (set by :func:`run_jobs`)

    def needed_positions(self) -> range:
        """Positions (in ``frames``) of the frames that are scored, hence need a result PNG."""
        n = len(self.frames)
        if self.objects is None:
            return range(1, n - 1) if self.task == "semi-supervised" else range(n)
        if not self.objects:
            return range(0)
        return range(min(o[1] for o in self.objects), max(o[2] for o in self.objects))


def _read_gt(path: str, merge: bool) -> np.ndarray:
    mask = read_mask(path)
    if merge:
        mask = np.where((mask > 0) & (mask != VOID_ID), 1, mask).astype(np.uint8)
    return mask


def run_job(job: SequenceJob) -> SequenceResult:
    """Score one sequence from its files (the unit of work of :func:`evaluate`)."""
    frames = job.frames
    result_dir = Path(job.result_dir)
    allowed_ids: set[int] | None = None
    if job.objects is None:
        first = _read_gt(job.gt_paths[0], job.merge_objects)
        n_obj = _first_annotation_objects(first)
        if n_obj == 0:
            raise VidsegError(
                f"sequence {job.name!r}: the first annotation holds no object", job.gt_paths[0], "check the dataset"
            )
        n = len(frames)
        start, stop = (1, n - 1) if job.task == "semi-supervised" else (0, n)
        objects = [_ObjectSpec(k, start, max(start, stop)) for k in range(1, n_obj + 1)]
    else:
        objects = [_ObjectSpec(*spec) for spec in job.objects]
        n_obj = max((o.object_id for o in objects), default=0)
        allowed_ids = {o.object_id for o in objects}
    positions = job.needed_positions()

    def load(position: int):
        frame = frames[position]
        gt = _read_gt(job.gt_paths[position], job.merge_objects)
        pred_path = result_dir / f"{frame}.png"
        if not pred_path.is_file():
            raise VidsegError(
                f"sequence {job.name!r}: result frame {frame}.png is missing",
                pred_path,
                "write a mask for every frame",
            )
        pred = _read_gt(str(pred_path), job.merge_objects)  # DAVIS 2016: every object id is 1
        _validate_pred(pred, gt, n_obj, job.task, job.name, frame, pred_path, allowed_ids)
        return position, gt, pred

    def stream():
        # PNG decoding releases the GIL: read a few frames ahead in a thread while scoring, in order
        # (errors surface at their frame's turn); memory stays at PREFETCH frames.
        if not job.prefetch:
            yield from (load(p) for p in positions)
            return
        with ThreadPoolExecutor(max_workers=1) as reader:
            pending = deque()
            for position in positions:
                pending.append(reader.submit(load, position))
                if len(pending) > PREFETCH:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    return _score_stream(job.name, frames, objects, stream(), job.task, job.void, job.bound_th)


def _result_folder(results_dir: Path, name: str, dataset: str) -> Path | None:
    candidates = [results_dir / name]
    if dataset == "youtube-vos":
        candidates.append(results_dir / "Annotations" / name)
    for folder in candidates:
        if folder.is_dir():
            return folder
    return None


def _check_results(results_dir: Path, jobs: list[SequenceJob]) -> None:
    """Fail before any scoring when sequences or frames are missing."""
    missing_seqs = [job.name for job in jobs if not Path(job.result_dir).is_dir()]
    if missing_seqs:
        more = f" and {len(missing_seqs) - 3} more" if len(missing_seqs) > 3 else ""
        raise VidsegError(
            f"no results for sequence(s) {', '.join(missing_seqs[:3])}{more} "
            f"({len(missing_seqs)} of {len(jobs)} missing)",
            results_dir,
            "write one folder of PNG masks per sequence",
        )
    for job in jobs:
        present = {p[:-4] for p in os.listdir(job.result_dir) if p.endswith(".png")}
        absent = [job.frames[p] for p in job.needed_positions() if job.frames[p] not in present]
        if absent:
            more = f" and {len(absent) - 1} more" if len(absent) > 1 else ""
            raise VidsegError(
                f"sequence {job.name!r}: result frame {absent[0]}.png is missing{more}",
                Path(job.result_dir) / f"{absent[0]}.png",
                "write a mask for every annotated frame",
            )


def build_jobs(
    gt_root: str | os.PathLike,
    results_dir: str | os.PathLike,
    task: str = "semi-supervised",
    dataset: str = "davis",
    split: str = "val",
    year: str = "2017",
    resolution: str | None = "480p",
    void: str = "exclude",
    bound_th: float = BOUND_TH,
    sequences: list[str] | None = None,
) -> list[SequenceJob]:
    """Index the ground truth and the results folder; one :class:`SequenceJob` per sequence."""
    _check_task(task)
    _check_void(void)
    if dataset not in DATASETS:
        raise VidsegError(f"unknown dataset {dataset!r}", fix=f"use one of {', '.join(DATASETS)}")
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise VidsegError(
            "results folder not found", results_dir, "give the folder holding one sub-folder per sequence"
        )
    jobs: list[SequenceJob] = []
    if dataset == "davis":
        from vidseg.data.davis import DavisIndex

        index = DavisIndex(gt_root, year=year, split=split, resolution=resolution, task=task, sequences=sequences)
        unknown = [n for n in index.names if not (index.annotation_dir / n).is_dir()]
        if unknown:
            raise VidsegError(f"sequence(s) {', '.join(unknown[:3])} not found", index.annotation_dir)
        for name in index.names:
            seq = index.sequence(name)
            annotated = list(seq.mask_paths)  # natural order of the PNG files
            folder = _result_folder(results_dir, name, dataset) or results_dir / name
            jobs.append(
                SequenceJob(
                    name=name,
                    task=task,
                    frames=tuple(annotated),
                    gt_paths=tuple(str(seq.mask_paths[f]) for f in annotated),
                    result_dir=str(folder),
                    objects=None,
                    merge_objects=index.single_object,
                    void=void,
                    bound_th=bound_th,
                )
            )
    else:
        from vidseg.data.sequence import natural_key
        from vidseg.data.youtube_vos import YouTubeVOSIndex

        index = YouTubeVOSIndex(gt_root, split=split, sequences=sequences)
        for name in index.names:
            seq = index.sequence(name)
            annotated = sorted(seq.mask_paths, key=natural_key)
            if not annotated:
                raise VidsegError(f"video {name!r} has no annotation PNGs", index.annotation_dir / name)
            specs = []
            for object_id, info in seq.objects.items():
                if info.first_frame in annotated:
                    first = annotated.index(info.first_frame)
                    start = first + 1 if task == "semi-supervised" else first
                else:  # first appearance on a frame without a PNG: score from the next annotated frame on
                    key = natural_key(info.first_frame)
                    later = [i for i, f in enumerate(annotated) if natural_key(f) > key]
                    start = later[0] if later else len(annotated)
                specs.append((object_id, start, len(annotated), info.category, index.is_seen(info.category)))
            folder = _result_folder(results_dir, name, dataset) or results_dir / name
            jobs.append(
                SequenceJob(
                    name=name,
                    task=task,
                    frames=tuple(annotated),
                    gt_paths=tuple(str(seq.mask_paths[f]) for f in annotated),
                    result_dir=str(folder),
                    objects=tuple(specs),
                    void=void,
                    bound_th=bound_th,
                )
            )
    if not jobs:
        raise VidsegError("the ground truth lists no sequence", gt_root, "check --gt, --set and --year")
    if not any(p.is_dir() for p in results_dir.iterdir()) and not (results_dir / "Annotations").is_dir():
        raise VidsegError("the results folder is empty (no sequence folders)", results_dir,
                          "give the folder holding one sub-folder of PNG masks per sequence")
    _check_results(results_dir, jobs)
    return jobs


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)


def _spare_core() -> bool:
    """Whether a second CPU core looks idle (more usable cores than the 1-minute load average)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    return usable >= 2 and load <= usable - 1


def run_jobs(jobs: list[SequenceJob], n_jobs: int = 1, progress: bool | None = None) -> list[SequenceResult]:
    """Score the jobs, in order, in this process (``n_jobs <= 1``) or in a process pool.

    In a single process the PNG files are read one to three frames ahead in a thread (decoding
    releases the GIL) when a second core looks idle; worker processes never do.
    """
    from dataclasses import replace

    from tqdm import tqdm

    n_jobs = max(1, min(int(n_jobs or 1), len(jobs)))
    prefetch = n_jobs == 1 and _spare_core()
    jobs = [job if job.prefetch == prefetch else replace(job, prefetch=prefetch) for job in jobs]
    disable = (not progress) if progress is not None else None  # None: only on a terminal
    bar_args = dict(total=len(jobs), desc="eval", unit="seq", file=None, disable=disable, leave=False)
    if n_jobs == 1:
        out = []
        with tqdm(**bar_args) as bar:
            for job in jobs:
                out.append(run_job(job))
                bar.update(1)
        return out
    import multiprocessing as mp

    methods = mp.get_all_start_methods()
    context = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
    pool = ProcessPoolExecutor(max_workers=n_jobs, mp_context=context, initializer=_init_worker)
    try:
        futures = [pool.submit(run_job, job) for job in jobs]
        out = []
        with tqdm(**bar_args) as bar:
            for future in futures:
                out.append(future.result())
                bar.update(1)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)  # fail fast: do not finish the other sequences
        raise
    pool.shutdown()
    return out


def evaluate(
    gt_root: str | os.PathLike,
    results_dir: str | os.PathLike,
    task: str = "semi-supervised",
    dataset: str = "davis",
    split: str = "val",
    year: str = "2017",
    resolution: str | None = "480p",
    jobs: int = 1,
    *,
    void: str = "exclude",
    bound_th: float = BOUND_TH,
    sequences: list[str] | None = None,
    analyses: bool = True,
    progress: bool | None = None,
) -> EvaluationResult:
    """Score a results folder against a DAVIS or YouTube-VOS ground truth.

    Args:
        gt_root: dataset root (DAVIS: holds ``Annotations[_unsupervised]/<resolution>`` and
            ``ImageSets``; YouTube-VOS: holds ``train/`` or ``valid/`` with ``meta.json``).
        results_dir: one folder of PNG masks per sequence (``<seq>/<frame>.png``; on YouTube-VOS
            ``Annotations/<vid>/`` also works).
        task: ``"semi-supervised"`` or ``"unsupervised"``.
        dataset: ``"davis"`` or ``"youtube-vos"``.
        split: DAVIS ``ImageSets/<year>/<split>.txt`` name, or the YouTube-VOS split
            (``train``, ``valid``, ``train-80``, ``val-20``).
        year, resolution: DAVIS only.
        jobs: worker processes (sequences are scored in parallel when > 1).
        void: ``"exclude"`` (default) or ``"background"`` for GT void pixels.
        analyses: also run the HS2S sequence-length and occlusion analyses.
        progress: show a progress bar on stderr (``None``: only when stderr is a terminal).

    Raises:
        VidsegError: one line naming the sequence / frame and what is wrong, before any partial score.
    """
    job_list = build_jobs(gt_root, results_dir, task, dataset, split, year, resolution, void, bound_th, sequences)
    results = run_jobs(job_list, jobs, progress)
    objects = [o for s in results for o in s.objects]
    result = EvaluationResult(
        task=task,
        dataset=dataset,
        split=split,
        global_metrics=global_metrics(objects, youtube_vos=dataset == "youtube-vos"),
        sequences=results,
        settings={
            "gt_root": str(gt_root),
            "results_dir": str(results_dir),
            "year": str(year) if dataset == "davis" else None,
            "resolution": resolution if dataset == "davis" else None,
            "void": void,
            "bound_th": bound_th,
        },
    )
    if analyses:
        from vidseg.evaluation.analyses import run_analyses

        result.analyses = run_analyses(results)
    return result
