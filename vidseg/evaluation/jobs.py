"""Evaluation of a results folder: one picklable job per sequence, run in-process or in a pool.

:func:`build_jobs` indexes the ground truth (DAVIS or YouTube-VOS) and checks the results before any
scoring; :func:`run_job` reads one sequence's PNGs and scores them with :mod:`vidseg.evaluation.scoring`;
:func:`evaluate` puts it together with the global means and the HS2S analyses.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidseg.errors import VidsegError
from vidseg.evaluation.analyses import run_analyses
from vidseg.evaluation.metrics import BOUND_TH, VOID_ID
from vidseg.evaluation.results import EvaluationResult, SequenceResult, global_metrics
from vidseg.evaluation.scoring import (
    _check_task,
    _check_void,
    _davis_window,
    _first_annotation_objects,
    _ObjectSpec,
    _score_stream,
    _validate_pred,
)
from vidseg.io.files import natural_key
from vidseg.io.masks import read_mask
from vidseg.machine import usable_cores

DATASETS = ("davis", "youtube-vos")
PREFETCH = 3  # frames read ahead of the scorer, per sequence


@dataclass(frozen=True)
class SequenceJob:
    """Everything needed to score one sequence from files (picklable, for worker processes)."""

    name: str
    task: str
    frames: tuple[str, ...]
    gt_paths: tuple[str, ...]
    result_dir: str
    # (object_id, start, stop, category, seen, match_at) as :class:`_ObjectSpec`; None: from the first annotation
    objects: tuple[tuple[int, int, int, str | None, bool | None, int | None], ...] | None
    merge_objects: bool = False
    void: str = "exclude"
    bound_th: float = BOUND_TH
    prefetch: bool = False  # read frames ahead in a thread (set by :func:`run_jobs`)
    matching: str = "sequence"  # unsupervised task: "sequence" or "first-frame"

    def needed_positions(self) -> range:
        """Positions (in ``frames``) of the frames that are scored or matched on, hence need a result PNG."""
        if self.objects is None:
            start, stop, match_at = _davis_window(len(self.frames), self.task, self.matching)
            return range(start if match_at is None else match_at, stop)
        if not self.objects:
            return range(0)
        return range(min(o[1] if o[5] is None else o[5] for o in self.objects), max(o[2] for o in self.objects))


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
        start, stop, match_at = _davis_window(len(frames), job.task, job.matching)
        objects = [_ObjectSpec(k, start, stop, match_at=match_at) for k in range(1, n_obj + 1)]
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

    return _score_stream(job.name, frames, objects, stream(), job.task, job.void, job.bound_th, job.matching)


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
            "write one folder of PNG masks per sequence, or score only those you have with --sequences "
            "(evaluate(..., sequences=[...]))",
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
    matching: str = "sequence",
) -> list[SequenceJob]:
    """Index the ground truth and the results folder; one :class:`SequenceJob` per sequence."""
    _check_task(task, matching)
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
                    matching=matching,
                )
            )
    else:
        from vidseg.data.youtube_vos import YouTubeVOSIndex

        index = YouTubeVOSIndex(gt_root, split=split, sequences=sequences)
        semi_windows = task == "semi-supervised" or matching == "first-frame"
        for name in index.names:
            seq = index.sequence(name)
            annotated = sorted(seq.mask_paths, key=natural_key)
            if not annotated:
                raise VidsegError(f"video {name!r} has no annotation PNGs", index.annotation_dir / name)
            specs = []
            for object_id, info in seq.objects.items():
                if info.first_frame in annotated:
                    first = annotated.index(info.first_frame)
                    start = first + 1 if semi_windows else first
                else:  # first appearance on a frame without a PNG: score (and match) from the next annotated frame on
                    key = natural_key(info.first_frame)
                    later = [i for i, f in enumerate(annotated) if natural_key(f) > key]
                    first = start = later[0] if later else len(annotated)
                match_at = first if matching == "first-frame" and first < len(annotated) else None
                specs.append((object_id, start, len(annotated), info.category, index.is_seen(info.category), match_at))
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
                    matching=matching,
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
    usable = usable_cores()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    return usable >= 2 and load <= usable - 1


def _job_cost(job: SequenceJob) -> int:
    """Frames to score times objects (at least one): the order in which jobs are handed out."""
    return len(job.needed_positions()) * max(len(job.objects or ()), 1)


def run_jobs(jobs: list[SequenceJob], n_jobs: int = 1, progress: bool | None = None) -> list[SequenceResult]:
    """Score the jobs in this process (``n_jobs <= 1``) or in this process and ``n_jobs - 1`` workers.

    In a single process the PNG files are read one to three frames ahead in a thread (decoding
    releases the GIL) when a second core looks idle. With workers, the longest sequences go first;
    this process scores too, taking from the end of the queue the jobs no worker has started, so it
    works while the workers start. Results come back in the order of ``jobs``.
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
    if context.get_start_method() == "forkserver":  # workers fork from a server that imported the scorer once
        context.set_forkserver_preload([__name__])
    order = sorted(range(len(jobs)), key=lambda i: -_job_cost(jobs[i]))
    pool = ProcessPoolExecutor(max_workers=n_jobs - 1, mp_context=context, initializer=_init_worker)
    out: list[SequenceResult | None] = [None] * len(jobs)
    try:
        futures = {i: pool.submit(run_job, jobs[i]) for i in order}
        with tqdm(**bar_args) as bar:
            for i in reversed(order):  # the shortest jobs, while no worker has taken them
                if futures[i].cancel():
                    out[i] = run_job(jobs[i])
                    bar.update(1)
            for i in order:
                if out[i] is None:
                    out[i] = futures[i].result()
                    bar.update(1)
    except BrokenProcessPool as exc:
        pool.shutdown(wait=False, cancel_futures=True)
        raise VidsegError("the evaluation worker processes stopped before finishing", fix="a script that calls "
                          "evaluate(..., jobs=N) needs its code under `if __name__ == \"__main__\":` (workers import "
                          "the script), or use jobs=1") from exc
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
    matching: str = "sequence",
) -> EvaluationResult:
    """Score a results folder against a DAVIS or YouTube-VOS ground truth.

    Args:
        gt_root: dataset root (DAVIS: holds ``Annotations[_unsupervised]/<resolution>`` and
            ``ImageSets``; YouTube-VOS: holds ``train/`` or ``valid/`` with ``meta.json``).
        results_dir: one folder of PNG masks per sequence (``<seq>/<frame>.png``; on YouTube-VOS
            ``Annotations/<vid>/`` also works).
        task: ``"semi-supervised"`` or ``"unsupervised"``.
        matching: unsupervised task only: ``"sequence"`` (default, the DAVIS protocol: proposals
            matched to objects on the whole sequence) or ``"first-frame"`` (the RVOS paper's zero-shot
            protocol: matched on the first frame's J, then scored as semi-supervised); see
            :mod:`vidseg.evaluation.scoring`.
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
    job_list = build_jobs(gt_root, results_dir, task, dataset, split, year, resolution, void, bound_th, sequences,
                          matching)
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
            "matching": matching if task == "unsupervised" else None,
        },
    )
    if analyses:
        result.analyses = run_analyses(results)
    return result


def is_mask_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is one sequence's folder of mask PNGs (not a dataset root)."""
    path = Path(path)
    return path.is_dir() and any(path.glob("*.png")) and not (path / "Annotations").is_dir()


