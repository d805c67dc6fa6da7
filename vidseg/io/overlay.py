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
_H264 = {".mp4", ".m4v", ".mov"}  # written as H.264 (plays in browsers) when imageio-ffmpeg is installed


def overlay_frame(
    frame: np.ndarray, mask: np.ndarray, alpha: float = 0.4, contours: bool = True, label: str | None = None
) -> np.ndarray:
    """Blend the palette colour of every object into an RGB frame and outline it (white, then a brightened palette
    colour on top, so an outline shows on objects of any colour, the DAVIS dark red on red objects too); ``label``
    (e.g. the frame name) is written in the top-left corner."""
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
            colour = tuple(int(c) for c in np.clip(DAVIS_PALETTE[object_id].astype(int) * 2 + 40, 0, 255))
            cv2.drawContours(out, outline, -1, (255, 255, 255), thickness=3)
            cv2.drawContours(out, outline, -1, colour, thickness=1)
    if label:
        scale = max(0.4, frame.shape[0] / 600)
        for colour, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):  # white on a black edge: readable anywhere
            cv2.putText(out, label, (6, int(22 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness,
                        cv2.LINE_AA)
    return out


class OverlayVideoWriter:
    """Write RGB frames to a video file; the file appears only when the writer closes cleanly.

    ``.mp4`` / ``.m4v`` / ``.mov`` are H.264 (yuv420p, plays in browsers and editors) through the ffmpeg of the
    ``imageio-ffmpeg`` package, frames padded to even sizes; without that package, OpenCV's MPEG-4 Part 2.
    ``.avi`` is Motion-JPEG. Use as a context manager: on an exception the partial video is deleted.
    """

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int]):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in _FOURCC:
            raise VidsegError(f"unsupported overlay video type {suffix!r}", self.path, "use .mp4 or .avi")
        self.height, self.width = size
        self._atomic = atomic_path(self.path)
        self._tmp = self._atomic.__enter__()
        self._ffmpeg = _h264_writer(self._tmp, fps, size) if suffix in _H264 else None
        self.codec = "h264" if self._ffmpeg is not None else _FOURCC[suffix]
        self._writer = None
        if self._ffmpeg is None:
            fourcc = cv2.VideoWriter_fourcc(*_FOURCC[suffix])
            self._writer = cv2.VideoWriter(str(self._tmp), fourcc, float(fps), (self.width, self.height))
            if not self._writer.isOpened():
                self._atomic.__exit__(RuntimeError, RuntimeError("writer"), None)
                raise VidsegError("OpenCV cannot write this video", self.path, "try an .avi path")

    def write(self, frame_rgb: np.ndarray) -> None:
        if self._ffmpeg is not None:
            pad = ((0, self.height % 2), (0, self.width % 2), (0, 0))
            self._ffmpeg.send(np.ascontiguousarray(np.pad(frame_rgb, pad, mode="edge")).tobytes())
        else:
            self._writer.write(cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR))

    def __enter__(self) -> OverlayVideoWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._ffmpeg is not None:
            self._ffmpeg.close()
        else:
            self._writer.release()
        self._atomic.__exit__(exc_type, exc, tb)


def _h264_writer(path: Path, fps: float, size: tuple[int, int]):
    """A started imageio-ffmpeg frame writer (H.264, even size), or None when the package is missing."""
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    height, width = size
    writer = imageio_ffmpeg.write_frames(
        str(path), (width + width % 2, height + height % 2), fps=float(fps), codec="libx264", pix_fmt_out="yuv420p",
        macro_block_size=1, ffmpeg_log_level="error", output_params=["-movflags", "+faststart"],
    )
    writer.send(None)  # start ffmpeg
    return writer
