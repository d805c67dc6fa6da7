"""One video's work folder for ``vidseg app``.

Layout of ``ROOT/<stem>-<hash>/`` (one per video path; the hash keeps two videos of the same name apart):

* ``given/<frame>.png`` -- the masks the person painted, palette PNGs named after their frames: exactly what
  ``vidseg segment VIDEO --mask given/`` takes;
* ``masks/<frame>.png`` -- the propagated result; ``run.json`` says with which method and up to which frame it
  matches the given masks (``done``: frames ``0 .. done-1`` are current);
* ``snapshots/<index>.npz`` -- the session after frame ``index`` (:func:`vidseg.io.state_file.save_state`), every
  :meth:`Workspace.snapshot_interval` frames, at most :data:`MAX_SNAPSHOTS`: propagating again from a corrected
  frame restarts from the nearest one before it instead of from the first frame;
* ``frames/<frame>.jpg`` -- frames of a video file decoded once for the page (a frame folder is served as it is);
* ``export/`` -- the last export, swapped in whole.

A snapshot after frame ``s`` depends only on the method and the given masks of frames ``0 .. s``; changing the
given mask of frame ``k`` drops ``done`` to at most ``k`` and deletes the snapshots from ``k`` on, so what is left
is what an uninterrupted ``vidseg segment`` computes. Every file is written atomically; a propagation or an export
holds the folder's lock (a thread lock and, where the system has it, ``flock`` on ``.lock``), so two tabs or two
servers on one video cannot interleave their writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vidseg.constants import VOID_ID
from vidseg.data.own_video import MaskPrompt, load_prompts
from vidseg.errors import VidsegError
from vidseg.io.atomic import atomic_path, atomic_write_text
from vidseg.io.files import IMAGE_SUFFIXES, list_images
from vidseg.io.masks import object_ids, read_mask, write_mask
from vidseg.io.state_file import load_state, save_state
from vidseg.io.video import VideoReader

try:  # POSIX: a lock that also holds against another server process
    import fcntl
except ImportError:  # pragma: no cover -- Windows: the thread lock alone
    fcntl = None

SNAPSHOT_EVERY = 25  # frames between snapshots on short videos
MAX_SNAPSHOTS = 20  # longer videos space them out: the folder stays bounded whatever the length


class WorkspaceBusy(VidsegError):
    """The video's folder is locked by a running propagation or export (in this server or another)."""