def evaluate_folders(
    gt_dir: str | os.PathLike,
    results_dir: str | os.PathLike,
    task: str = "semi-supervised",
    *,
    void: str = "exclude",
    matching: str = "sequence",
) -> EvaluationResult:
    """Score one sequence given as two folders of PNG masks named alike (e.g. one's own video: ground truth drawn
    for some frames, ``vidseg segment`` output for all). Only the frames with a ground-truth PNG count; the first
    one is the annotation the method started from."""
    from vidseg.evaluation.scoring import evaluate_sequence_arrays

    gt_dir, results_dir = Path(gt_dir), Path(results_dir)
    names = sorted((p.stem for p in gt_dir.glob("*.png")), key=natural_key)
    missing = [n for n in names if not (results_dir / f"{n}.png").is_file()]
    if missing:
        raise VidsegError(f"result {missing[0]}.png is missing ({len(missing)} of {len(names)} ground-truth frames)",
                          results_dir, "write a mask for every frame that has a ground-truth PNG")
    gt = np.stack([read_mask(gt_dir / f"{n}.png") for n in names])
    pred = np.stack([read_mask(results_dir / f"{n}.png") for n in names])
    sequence = evaluate_sequence_arrays(gt, pred, task, name=gt_dir.name, void=void, matching=matching)
    objects = sequence.objects
    return EvaluationResult(task=task, dataset="folders", split=gt_dir.name, global_metrics=global_metrics(objects),
                            sequences=[sequence], analyses=run_analyses([sequence]),
                            settings={"gt_root": str(gt_dir), "results_dir": str(results_dir), "void": void,
                                      "matching": matching if task == "unsupervised" else None})
