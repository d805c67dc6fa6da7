"""The app's long work, each on a thread of its own: propagate, propose objects, export.

A :class:`Job` reports progress (frames done, frames/s) and stops between two frames when asked, or when no page
has asked for its progress for ``heartbeat`` seconds (the tab was closed): every mask is written atomically and
``run.json`` moves past a frame only once its mask is on disk, so a stopped job leaves complete files only, and
the next propagation continues from the first frame not done.

:func:`propagate` steps an :class:`~vidseg.inference.session.InferenceSession` over the frames exactly as
:func:`vidseg.inference.runner.segment_video` does, with the given masks read by the same
:func:`~vidseg.data.own_video.load_prompts`, so the result equals ``vidseg segment VIDEO --mask given/``. After a
correction at frame ``k`` it starts from the nearest snapshot before ``k`` and recomputes, without writing, the
frames between it and ``k`` (the methods are deterministic: these give the masks already on disk).
"""

from __future__ import annotations

import contextlib
import secrets
import shlex
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vidseg.app.workspace import Workspace
from vidseg.errors import VidsegError
from vidseg.inference.methods import build_propagator, runnable_methods
from vidseg.inference.session import InferenceSession
from vidseg.io.atomic import atomic_write_text
from vidseg.io.masks import read_mask, write_mask
from vidseg.io.overlay import OverlayVideoWriter, overlay_frame
from vidseg.registry import method_names, zero_shot_methods

# A page asks for progress every 0.4 s; a hidden tab's timers may run once a minute (browsers throttle them).
HEARTBEAT_SECONDS = 120.0


class Stopped(Exception):
    """Raised inside a job's work at the next frame once the job is asked to stop."""


class Job:
    """``work(job)`` on a daemon thread; it calls :meth:`check` between frames and :meth:`advance` after each."""

    def __init__(self, kind: str, work: Callable[[Job], str], heartbeat: float | None = HEARTBEAT_SECONDS):
        self.kind = kind
        self.state = "running"  # -> finished | stopped | failed
        self.message = ""
        self.done = 0  # the position in the video (frames finished)
        self.total = 0
        self.result: dict[str, Any] = {}
        self._work = work
        self._heartbeat = heartbeat
        self._stop_reason: str | None = None
        self.computed = 0  # frames computed by this job (recomputed ones too), for frames/s
        self._started = time.perf_counter()
        self._last_seen = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"vidseg-app-{kind}", daemon=True)

    def start(self) -> Job:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self.state == "running"

    def _run(self) -> None:
        try:
            self.message = self._work(self)
            self.state = "finished"
        except Stopped as exc:
            self.message, self.state = str(exc), "stopped"
        except VidsegError as exc:
            self.message, self.state = str(exc), "failed"
        except Exception as exc:  # noqa: BLE001 -- shown on the page; the trace goes to the server's terminal
            traceback.print_exc(file=sys.stderr)
            self.message, self.state = f"{type(exc).__name__}: {exc}", "failed"

    def stop(self, reason: str = "stopped") -> None:
        self._stop_reason = reason

    def seen(self) -> None:
        """A page asked for this job's progress: it is still wanted."""
        self._last_seen = time.monotonic()

    def check(self) -> None:
        if self._heartbeat is not None and time.monotonic() - self._last_seen > self._heartbeat:
            self._stop_reason = self._stop_reason or ("stopped: no page followed it (the tab was closed); "
                                                      "propagate again to continue")
        if self._stop_reason is not None:
            raise Stopped(self._stop_reason)

    def advance(self, done: int, computed: bool = True) -> None:
        self.done = done
        self.computed += computed

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def status(self) -> dict[str, Any]:
        seconds = time.perf_counter() - self._started
        return {"kind": self.kind, "state": self.state, "message": self.message, "done": self.done,
                "total": self.total, "fps": round(self.computed / seconds, 2) if seconds > 0 else 0.0,
                "result": self.result}


def check_method(method: str, zero_shot: bool = False) -> str:
    """``method`` when it runs here (without a checkpoint); else a one-line error naming those that do."""
    usable = runnable_methods(zero_shot=zero_shot)
    if method not in usable:
        known = "unknown method" if method not in method_names() else "method that cannot run here"
        what = "zero-shot methods" if zero_shot else "methods"
        raise VidsegError(f"{known} {method!r}", fix=f"{what} that run here: {', '.join(usable) or 'none'}")
    return method


