"""Run one method over every video of a split (:mod:`vidseg.inference.predict_tasks`) into a results folder.

The method is built once per process. ``jobs`` worker processes share the cores and take the longest videos
first; under ``torchrun`` each rank takes a share balanced by length (:func:`shard`). Each video runs through
:func:`vidseg.inference.runner.segment_video`, so an interrupted video continues with its exact resume; a finished
one is recorded in ``OUT/.vidseg-predict/done/`` and never redone; one that fails is recorded with its error and
the others go on.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import shutil
import zipfile
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from vidseg.errors import VidsegError
from vidseg.inference.predict_tasks import VideoTask, given_mask_files
from vidseg.inference.session import Propagator
from vidseg.io.atomic import atomic_path, atomic_write_text

RUN_FOLDER = ".vidseg-predict"
SUBMISSION_ZIP = "submission.zip"


@dataclass(frozen=True)
class MethodRecipe:
    """How to build the method, for worker processes (a built network is not sent between processes)."""

    method: str | None
    checkpoint: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Propagator:
        from vidseg.inference.methods import build_propagator

        return build_propagator(self.method, self.checkpoint, **self.options)


@dataclass(frozen=True)
class VideoOutcome:
    name: str
    frames: int
    seconds: float = 0.0
    error: str | None = None
    earlier: bool = False  # finished by an earlier run


class ResultsFolder:
    """The results folder of one run: its settings (a rerun must use the same ones) and which videos are done."""

    def __init__(self, out: str | os.PathLike, settings: dict[str, Any]):
        self.out = Path(out)
        self.folder = self.out / RUN_FOLDER
        self.settings = json.loads(json.dumps(settings))  # as it reads back from disk

    def check(self, overwrite: bool) -> None:
        """Refuse a folder that holds another run's results (or other files), unless ``overwrite``; reads only."""
        if self.out.exists() and not self.out.is_dir():
            raise VidsegError("--out exists and is not a folder", self.out, "choose a folder path for --out")
        manifest = self.folder / "run.json"
        if overwrite or not self.out.is_dir():
            return
        if not manifest.is_file():
            if any(self.out.iterdir()):
                raise VidsegError("--out holds files of something else", self.out,
                                  "choose a new folder, or pass --overwrite to replace its results")
            return
        saved = json.loads(manifest.read_text())
        changed = [key for key in sorted(set(saved) | set(self.settings)) if saved.get(key) != self.settings.get(key)]
        if changed:
            key = changed[0]
            raise VidsegError(f"--out holds the results of another run ({key} {saved.get(key)!r}, now "
                              f"{self.settings.get(key)!r})", self.out,
                              "rerun with the same settings to continue it, pass --overwrite, or choose a new --out")

    def start(self, overwrite: bool) -> None:
        """Record the settings (after :meth:`check`); ``overwrite`` forgets which videos an earlier run did."""
        if overwrite:
            shutil.rmtree(self.folder, ignore_errors=True)
        atomic_write_text(self.folder / "run.json", json.dumps(self.settings, indent=1, sort_keys=True) + "\n")

    def _marker(self, kind: str, name: str) -> Path:
        return self.folder / kind / f"{name}.json"

    def is_done(self, name: str) -> bool:
        return self._marker("done", name).is_file()

    def to_do(self, tasks: list[VideoTask], overwrite: bool) -> list[VideoTask]:
        """The tasks a run still has to segment: all of them with ``overwrite``, else those not done."""
        return [task for task in tasks if overwrite or not self.is_done(task.name)]

    def record(self, outcome: VideoOutcome) -> None:
        done, failed = self._marker("done", outcome.name), self._marker("failed", outcome.name)
        if outcome.error is None:
            atomic_write_text(done, json.dumps({"frames": outcome.frames, "seconds": round(outcome.seconds, 3)}))
            failed.unlink(missing_ok=True)
        else:
            atomic_write_text(failed, json.dumps({"error": outcome.error}))

    def unfinished(self, tasks: list[VideoTask]) -> dict[str, str]:
        """The videos without results, each with why (its recorded error, or that it never ran to the end)."""
        missing = {}
        for task in tasks:
            if self.is_done(task.name):
                continue
            failed = self._marker("failed", task.name)
            missing[task.name] = json.loads(failed.read_text())["error"] if failed.is_file() else "not finished"
        return missing

    def given_folder(self, name: str) -> Path:
        return self.folder / "given" / name


