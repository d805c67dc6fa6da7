"""Lazy video reading: a video file (.mp4/.avi/.mov/...) or a folder of frames.

Frames are decoded one at a time as RGB uint8 arrays, so memory does not depend on the video length.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from vidseg.errors import VidsegError
from vidseg.io.files import IMAGE_SUFFIXES, list_images

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
DEFAULT_FOLDER_FPS = 24.0


NAMED_SIZES = {"480p": (480, 854), "240p": (240, 427), "360p": (360, 640), "720p": (720, 1280)}


def parse_frame_size(text: str) -> tuple[int, int]:
    """``"256x448"`` -> (256, 448) (height, width); also ``480p`` (480x854) and friends. Raises ``ValueError``."""
    key = text.strip().lower()
    if key in NAMED_SIZES:
        return NAMED_SIZES[key]
    match = re.fullmatch(r"(\d+)\s*[x,]\s*(\d+)", key)
    if not match:
        raise ValueError(f"{text!r} is not HxW")
    return int(match.group(1)), int(match.group(2))


class VideoReader:
    """Read a video file or a frame folder lazily.

    Attributes:
        path: the video file or frame folder.
        frame_names: one name per frame: the file stems of a folder, ``00000``, ``00001``, ... for a file.
        fps: frames per second (a folder has no rate of its own; ``DEFAULT_FOLDER_FPS`` unless given).
        height, width: frame size in pixels.

    A file whose frame count cannot be read to the end (truncated or corrupt) is rejected when
    opened, before any output is produced. A folder whose frames differ in size is rejected too.
    """

    def __init__(self, path: str | os.PathLike, fps: float | None = None):
        self.path = Path(path)
        if not self.path.exists():
            raise VidsegError("video not found", self.path, "give a video file or a folder of frames")
        if self.path.is_dir():
            self._files = list_images(self.path, IMAGE_SUFFIXES)
            if not self._files:
                raise VidsegError(
                    "folder holds no .jpg/.png frames", self.path, "give a video file or a folder of frames"
                )
            self.frame_names = [p.stem for p in self._files]
            if len(set(self.frame_names)) != len(self.frame_names):
                raise VidsegError("two frames share a name stem (e.g. 1.jpg and 1.png)", self.path, "keep one format")
            self.height, self.width = self._check_folder_sizes()
            self.fps = float(fps or DEFAULT_FOLDER_FPS)
        else:
            if self.path.suffix.lower() not in VIDEO_SUFFIXES:
                raise VidsegError(
                    f"unsupported video type {self.path.suffix!r}",
                    self.path,
                    f"use {', '.join(VIDEO_SUFFIXES)} or a folder of frames",
                )
            self._files = []
            count, self.fps, self.height, self.width = self._probe_file()
            self.frame_names = [f"{i:05d}" for i in range(count)]
            if fps:
                self.fps = float(fps)

    def __len__(self) -> int:
        return len(self.frame_names)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.height, self.width

    def _check_folder_sizes(self) -> tuple[int, int]:
        sizes = {}
        for file in self._files:
            try:
                with Image.open(file) as image:
                    sizes.setdefault(image.size, file)
            except (UnidentifiedImageError, OSError):
                raise VidsegError("cannot read frame image", file, "remove or replace the file") from None
            if len(sizes) > 1:
                (w0, h0), first = next(iter(sizes.items()))
                raise VidsegError(
                    f"frame is {image.size[0]}x{image.size[1]} but {first.name} is {w0}x{h0}",
                    file,
                    "all frames of a folder must have the same size",
                )
        width, height = next(iter(sizes))
        return height, width

    def _probe_file(self) -> tuple[int, float, int, int]:
        capture = cv2.VideoCapture(str(self.path))
        try:
            if not capture.isOpened():
                raise VidsegError("cannot open video", self.path, "check that the file is a valid, complete video")
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            fps = capture.get(cv2.CAP_PROP_FPS) or DEFAULT_FOLDER_FPS
            ok, frame = capture.read()
            if not ok or frame is None:
                raise VidsegError("cannot decode the first frame", self.path, "the file is corrupt or truncated")
            height, width = frame.shape[:2]
            if count <= 0:
                count = self._count_by_decoding(capture) + 1
            elif count > 1:
                # A truncated file still reports its full length in the header; check the last frame.
                capture.set(cv2.CAP_PROP_POS_FRAMES, count - 1)
                ok, _ = capture.read()
                if not ok:
                    raise VidsegError(
                        f"header says {count} frames but the last one cannot be decoded",
                        self.path,
                        "the file is truncated or corrupt; re-encode or re-download it",
                    )
            return count, float(fps), height, width
        finally:
            capture.release()

    @staticmethod
    def _count_by_decoding(capture: cv2.VideoCapture) -> int:
        count = 0
        while capture.grab():
            count += 1
        return count

    def __iter__(self) -> Iterator[np.ndarray]:
        """Yield every frame as an (H, W, 3) uint8 RGB array."""
        return self.frames()

    def frames(self, start: int = 0) -> Iterator[np.ndarray]:
        """Yield frames from index ``start`` on."""
        if self._files:
            for file in self._files[start:]:
                yield self._read_image(file)
            return
        capture = cv2.VideoCapture(str(self.path))
        try:
            if start:
                capture.set(cv2.CAP_PROP_POS_FRAMES, start)
            for index in range(start, len(self)):
                ok, frame = capture.read()
                if not ok:
                    raise VidsegError(
                        f"frame {index} of {len(self)} cannot be decoded", self.path, "the file is truncated or corrupt"
                    )
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        finally:
            capture.release()

    def _read_image(self, file: Path) -> np.ndarray:
        try:
            with Image.open(file) as image:
                frame = np.asarray(image.convert("RGB"))
        except (UnidentifiedImageError, OSError):
            raise VidsegError("cannot decode frame image", file, "remove or replace the file") from None
        if frame.shape[:2] != (self.height, self.width):
            raise VidsegError(
                f"frame is {frame.shape[1]}x{frame.shape[0]}, not {self.width}x{self.height}", file, "resize the frames"
            )
        return frame
