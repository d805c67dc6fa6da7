"""Synth output folders: the ``vidseg_synth.json`` marker, claiming a folder, JPEG frames, visibility.

Only missing or empty folders and previous synth outputs (recognised by their marker) are written into,
and a rerun removes exactly what the previous run listed in its marker.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from vidseg.data.synth.config import SynthConfig
from vidseg.errors import VidsegError
from vidseg.io.atomic import atomic_path, atomic_write_text

MARKER_NAME = "vidseg_synth.json"
"""File written at the root of every synth output; its presence marks the folder as re-writable."""

GENERATOR = "vidseg data synth"


def _read_marker(root: Path) -> dict | None:
    marker = root / MARKER_NAME
    if not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("generator") != GENERATOR:
        return None
    return data


def check_output_folder(root: str | os.PathLike) -> None:
    """Raise :class:`VidsegError` unless ``root`` is missing, an empty folder or a previous synth output."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise VidsegError("output path exists and is not a folder", root, "choose a folder path")
    if root.is_dir() and _read_marker(root) is None and any(True for _ in root.iterdir()):
        raise VidsegError(
            "output folder is not empty and is not a vidseg synth output", root, "choose a new or empty folder"
        )


def _claim_folder(root: Path) -> dict | None:
    """Make sure ``root`` may be written: missing, empty, or a previous synth output (its marker returned)."""
    check_output_folder(root)
    marker = _read_marker(root) if root.is_dir() else None
    if marker is not None:
        return marker
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VidsegError(f"cannot create output folder ({exc.strerror})", root) from None
    return None


_OWNED_SUFFIXES = (".jpg", ".png", ".mp4", ".txt", ".json")


def _remove_entries(root: Path, entries: Sequence[str]) -> None:
    """Delete what a previous synth run wrote: the files listed, and the frame/mask files of the folders listed."""
    base = root.resolve()
    for rel in entries:
        rel_path = Path(str(rel))
        if rel_path.is_absolute() or ".." in rel_path.parts or not rel_path.parts:
            continue
        path = root / rel_path
        if not path.resolve().is_relative_to(base):
            continue
        if path.is_file():
            if path.suffix.lower() in _OWNED_SUFFIXES and path.name != MARKER_NAME:
                path.unlink()
        elif path.is_dir():
            for child in path.iterdir():
                if child.is_file() and child.suffix.lower() in _OWNED_SUFFIXES:
                    child.unlink()
        parent = path if path.is_dir() else path.parent
        while parent != root and parent.is_dir():
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent


def _write_marker(root: Path, layout: str, complete: bool, entries: list[str], config: SynthConfig, extra: dict) -> None:
    data = {
        "generator": GENERATOR,
        "format": 1,
        "layout": layout,
        "complete": complete,
        "config": config.to_json(),
        "entries": entries,
        **extra,
    }
    atomic_write_text(root / MARKER_NAME, json.dumps(data, indent=1) + "\n")


def _write_jpeg(path: Path, frame: np.ndarray, quality: int) -> None:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise VidsegError("cannot encode JPEG frame", path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.tobytes())


class _Visibility:
    """Per-object first appearance and absence runs, measured on the generated masks."""

    def __init__(self, ids: Sequence[int]):
        self.ids = list(ids)
        self.first: dict[int, int | None] = {i: None for i in self.ids}
        self.last_seen: dict[int, int] = {}
        self.absent: dict[int, list[list[int]]] = {i: [] for i in self.ids}
        self.frames = 0

    def update(self, t: int, mask: np.ndarray) -> np.ndarray:
        present = cv2.calcHist([mask], [0], None, [256], [0, 256]).ravel() > 0
        for i in self.ids:
            if present[i]:
                if self.first[i] is None:
                    self.first[i] = t
                elif self.last_seen[i] < t - 1:
                    self.absent[i].append([self.last_seen[i] + 1, t])
                self.last_seen[i] = t
        self.frames = t + 1
        return present

    def to_json(self) -> dict:
        """``{id: {"first_frame": f, "absent_runs": [[start, end), ...]}}``; a run may end at the clip end."""
        out = {}
        for i in self.ids:
            runs = [list(r) for r in self.absent[i]]
            last = self.last_seen.get(i)
            if last is not None and last < self.frames - 1:
                runs.append([last + 1, self.frames])
            out[str(i)] = {"first_frame": self.first[i], "absent_runs": runs}
        return out


def _start_output(root: Path, layout: str, entries: list[str], config: SynthConfig) -> None:
    previous = _claim_folder(root)
    if previous is not None:
        _remove_entries(root, previous.get("entries", []))
    # written first, so that an interrupted run leaves a folder that the next run may overwrite
    _write_marker(root, layout, False, entries, config, {})
