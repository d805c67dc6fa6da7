"""Segment a whole video from the user's masks and write the results to disk."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vidseg.data.own_video import OwnVideo
from vidseg.errors import VidsegError
from vidseg.inference.methods import build_propagator, choose_default_method
from vidseg.inference.session import InferenceSession, Propagator
from vidseg.io.masks import read_mask, write_mask
from vidseg.io.overlay import OverlayVideoWriter, overlay_frame
from vidseg.io.pipeline import WriteBehind, read_ahead
from vidseg.io.state_file import load_state, save_state


@dataclass(frozen=True)
class SegmentResult:
    method: str
    num_frames: int
    object_ids: list[int]
    seconds: float
    mask_dir: Path
    overlay: Path | None
    resumed_at: int = 0  # frames done by an earlier, interrupted run

    @property
    def frames_per_second(self) -> float:
        done = self.num_frames - self.resumed_at
        return done / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        resumed = f" (resumed at frame {self.resumed_at})" if self.resumed_at else ""
        text = (
            f"segmented {self.num_frames} frames{resumed}, {len(self.object_ids)} object(s) with '{self.method}' "
            f"at {self.frames_per_second:.1f} frames/s; masks in {self.mask_dir}"
        )
        return text + (f", overlay {self.overlay}" if self.overlay else "")


RESUME_FILE = ".vidseg-resume.npz"


def _discovering_hint() -> str:
    from vidseg.registry import zero_shot_methods

    found = zero_shot_methods()
    if found:
        return f"pass --mask FIRST.png, or use a method that discovers objects: {', '.join(found)}"
    return "pass --mask FIRST.png; no installed method discovers objects"


def _atomic_target(temporary_name: str) -> str:
    """The file a temporary file of :func:`vidseg.io.atomic.atomic_path` was for:
    ``.00012.k3j_x.tmp.png`` -> ``00012.png``."""
    stem = temporary_name[1:].split(".tmp.")[0].rsplit(".", 1)[0]
    return f"{stem}.{temporary_name.rsplit('.', 1)[-1]}"


def _prepare_output(out_dir: Path, frame_names: list[str], overwrite: bool, resume: bool) -> bool:
    """Check the output folder; return True when this run creates it."""
    if out_dir.exists() and not out_dir.is_dir():
        raise VidsegError("output path exists and is not a folder", out_dir, "choose a folder path for --out")
    if not out_dir.exists():
        return True
    ours = {f"{name}.png" for name in frame_names} | {RESUME_FILE}
    if overwrite or resume:  # temporary files of a run killed while writing
        for path in out_dir.glob(".*.tmp.*"):
            if _atomic_target(path.name) in ours:
                path.unlink()
    existing = [p.name for p in out_dir.iterdir()]
    foreign = sorted(name for name in existing if name not in ours)
    if foreign:
        raise VidsegError(
            f"output folder holds other files (e.g. {foreign[0]})", out_dir, "choose an empty or new folder for --out"
        )
    if existing and not (overwrite or resume):
        hint = "pass --resume to continue the interrupted run, " if RESUME_FILE in existing else ""
        raise VidsegError("output folder already holds masks", out_dir, f"{hint}pass --overwrite or choose a new folder")
    return False


def _resume_key(video: str | os.PathLike, masks: list[str | os.PathLike], num_frames: int, method: str) -> dict:
    """What a resume point must match: the same video, masks and method."""
    return {
        "video": str(Path(video).resolve()),
        "masks": [str(Path(m).resolve()) for m in masks],
        "num_frames": num_frames,
        "method": method,
    }


def _write_resume_point(out_dir: Path, key: dict, session_state: dict) -> None:
    save_state(out_dir / RESUME_FILE, {**key, "session": session_state})


def _read_resume_point(out_dir: Path, key: dict) -> dict | None:
    """The saved session of an interrupted run in ``out_dir`` (None when there is none)."""
    path = out_dir / RESUME_FILE
    if not path.is_file():
        return None
    try:
        saved = load_state(path)
        if not isinstance(saved, dict) or "session" not in saved:
            raise ValueError("no saved session")
    except ValueError as exc:
        raise VidsegError(f"cannot read the resume point ({exc})", path, "pass --overwrite to start again") from exc
    for name, value in key.items():
        if saved.get(name) != value:
            what = {"video": "video", "masks": "masks", "num_frames": "number of frames", "method": "method"}[name]
            raise VidsegError(
                f"the interrupted run used another {what} ({saved.get(name)!r}, now {value!r})",
                out_dir,
                "resume with the same video, --mask and --method, or pass --overwrite to start again",
            )
    return saved["session"]


def _resume_session(session: InferenceSession, out_dir: Path, key: dict, frame_names: list[str]) -> int:
    """Load the interrupted run's session into ``session``; return the first frame still to do (0 when the
    run never saved one)."""
    saved = _read_resume_point(out_dir, key)
    if saved is None:
        if all((out_dir / f"{n}.png").is_file() for n in frame_names):
            raise VidsegError("the run in this folder is already complete", out_dir, "pass --overwrite to redo it")
        return 0
    try:
        session.load_state_dict(saved)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise VidsegError(f"cannot continue the interrupted run ({exc})", out_dir / RESUME_FILE,
                          "resume with the same settings, or pass --overwrite to start again") from exc
    first = session.frame_index + 1
    missing = [n for n in frame_names[:first] if not (out_dir / f"{n}.png").is_file()]
    if missing:
        raise VidsegError(f"mask {missing[0]}.png of a finished frame is missing", out_dir,
                          "pass --overwrite to start again")
    return first


def _try_write_resume_point(out_dir: Path, key: dict, state: dict) -> bool:
    try:
        _write_resume_point(out_dir, key, state)
    except OSError:  # e.g. the disk that just filled up
        return False
    return True


def _os_error(exc: OSError, out_dir: Path) -> VidsegError:
    """A file-system failure (read-only place, full disk, ...) as one line naming the file."""
    where = exc.filename or out_dir
    reason = exc.strerror or type(exc).__name__
    return VidsegError(f"cannot write ({reason})", where, "free some space or choose a writable --out / --overlay")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`segment_video`; its text says what was kept and how to continue."""