def propagate(workspace: Workspace, method: str, job: Job) -> str:
    """Bring ``masks/`` up to date with the given masks (see the module docstring)."""
    with workspace.locked():
        prompts = workspace.prompts()
        propagator = build_propagator(method)
        if not prompts and not propagator.discovers_objects:
            raise VidsegError("no object is painted yet", fix="paint one on a frame and save it, or propose objects "
                              f"with a zero-shot method ({', '.join(zero_shot_methods()) or 'none installed'})")
        start = workspace.begin_run(method)
        job.total = len(workspace)
        job.advance(start, computed=False)
        if start >= len(workspace):
            return "all frames are up to date"
        session = InferenceSession(propagator)
        first, saved = workspace.nearest_snapshot(start - 1, method)
        if saved is not None:
            session.load_state_dict(saved)
        for index, frame in workspace.frames_from(first):
            job.check()
            prompt = prompts.get(index)
            mask = session.step(frame, None if prompt is None else prompt.mask)
            if index >= start:  # earlier frames only rebuild the session: their masks are on disk already
                write_mask(workspace.result_path(index), mask)
                workspace.set_done(method, index + 1)
            if workspace.snapshot_due(index):
                workspace.save_snapshot(index, method, session.state_dict())
            job.advance(max(index + 1, start))
    return f"propagated frames {start + 1}-{len(workspace)} with {method}"


def propose(workspace: Workspace, method: str, index: int, job: Job) -> str:
    """Run a zero-shot method from the first frame to frame ``index``; its mask there goes to ``proposal.png``
    (the page loads it for the person to keep or drop objects)."""
    session = InferenceSession(build_propagator(method))
    job.total = index + 1
    mask = None
    for at, frame in workspace.frames_from(0):
        job.check()
        mask = session.step(frame)
        job.advance(at + 1)
        if at == index:
            break
    write_mask(workspace.folder / "proposal.png", mask)
    job.result = {"frame": index, "objects": sorted(session.objects.used_ids)}
    found = len(set(mask[(mask > 0) & (mask < 255)].tolist()))
    return f"{method} proposes {found} object(s) on frame {index + 1}: keep or remove them, then save"


def export(workspace: Workspace, job: Job, overlay: bool = True) -> str:
    """``export/``: ``masks/`` (palette PNGs named like the frames), ``given/`` (the painted masks),
    ``overlay.mp4`` and ``command.txt`` (the ``vidseg segment`` line that gives the same masks). Built in a
    hidden folder and swapped in whole: an export stopped half-way leaves the previous one."""
    with workspace.locked():
        record = workspace.run_record()
        if record["done"] < len(workspace) or record["method"] is None:
            raise VidsegError(f"only {record['done']} of {len(workspace)} frames are propagated",
                              fix="propagate to the last frame, then export")
        part = workspace.folder / f".export-{secrets.token_hex(4)}"
        try:
            _write_export(workspace, part, record["method"], job, overlay)
            old = workspace.folder / f".export-old-{secrets.token_hex(4)}"
            if workspace.export_dir.exists():
                workspace.export_dir.rename(old)
            part.rename(workspace.export_dir)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(part, ignore_errors=True)
    job.result = {"folder": str(workspace.export_dir), "overlay": overlay}
    return f"exported to {workspace.export_dir}"


def _write_export(workspace: Workspace, part: Path, method: str, job: Job, overlay: bool) -> None:
    (part / "masks").mkdir(parents=True)
    (part / "given").mkdir()
    for index in workspace.given_frames():
        shutil.copyfile(workspace.given_path(index), part / "given" / workspace.given_path(index).name)
    job.total = len(workspace)
    with contextlib.ExitStack() as stack:  # the overlay file appears only when every frame is in it
        size = workspace.reader.size
        writer = stack.enter_context(OverlayVideoWriter(part / "overlay.mp4", workspace.reader.fps, size)) \
            if overlay else None
        for index, frame in workspace.frames_from(0):
            job.check()
            source = workspace.result_path(index)
            shutil.copyfile(source, part / "masks" / source.name)
            if writer is not None:
                writer.write(overlay_frame(frame, read_mask(source)))
            job.advance(index + 1)
    command = ["vidseg", "segment", str(workspace.video), "--mask", str(workspace.export_dir / "given"),
               "--method", method, "--out", "masks-again/"]
    atomic_write_text(part / "command.txt", shlex.join(command) + "\n")
