"""A person's own video plus one or more mask PNGs.

Which frame a mask belongs to is read from its file name: ``00042.png`` (or ``frame_00042.png`` when
the frames are named so) is the mask of the frame with the same stem. A single mask whose name
matches no frame is the mask of the first frame. A folder of masks may be given instead of files.
An object may be given first at a later frame; giving an id again re-initialises that object.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidseg.errors import VidsegError
from vidseg.io.files import list_images
from vidseg.io.masks import object_ids, read_mask
from vidseg.io.video import VideoReader


@dataclass(frozen=True)
class MaskPrompt:
    """The mask given for one frame."""

    frame_index: int
    mask: np.ndarray
    path: Path

    @property
    def object_ids(self) -> list[int]:
        return object_ids(self.mask)


def _expand(mask_paths: Sequence[str | os.PathLike]) -> list[Path]:
    files: list[Path] = []
    for entry in map(Path, mask_paths):
        if entry.is_dir():
            found = list_images(entry, (".png",))
            if not found:
                raise VidsegError("mask folder holds no .png files", entry)
            files.extend(found)
        else:
            files.append(entry)
    return files


def load_prompts(
    mask_paths: Sequence[str | os.PathLike], frame_names: Sequence[str], size: tuple[int, int]
) -> dict[int, MaskPrompt]:
    """Read the given masks and assign each to its frame; validate size and content.

    Returns a dict frame index -> MaskPrompt, ordered by frame.
    """
    files = _expand(mask_paths)
    if not files:
        raise VidsegError("no mask given", fix="pass --mask FIRST.png")
    index_of = {name: i for i, name in enumerate(frame_names)}
    prompts: dict[int, MaskPrompt] = {}
    for file in files:
        frame_index = index_of.get(file.stem)
        if frame_index is None:
            if len(files) > 1:
                raise VidsegError(
                    "mask name matches no frame name",
                    file,
                    f"name each mask after its frame, e.g. {frame_names[0]}.png",
                )
            frame_index = 0
        mask = fit_mask(read_mask(file), tuple(size), file)
        if frame_index in prompts:
            raise VidsegError(f"two masks for frame {frame_names[frame_index]}", file)
        prompts[frame_index] = MaskPrompt(frame_index, mask, file)
    ordered = dict(sorted(prompts.items()))
    first = next(iter(ordered.values()))
    if not first.object_ids:
        raise VidsegError(
            "the first mask contains no object (only background/void)", first.path, "draw at least one object id 1..254"
        )
    return ordered


SIZE_TOLERANCE = 2  # pixels: video writers crop odd sizes (OpenCV's mp4 writer drops a column)


def fit_mask(mask: np.ndarray, size: tuple[int, int], path: str | os.PathLike) -> np.ndarray:
    """``mask`` at the frames' ``size``: padded with background / cropped at the bottom and right when the sizes
    differ by at most :data:`SIZE_TOLERANCE` pixels (with a warning); a clear error when they differ more."""
    if mask.shape == size:
        return mask
    (height, width), (mask_height, mask_width) = size, mask.shape
    if max(abs(height - mask_height), abs(width - mask_width)) > SIZE_TOLERANCE:
        raise VidsegError(f"mask is {mask_width}x{mask_height} but the frames are {width}x{height}", path,
                          "resize the mask with nearest-neighbour to the frame size")
    warnings.warn(f"{path}: mask is {mask_width}x{mask_height}, the frames {width}x{height}; padded/cropped at the "
                  "bottom and right edges to fit", stacklevel=2)
    fitted = np.zeros(size, mask.dtype)
    fitted[: min(height, mask_height), : min(width, mask_width)] = mask[:height, :width]
    return fitted


class OwnVideo:
    """A video (file or frame folder) with the masks a user gave for some of its frames (none: a method
    that discovers objects finds them)."""

    def __init__(
        self, video: str | os.PathLike, masks: Sequence[str | os.PathLike] = (), fps: float | None = None
    ):
        self.reader = VideoReader(video, fps=fps)
        self.prompts = load_prompts(masks, self.reader.frame_names, self.reader.size) if masks else {}

    @property
    def first_prompted_frame(self) -> int | None:
        return next(iter(self.prompts), None)

    @property
    def object_ids(self) -> list[int]:
        return sorted({i for prompt in self.prompts.values() for i in prompt.object_ids})