def _kept(exc: BaseException, done: int, out_dir: Path, saved: bool) -> BaseException:
    """``exc`` with what was kept and how to continue added to its message."""
    hint = (f"{done} masks kept in {out_dir}; " + ("rerun the same command with --resume" if saved else
            "the resume point could not be written: rerun with --overwrite"))
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted(hint)
    error = _os_error(exc, out_dir) if isinstance(exc, OSError) else exc
    if isinstance(error, VidsegError):
        return VidsegError(f"{error}; {hint}")
    return error


def segment_video(
    video: str | os.PathLike,
    masks: list[str | os.PathLike] | None,
    out_dir: str | os.PathLike,
    method: str | Propagator | None = None,
    overlay: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
    resume: bool = False,
    save_every: int = 100,
    labels: bool = False,
    on_frame: Callable[[], None] | None = None,
) -> SegmentResult:
    """Segment ``video`` from the given masks; write one palette PNG per frame into ``out_dir``.

    Masks are named after the frame they belong to (a single mask belongs to the first frame; see
    :mod:`vidseg.data.own_video`). Frames before the first mask get empty masks. Without masks the method
    must discover objects (:mod:`vidseg.registry` ``zero_shot``). ``method`` None: the best runnable one. On any
    failure after the first mask (Ctrl-C: :class:`Interrupted`; a bad frame; a full disk) the masks written so far are
    kept and the session after the last written mask is saved in ``out_dir/.vidseg-resume.npz`` (also every
    ``save_every`` frames, for harder stops), and the error says so; ``resume=True`` continues from there with the
    same masks an uninterrupted run writes. A failure before any mask leaves no output folder behind. ``labels``
    writes each frame's name on the overlay. ``on_frame`` is called after each frame (for a caller's progress).
    """
    masks = list(masks or [])
    source = OwnVideo(video, masks)
    reader = source.reader
    if method is None:
        method = choose_default_method(zero_shot=not masks).name
    propagator = build_propagator(method) if isinstance(method, str) else method
    if not masks and not propagator.discovers_objects:
        raise VidsegError(f"method {propagator.name!r} needs the mask of each object (it cannot discover objects)",
                          fix=_discovering_hint())
    out_dir = Path(out_dir)
    created = _prepare_output(out_dir, reader.frame_names, overwrite, resume)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _os_error(exc, out_dir) from exc
    key = _resume_key(video, masks, len(reader), propagator.name)
    session = InferenceSession(propagator)
    first = _resume_session(session, out_dir, key, reader.frame_names) if resume else 0
    written: list[Path] = []
    start = time.perf_counter()
    # What is on disk: the last frame whose mask was written and the session after it (the writer thread sets it).
    done = {"index": first - 1, "state": session.state_dict() if first else None}

    def on_written(token: tuple[int, dict]) -> None:
        done["index"], done["state"] = token
        index = token[0]
        if save_every and (index + 1) % save_every == 0 and index + 1 < len(reader):
            _write_resume_point(out_dir, key, token[1])

    try:
        with contextlib.ExitStack() as stack:
            overlay_writer = (
                stack.enter_context(OverlayVideoWriter(overlay, reader.fps, reader.size)) if overlay else None
            )

            def write(path: Path, mask: np.ndarray, frame: np.ndarray, name: str) -> None:
                write_mask(path, mask)
                written.append(path)
                if overlay_writer is not None:
                    overlay_writer.write(overlay_frame(frame, mask, label=name if labels else None))

            bar = tqdm(
                zip(reader.frame_names, read_ahead(reader.frames())),
                total=len(reader),
                unit="frame",
                desc=Path(video).name,
                disable=not progress,
                dynamic_ncols=True,
            )
            # The next frame decodes and the last mask is written on threads while the network runs.
            writer = WriteBehind(write, on_written)
            try:
                for index, (name, frame) in enumerate(bar):
                    path = out_dir / f"{name}.png"
                    if index < first:  # done before the interruption
                        if overlay_writer is not None:
                            overlay_writer.write(overlay_frame(frame, read_mask(path), label=name if labels else None))
                    else:
                        prompt = source.prompts.get(index)
                        mask = session.step(frame, None if prompt is None else prompt.mask)
                        writer.put((index, session.state_dict()), path, mask, frame, name)
                    if on_frame is not None:
                        on_frame()
            except BaseException:
                writer.drain()  # what is queued is finished: those masks are complete files
                raise
            writer.close()
    except BaseException as exc:
        if done["state"] is not None and done["index"] + 1 < len(reader):
            # The masks written so far are complete files: keep them, and save where to continue.
            saved = _try_write_resume_point(out_dir, key, done["state"])
            raise _kept(exc, done["index"] + 1, out_dir, saved) from exc
        if created and not written:
            shutil.rmtree(out_dir, ignore_errors=True)
        if isinstance(exc, OSError):
            raise _os_error(exc, out_dir) from exc
        raise
    (out_dir / RESUME_FILE).unlink(missing_ok=True)
    return SegmentResult(
        method=propagator.name,
        num_frames=len(reader),
        object_ids=sorted(session.objects.used_ids),
        seconds=time.perf_counter() - start,
        mask_dir=out_dir,
        overlay=Path(overlay) if overlay else None,
        resumed_at=first,
    )
