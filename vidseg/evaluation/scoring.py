"""Scoring of one sequence under the DAVIS semi-supervised / unsupervised and YouTube-VOS protocols.

**DAVIS semi-supervised** (as the official DAVIS 2017 toolkit): the first and the last frame are not
scored; the objects are ``1 .. max id of the first annotation`` (so a sequence whose first annotation
holds ids 3, 4, 5 is scored on objects 1..5, objects 1 and 2 counting from their later appearance and
scoring J = F = 1 on frames where they are absent from both masks); a result id missing from a frame
is an empty mask; a result id above that maximum is an error.

**DAVIS unsupervised**: proposals are the result ids ``1 .. max id over all result frames`` (at most
20); when there are fewer proposals than objects, empty proposals are added, as the toolkit does. J
and F are computed for every proposal x object pair and frame; how proposals are assigned to objects
is the ``matching``:

* ``"sequence"`` (default, the official DAVIS protocol): every frame is scored, and proposals are
  assigned by the Hungarian algorithm on the per-pair mean over frames of ``(J + F) / 2``. An object
  without a real proposal is therefore scored against an empty mask (0 where it is visible, 1 on
  frames where it is absent), exactly as the toolkit scores it. The per-object rows come in the
  toolkit's order and naming: sorted by the matched proposal id, named ``<seq>_<i>`` by position (the
  row also records the GT ``object_id`` and the ``proposal_id``).
* ``"first-frame"`` (the zero-shot protocol of RVOS, Ventura et al. CVPR 2019: the first annotation
  only tells which proposal is which object): the Hungarian algorithm on the first frame's J (IoU)
  alone; then each object is scored against its proposal exactly as the semi-supervised protocol
  scores it (same objects, first and last frames excluded, rows ``<seq>_<object_id>`` in object
  order, with the ``proposal_id`` recorded). The first frame is scored only to match. An object left
  without a real proposal is scored against an added empty one, as above. Ties (e.g. an object that
  no proposal overlaps on the first frame, or one absent from it) are resolved as scipy's
  ``linear_sum_assignment`` resolves them: the same way for the same masks, by no rule of ours.

**DAVIS 2016** (``year="2016"``): single-object; every non-void id of the ground truth and of the
results is merged into object 1.

**YouTube-VOS** (semi-supervised): only annotated frames (frames with a ground-truth PNG) count. An
object is scored on the annotated frames *after* the frame in which it first appears (its first
frame in ``meta.json``, where its mask is given to the method), to the last annotated frame
inclusive. The first-appearance frame is excluded as the YouTube-VOS server does; the last frame is
kept. Objects are the ``meta.json`` objects; a result id that is not one of them is an error.
Seen / unseen objects are reported separately; ``Overall`` is the mean of J-seen, J-unseen, F-seen
and F-unseen (of those that exist). With ``task="unsupervised"`` the same frames are used but each
object's window starts at its first-appearance frame and proposals are matched as on DAVIS; with
first-frame matching each object is matched on its first annotated frame (its first-appearance frame,
or the next annotated one when that frame has no PNG) and scored on the semi-supervised window.

Ground truth never needs the JPEG frames, and any resolution works: the boundary tolerance follows
the frame size.

Files are indexed and read by :mod:`vidseg.evaluation.jobs`; this module scores a stream of
``(position, gt, pred)`` frames, and whole sequences given as arrays.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from vidseg.errors import VidsegError
from vidseg.evaluation.metrics import (
    BOUND_TH,
    VOID_ID,
    boundary_radius,
    score_frame,
)
from vidseg.evaluation.results import ObjectResult, SequenceResult

TASKS = ("semi-supervised", "unsupervised")
MATCHINGS = ("sequence", "first-frame")
MAX_PROPOSALS = 20
VOID_MODES = ("exclude", "background")


def _check_task(task: str, matching: str = "sequence") -> None:
    if task not in TASKS:
        raise VidsegError(f"unknown task {task!r}", fix=f"use one of {', '.join(TASKS)}")
    if matching not in MATCHINGS:
        raise VidsegError(f"unknown matching {matching!r}", fix=f"use one of {', '.join(MATCHINGS)}")
    if matching != "sequence" and task != "unsupervised":
        raise VidsegError(f"{matching} matching applies to the unsupervised task only",
                          fix="use task 'unsupervised', or the default matching 'sequence'")


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
    match_at: int | None = None  # first-frame matching: the position proposals are matched on


def _davis_window(
    n_frames: int, task: str, matching: str, exclude_first_last: bool | None = None
) -> tuple[int, int, int | None]:
    """``(start, stop, match_at)`` of every object of a DAVIS sequence (see :class:`_ObjectSpec`)."""
    semi_frames = task == "semi-supervised" or matching == "first-frame"
    skip = semi_frames if exclude_first_last is None else exclude_first_last
    start, stop = (1, n_frames - 1) if skip else (0, n_frames)
    return start, max(start, stop), 0 if matching == "first-frame" else None


def _score_stream(
    name: str,
    frames: Sequence[str],
    objects: list[_ObjectSpec],
    pairs: Iterable[tuple[int, np.ndarray, np.ndarray]],
    task: str,
    void: str,
    bound_th: float,
    matching: str = "sequence",
) -> SequenceResult:
    """Score ``(position, gt, pred)`` frames (already validated) and build the per-object results.

    ``pairs`` must hold every position of the objects' windows and, with first-frame matching, their
    ``match_at`` positions.
    """
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
        active = [k for k, o in enumerate(objects) if o.start <= position < o.stop or position == o.match_at]
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
    elif n_obj and matching == "first-frame":
        from scipy.optimize import linear_sum_assignment

        n_rows = max(max_proposal, n_obj)
        # per pair: J on the object's matching frame (0 for an object with no annotated frame), (proposal, object)
        first_j = np.zeros((n_rows, n_obj))
        for k, spec in enumerate(objects):
            if spec.match_at is not None:
                first_j[:, k] = j_all[spec.match_at, :n_rows, k]
        rows, cols = linear_sum_assignment(-first_j)  # n_rows >= n_obj: every object gets a proposal
        proposal_of = dict(zip(cols.tolist(), rows.tolist()))
        for k, spec in enumerate(objects):
            p = proposal_of[k]
            window = slice(spec.start, min(spec.stop, n_frames))
            results.append(make(k, j_all[window, p, k], f_all[window, p, k], f"{name}_{spec.object_id}", p + 1))
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
    matching: str = "sequence",
) -> SequenceResult:
    """Score one sequence given as arrays, with the DAVIS protocol of ``task``.

    Args:
        gt: ``(T, H, W)`` uint8 ground-truth id maps (0 background, 255 void).
        pred: ``(T, H, W)`` uint8 result id maps.
        task: ``"semi-supervised"`` (objects = 1..max id of ``gt[0]``; first and last frames excluded
            unless ``exclude_first_last=False``) or ``"unsupervised"`` (up to 20 proposals, Hungarian
            matching).
        name: sequence name used in the object names (``<name>_<k>``).
        void: ``"exclude"`` or ``"background"`` (see :func:`vidseg.evaluation.metrics.score_frame`).
        exclude_first_last: leave the first and last frames out of the means (default: yes for the
            semi-supervised task and first-frame matching, no for sequence matching).
        matching: unsupervised task only: ``"sequence"`` (the DAVIS protocol: all frames, matching on
            the mean over frames of ``(J + F) / 2``) or ``"first-frame"`` (the RVOS paper's: matching on
            the J of ``gt[0]``, then the semi-supervised scoring); see :mod:`vidseg.evaluation.scoring`.
    """
    _check_task(task, matching)
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
    start, stop, match_at = _davis_window(n_frames, task, matching, exclude_first_last)
    objects = [_ObjectSpec(k, start, stop, match_at=match_at) for k in range(1, n_obj + 1)]

    def stream():
        for position in range(start if match_at is None else match_at, stop):
            _validate_pred(pred[position], gt[position], n_obj, task, name, frames[position], None)
            yield position, gt[position], pred[position]

    return _score_stream(name, frames, objects, stream(), task, void, bound_th, matching)