def _error_line(exc: Exception) -> str:
    return str(exc) if isinstance(exc, VidsegError) else f"{type(exc).__name__}: {exc}"


def predict_video(task: VideoTask, propagator: Propagator, results: ResultsFolder, overwrite: bool = False,
                  on_frame: Callable[[], None] | None = None, save_every: int = 100) -> VideoOutcome:
    """Segment one video into its results folder (continuing an interrupted run of it; a resume point every
    ``save_every`` frames); a failure is returned, recorded, not raised (Ctrl-C is raised: the video's resume point
    is saved)."""
    from vidseg.inference.runner import segment_video

    try:
        masks = given_mask_files(task, results.given_folder(task.name))
        out = Path(task.out_dir)
        result = segment_video(task.video, masks, out, method=propagator, overwrite=overwrite,
                               resume=out.is_dir() and not overwrite, progress=False, on_frame=on_frame,
                               save_every=save_every)
        outcome = VideoOutcome(task.name, result.num_frames, result.seconds)
    except Exception as exc:  # one video's failure (a corrupt frame, a bad mask) must not stop the split
        outcome = VideoOutcome(task.name, task.num_frames, error=_error_line(exc))
    results.record(outcome)
    return outcome


def longest_first(tasks: list[VideoTask]) -> list[VideoTask]:
    return sorted(tasks, key=lambda task: (-task.num_frames, task.name))


def shard(tasks: list[VideoTask], world_size: int, rank: int) -> list[VideoTask]:
    """``rank``'s share of ``tasks``: the longest video goes to the least loaded rank, in turn (the same on every
    rank)."""
    loads = [0] * world_size
    shares: list[list[VideoTask]] = [[] for _ in range(world_size)]
    for task in longest_first(tasks):
        least = min(range(world_size), key=lambda r: (loads[r], r))
        loads[least] += task.num_frames
        shares[least].append(task)
    return shares[rank]


class SplitProgress:
    """One bar for the split: frames done, frames/s and time left; videos done in the postfix."""

    def __init__(self, tasks: list[VideoTask], description: str, enabled: bool):
        self.videos, self.done = len(tasks), 0
        self.bar = tqdm(total=sum(t.num_frames for t in tasks), unit="frame", desc=description, disable=not enabled,
                        dynamic_ncols=True)
        self._postfix()

    def _postfix(self) -> None:
        self.bar.set_postfix_str(f"videos {self.done}/{self.videos}")

    def frame(self, count: int = 1) -> None:
        self.bar.update(count)

    def finished(self, outcome: VideoOutcome) -> None:
        self.done += 1
        if outcome.earlier:
            self.bar.update(outcome.frames)
        if outcome.error is not None:
            self.bar.write(f"vidseg: {outcome.name} failed: {outcome.error}")
        self._postfix()

    def close(self) -> None:
        self.bar.close()


_worker: dict[str, Any] = {}


def _start_worker(recipe: MethodRecipe, threads: int, events: multiprocessing.Queue) -> None:
    from vidseg.machine import set_threads

    set_threads(threads)
    _worker["events"] = events
    try:
        _worker["propagator"] = recipe.build()
    except VidsegError as exc:  # said by the first video this worker takes
        _worker["error"] = exc


def _worker_video(task: VideoTask, results: ResultsFolder, overwrite: bool, save_every: int) -> VideoOutcome:
    if "error" in _worker:
        raise _worker["error"]
    return predict_video(task, _worker["propagator"], results, overwrite, on_frame=lambda: _worker["events"].put(1),
                         save_every=save_every)