def workspace_name(video: Path) -> str:
    """``<stem>-<8 hex of the resolved path>``, safe as a folder name and a URL part."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", video.stem or video.name)[:40].strip(".") or "video"
    return f"{stem}-{hashlib.sha1(str(video).encode()).hexdigest()[:8]}"


class Workspace:
    """The work folder of one video under ``root`` (created when missing)."""

    def __init__(self, root: str | os.PathLike, video: str | os.PathLike, snapshot_every: int = SNAPSHOT_EVERY):
        self.video = Path(video).expanduser().resolve()
        self.reader = VideoReader(self.video)
        self.id = workspace_name(self.video)
        self.folder = Path(root).resolve() / self.id
        self.frame_names = list(self.reader.frame_names)
        self.snapshot_every = snapshot_every
        self._index = {name: i for i, name in enumerate(self.frame_names)}
        self._sources = list_images(self.video, IMAGE_SUFFIXES) if self.video.is_dir() else None
        self._mutex = threading.Lock()
        self._state_lock = threading.Lock()  # run.json and the snapshots between a request and a job
        self._open_folder()

    def __len__(self) -> int:
        return len(self.frame_names)

    given_dir = property(lambda self: self.folder / "given")
    masks_dir = property(lambda self: self.folder / "masks")
    snapshots_dir = property(lambda self: self.folder / "snapshots")
    frames_dir = property(lambda self: self.folder / "frames")
    export_dir = property(lambda self: self.folder / "export")

    def _fingerprint(self) -> dict[str, Any]:
        stats = [p.stat() for p in self._sources] if self._sources is not None else [self.video.stat()]
        return {"video": str(self.video), "frames": self.frame_names, "size": list(self.reader.size),
                "bytes": sum(s.st_size for s in stats), "mtime_ns": max(s.st_mtime_ns for s in stats)}

    def _open_folder(self) -> None:
        """Create the folder; when the video changed since it was made, drop everything made for it."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            record = self.folder / "video.json"
            fingerprint = self._fingerprint()
            if record.is_file() and json.loads(record.read_text()) != fingerprint:
                for name in ("masks", "snapshots", "frames", "export", "given"):
                    shutil.rmtree(self.folder / name, ignore_errors=True)
                (self.folder / "run.json").unlink(missing_ok=True)
            atomic_write_text(record, json.dumps(fingerprint))
            self._sweep()
        except OSError as exc:
            raise VidsegError(f"cannot write the work folder ({exc.strerror or type(exc).__name__})", self.folder,
                              "choose a writable place with --work") from exc

    def _sweep(self) -> None:
        """Delete what a killed server left half-done (temporary files, unfinished exports) when nobody holds the
        folder; frame decoding runs without the lock, so ``frames/`` is left alone."""
        try:
            with self.locked():
                for pattern in (".*.tmp.*", "masks/.*.tmp.*", "given/.*.tmp.*", "snapshots/.*.tmp.*"):
                    for path in self.folder.glob(pattern):
                        path.unlink(missing_ok=True)
                for path in self.folder.glob(".export-*"):
                    shutil.rmtree(path, ignore_errors=True)
        except WorkspaceBusy:
            pass

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder for writing; :class:`WorkspaceBusy` at once when someone else holds it."""
        if not self._mutex.acquire(blocking=False):
            raise WorkspaceBusy("a propagation or export is running on this video (maybe in another tab)",
                                fix="wait for it or stop it")
        try:
            with open(self.folder / ".lock", "a") as handle:
                if fcntl is not None:
                    try:
                        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        raise WorkspaceBusy("another vidseg app is writing this video's work folder", self.folder,
                                            "wait for it or close it") from None
                yield
        finally:
            self._mutex.release()

    # -- frames ---------------------------------------------------------------------------------------------

    def frame_index(self, index: int) -> int:
        if not 0 <= index < len(self):
            raise VidsegError(f"no frame {index}: the video has {len(self)} frames")
        return index

    def frame_file(self, index: int) -> Path | None:
        """The image of frame ``index`` for the page: the folder's own file, or the decoded JPEG once written."""
        self.frame_index(index)
        if self._sources is not None:
            return self._sources[index]
        path = self.frames_dir / f"{self.frame_names[index]}.jpg"
        return path if path.is_file() else None

    def frames_ready(self) -> int:
        if self._sources is not None:
            return len(self)
        return sum(1 for _ in self.frames_dir.glob("*.jpg")) if self.frames_dir.is_dir() else 0

    def decode_frames(self, stop: threading.Event) -> None:
        """Write ``frames/<frame>.jpg`` for a video file (once; skipped for a frame folder)."""
        if self._sources is not None or (self.frames_dir / ".complete").is_file():
            return
        for name, frame in zip(self.frame_names, self.reader.frames()):
            if stop.is_set():
                return
            path = self.frames_dir / f"{name}.jpg"
            if not path.is_file():
                with atomic_path(path) as tmp:
                    Image.fromarray(frame).save(tmp, format="JPEG", quality=90)
        (self.frames_dir / ".complete").touch()

    def frames_from(self, first: int) -> Iterator[tuple[int, np.ndarray]]:
        """(index, RGB frame) from ``first`` on. A video file is decoded from its start, as ``segment`` reads it:
        seeking a compressed stream may land on another frame."""
        if self._sources is not None:
            yield from enumerate(self.reader.frames(first), start=first)
            return
        for index, frame in enumerate(self.reader.frames()):
            if index >= first:
                yield index, frame

    # -- given masks ----------------------------------------------------------------------------------------

    def given_frames(self) -> list[int]:
        if not self.given_dir.is_dir():
            return []
        return sorted(self._index[p.stem] for p in self.given_dir.glob("*.png") if p.stem in self._index)

    def prompts(self) -> dict[int, MaskPrompt]:
        """The given masks as ``segment`` reads them (:func:`vidseg.data.own_video.load_prompts`)."""
        if not self.given_frames():
            return {}
        return load_prompts([self.given_dir], self.frame_names, self.reader.size)

    def given_path(self, index: int) -> Path:
        return self.given_dir / f"{self.frame_names[self.frame_index(index)]}.png"

    def save_given(self, index: int, mask: np.ndarray) -> None:
        """Make ``mask`` the given mask of frame ``index`` (an empty one removes it); later results go stale."""
        if mask.shape != tuple(self.reader.size) or mask.dtype != np.uint8:
            raise VidsegError(f"a mask of frame {index} must be {self.reader.width}x{self.reader.height} ids")
        with self.locked():
            path = self.given_path(index)
            if object_ids(mask):
                write_mask(path, mask)
            else:
                path.unlink(missing_ok=True)
            self.invalidate(index)

    def remove_object(self, object_id: int) -> None:
        """Erase ``object_id`` from every given mask (from the first frame that had it, results go stale)."""
        if not 0 < object_id < VOID_ID:
            raise VidsegError(f"object ids are 1..{VOID_ID - 1}, not {object_id}")
        with self.locked():
            changed = []
            for index in self.given_frames():
                path = self.given_path(index)
                mask = read_mask(path)
                if (mask == object_id).any():
                    mask[mask == object_id] = 0
                    if object_ids(mask):
                        write_mask(path, mask)
                    else:
                        path.unlink()
                    changed.append(index)
            if changed:
                self.invalidate(changed[0])

    # -- the result and where it stands ---------------------------------------------------------------------

    def run_record(self) -> dict[str, Any]:
        """``{"method": name or None, "done": frames whose result is current}``."""
        try:
            record = json.loads((self.folder / "run.json").read_text())
            return {"method": str(record["method"]), "done": max(0, min(int(record["done"]), len(self)))}
        except (OSError, ValueError, KeyError, TypeError):
            return {"method": None, "done": 0}

    def _write_record(self, method: str | None, done: int) -> None:
        atomic_write_text(self.folder / "run.json", json.dumps({"method": method, "done": done}))

    def invalidate(self, index: int) -> None:
        """The given mask of frame ``index`` changed: results from it on are stale, and so are the snapshots."""
        with self._state_lock:
            record = self.run_record()
            if record["done"] > index:
                self._write_record(record["method"], index)
            for number, path in self._snapshots():
                if number >= index:
                    path.unlink(missing_ok=True)

    def begin_run(self, method: str) -> int:
        """The first frame a propagation with ``method`` must compute (0 when the last one used another method)."""
        with self._state_lock:
            record = self.run_record()
            if record["method"] != method:
                shutil.rmtree(self.snapshots_dir, ignore_errors=True)
                self._write_record(method, 0)
                return 0
            return record["done"]

    def set_done(self, method: str, done: int) -> None:
        with self._state_lock:
            self._write_record(method, done)

    def result_path(self, index: int) -> Path:
        return self.masks_dir / f"{self.frame_names[self.frame_index(index)]}.png"

    def display_mask(self, index: int) -> tuple[np.ndarray | None, str]:
        """What the page shows on frame ``index`` and what it is: ``result`` (current), ``given`` (painted, not yet
        propagated), ``stale`` (an older result) or ``none``."""
        result, given = self.result_path(index), self.given_path(index)
        current = index < self.run_record()["done"]
        for path, kind in ((result, "result"), (given, "given"), (result, "stale")):
            if (kind != "result" or current) and path.is_file():
                try:
                    return read_mask(path), kind
                except VidsegError:  # replaced while read: show the next best
                    continue
        return None, "none"

    # -- snapshots ------------------------------------------------------------------------------------------

    def snapshot_interval(self) -> int:
        return max(self.snapshot_every, math.ceil(len(self) / MAX_SNAPSHOTS))

    def snapshot_due(self, index: int) -> bool:
        return (index + 1) % self.snapshot_interval() == 0 and index + 1 < len(self)

    def _snapshots(self) -> list[tuple[int, Path]]:
        if not self.snapshots_dir.is_dir():
            return []
        found = [(int(p.stem), p) for p in self.snapshots_dir.glob("*.npz") if p.stem.isdigit()]
        return sorted(found)

    def save_snapshot(self, index: int, method: str, session_state: dict[str, Any]) -> None:
        save_state(self.snapshots_dir / f"{index:06d}.npz", {"method": method, "session": session_state})

    def nearest_snapshot(self, last: int, method: str) -> tuple[int, dict[str, Any] | None]:
        """(first frame to step, session state to load): the latest snapshot after a frame at most ``last``, or
        (0, None) to start from the first frame. An unreadable snapshot is deleted and the one before it tried."""
        for number, path in reversed(self._snapshots()):
            if number > last:
                continue
            try:
                saved = load_state(path)
                if saved["method"] == method and int(saved["session"]["frame_index"]) == number:
                    return number + 1, saved["session"]
            except (ValueError, KeyError, TypeError):
                pass
            path.unlink(missing_ok=True)
        return 0, None

    def info(self) -> dict[str, Any]:
        record = self.run_record()
        return {"id": self.id, "name": self.video.name, "path": str(self.video), "folder": str(self.folder),
                "frames": self.frame_names, "width": self.reader.width, "height": self.reader.height,
                "fps": self.reader.fps, "given": self.given_frames(), "done": record["done"],
                "method": record["method"], "frames_ready": self.frames_ready(),
                "exported": (self.export_dir / "command.txt").is_file()}
