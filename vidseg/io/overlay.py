"""Overlay masks on frames (colour by object id, optional contours) and write overlay videos."""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np

from vidseg.constants import VOID_ID
from vidseg.errors import VidsegError
from vidseg.io.atomic import atomic_path
from vidseg.io.masks import DAVIS_PALETTE

_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG"}


def overlay_frame(frame: np.ndarray, mask: np.ndarray, alpha: float = 0.5, contours: bool = True) -> np.ndarray:
    """Blend the palette colour of every object into an RGB frame; draw each object's outline."""
    if frame.shape[:2] != mask.shape:
        raise ValueError(f"frame {frame.shape[:2]} and mask {mask.shape} differ in size")
    labelled = (mask > 0) & (mask != VOID_ID)
    out = frame.copy()
    colours = DAVIS_PALETTE[mask]
    out[labelled] = ((1 - alpha) * frame[labelled] + alpha * colours[labelled]).astype(np.uint8)
    if contours:
        for object_id in np.unique(mask[labelled]):
            binary = (mask == object_id).astype(np.uint8)
            outline, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            colour = tuple(int(c) for c in DAVIS_PALETTE[object_id])
            cv2.drawContours(out, outline, -1, colour, thickness=2)
    return out


class OverlayVideoWriter:
    """Write RGB frames to a video file; the file appears only when the writer closes cleanly.

    Use as a context manager: on an exception the partial video is deleted.
    """

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int]):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in _FOURCC:
            raise VidsegError(f"unsupported overlay video type {suffix!r}", self.path, "use .mp4 or .avi")
        self.height, self.width = size
        self._atomic = atomic_path(self.path)
        self._tmp = self._atomic.__enter__()
        self._writer = cv2.VideoWriter(
            str(self._tmp), cv2.VideoWriter_fourcc(*_FOURCC[suffix]), float(fps), (self.width, self.height)
        )
        if not self._writer.isOpened():
            self._atomic.__exit__(RuntimeError, RuntimeError("writer"), None)
            raise VidsegError("OpenCV cannot write this video", self.path, "try an .avi path")

    def write(self, frame_rgb: np.ndarray) -> None:
        self._writer.write(cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR))

    def __enter__(self) -> OverlayVideoWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._writer.release()
        self._atomic.__exit__(exc_type, exc, tb)