def predict_videos(tasks: list[VideoTask], results: ResultsFolder, method: MethodRecipe | Propagator,
                   jobs: int = 1, threads: int = 1, progress: SplitProgress | None = None,
                   overwrite: bool = False, save_every: int = 100) -> list[VideoOutcome]:
    """Segment ``tasks`` longest first: in this process with a built ``method`` (``jobs`` 1), or in ``jobs``
    worker processes with ``threads`` threads each, which build it from its recipe once."""
    ordered = longest_first(results.to_do(tasks, overwrite))
    outcomes = [VideoOutcome(t.name, t.num_frames, earlier=True) for t in tasks if t not in ordered]
    for outcome in outcomes if progress else ():
        progress.finished(outcome)
    if not ordered:
        return outcomes
    if jobs == 1:
        propagator = method.build() if isinstance(method, MethodRecipe) else method
        for task in ordered:
            outcomes.append(predict_video(task, propagator, results, overwrite,
                                          on_frame=progress.frame if progress else None, save_every=save_every))
            if progress:
                progress.finished(outcomes[-1])
        return outcomes
    if not isinstance(method, MethodRecipe):
        raise TypeError("worker processes build the method from a MethodRecipe")
    context = multiprocessing.get_context("spawn")  # a forked copy of a process with torch threads can hang
    events = context.Queue()
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker,
                             initargs=(method, threads, events)) as pool:
        pending = {pool.submit(_worker_video, task, results, overwrite, save_every) for task in ordered}
        try:
            while pending:
                finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(events, progress)
                for future in finished:
                    outcomes.append(future.result())
                    if progress:
                        progress.finished(outcomes[-1])
        except BrokenProcessPool:
            raise VidsegError("a worker process died (out of memory?)", results.out,
                              "rerun the same command to continue: finished videos are kept; try fewer --jobs") from None
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # the running videos save their resume points
            raise
    return outcomes


def _drain(events: multiprocessing.Queue, progress: SplitProgress | None) -> None:
    count = 0
    while True:
        try:
            count += events.get_nowait()
        except queue.Empty:
            break
    if progress and count:
        progress.frame(count)


def write_submission_zip(out: Path, tasks: list[VideoTask]) -> Path:
    """``OUT/submission.zip`` holding ``Annotations/<video>/<frame>.png`` of every task, the layout the
    YouTube-VOS server takes."""
    target = out / SUBMISSION_ZIP
    with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        for task in sorted(tasks, key=lambda t: t.name):
            folder = Path(task.out_dir)
            for png in sorted(folder.glob("*.png")):
                archive.write(png, f"Annotations/{task.name}/{png.name}")
    return target


def join_torchrun(method: str | None, options: dict[str, Any]) -> tuple[int, int, int]:
    """(rank, world size, processes on this node) under ``torchrun``, after joining its process group (gloo on the
    CPU, nccl on GPUs); (0, 1, 1) otherwise. A network method runs on this rank's GPU (``options['device']``
    becomes ``cuda:LOCAL_RANK``) when CUDA is there and no CPU device was asked for."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 1, 1
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    from vidseg.registry import get_method

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    takes_device = method is None or "device" in get_method(method).options
    wanted = options.get("device")
    cuda = takes_device and torch.cuda.is_available() and (wanted is None or wanted.startswith("cuda"))
    if cuda:
        options["device"] = wanted if wanted and ":" in wanted else f"cuda:{local_rank}"
        torch.cuda.set_device(torch.device(options["device"]))
    # Rank 0 waits for the longest share before it zips and scores: far longer than the default 30 minutes.
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(hours=48))
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))


def torchrun_barrier(world_size: int) -> None:
    if world_size > 1:
        import torch.distributed as dist

        dist.barrier()


def gather_outcomes(outcomes: list[VideoOutcome], seconds: float,
                    world_size: int) -> tuple[list[VideoOutcome], float]:
    """Every rank's outcomes and the longest rank's seconds (on every rank), once all ranks are done."""
    if world_size == 1:
        return outcomes, seconds
    import torch.distributed as dist

    gathered: list[tuple[list[VideoOutcome], float] | None] = [None] * world_size
    dist.all_gather_object(gathered, (outcomes, seconds))
    shares = [share for share in gathered if share is not None]
    return [outcome for share, _ in shares for outcome in share], max(time for _, time in shares)


def leave_torchrun(world_size: int) -> None:
    if world_size > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
