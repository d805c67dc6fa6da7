"""Composite training clips from real videos: real objects cut out with their masks and pasted over real
backgrounds from other videos, so a model learns appearance from few annotated videos.

Each clip takes a background video (its own annotated object becomes object 1) and pastes 1..``max_pasted``
objects from other videos (objects 2, 3, ...). Every layer moves along a smooth path with changing scale and
rotation (the background through a slow "camera" affine); pasted objects keep their real articulation (their
source frames advance with the clip), occlude each other in a random depth order and may leave and re-enter
the frame. A ``still_fraction`` of the clips is made from single frames moved by smooth random affines only,
as S2S's online learning does with the first frame. Everything depends only on (seed, clip index).
:func:`write_composites` writes them in the DAVIS layout, so every loader and the clip sampler read them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from vidseg.data.sequence import VideoSequence
from vidseg.errors import VidsegError
from vidseg.io.atomic import atomic_write_text
from vidseg.io.masks import read_mask, write_mask


@dataclass(frozen=True)
class CompositeConfig:
    seed: int = 0
    num_frames: int = 24
    height: int = 240
    width: int = 432
    max_pasted: int = 3
    still_fraction: float = 0.25

    def __post_init__(self) -> None:
        if min(self.num_frames, self.height, self.width, self.max_pasted) < 1:
            raise VidsegError("composite num_frames, height, width and max_pasted must be positive")
        if not 0.0 <= self.still_fraction <= 1.0:
            raise VidsegError("composite still_fraction must lie in [0, 1]")


@dataclass(frozen=True)
class _Path:
    """A smooth 2-D similarity motion: centre, scale and rotation as functions of time."""

    start: np.ndarray
    velocity: np.ndarray
    wobble: np.ndarray  # amplitude (x, y) of a slow sine
    phase: float
    scale: float
    scale_rate: float
    angle: float  # degrees
    spin: float  # degrees per frame

    def at(self, t: int, period: float) -> tuple[np.ndarray, float, float]:
        centre = self.start + self.velocity * t + self.wobble * np.sin(2 * np.pi * t / period + self.phase)
        return centre, self.scale * (1.0 + self.scale_rate * t), self.angle + self.spin * t


def read_frame(sequence: VideoSequence, index: int) -> np.ndarray:
    with Image.open(sequence.frame_paths[index]) as image:
        return np.asarray(image.convert("RGB"))


def read_object(sequence: VideoSequence, index: int) -> np.ndarray:
    """Binary object mask (all annotated ids merged) of frame ``index``; void counts as background."""
    mask = read_mask(sequence.mask_paths[sequence.frame_names[index]])
    return ((mask > 0) & (mask < 255)).astype(np.float32)


class CompositeClip:
    """One composite clip over ``sources`` (annotated videos with frames); iterate for (frame, id mask)."""

    def __init__(self, sources: Sequence[VideoSequence], config: CompositeConfig, index: int):
        if len(sources) < 2:
            raise VidsegError("composite clips need at least two source videos")
        self.sources, self.config = list(sources), config
        self.rng = np.random.default_rng([config.seed, index])
        self.still = bool(self.rng.random() < config.still_fraction)
        picks = self.rng.permutation(len(self.sources))[: 1 + int(self.rng.integers(1, config.max_pasted + 1))]
        self.layers = [self._plan_layer(self.sources[int(i)], background=(k == 0)) for k, i in enumerate(picks)]

    def _frames_of(self, sequence: VideoSequence) -> list[int]:
        """Source frame index per clip frame (one frame when still; stride 1 or 2 otherwise)."""
        count = self.config.num_frames
        stride = 0 if self.still else int(self.rng.integers(1, 3))
        stride = min(stride, (len(sequence) - 1) // max(count - 1, 1))
        start = int(self.rng.integers(0, len(sequence) - stride * (count - 1)))
        return [start + stride * t for t in range(count)]

    def _plan_layer(self, sequence: VideoSequence, background: bool) -> dict:
        frames = self._frames_of(sequence)
        h, w = self.config.height, self.config.width
        rng = self.rng
        if background:  # fill the canvas, then drift slowly like a camera
            source = read_frame(sequence, frames[0])
            scale = max(h / source.shape[0], w / source.shape[1]) * rng.uniform(1.05, 1.3)
            motion = _Path(np.array([w / 2, h / 2]) + rng.uniform(-0.05, 0.05, 2) * [w, h],
                           rng.uniform(-0.004, 0.004, 2) * [w, h], rng.uniform(0, 0.02, 2) * [w, h],
                           rng.uniform(0, 2 * np.pi), scale, rng.uniform(-0.004, 0.004), rng.uniform(-3, 3),
                           rng.uniform(-0.15, 0.15))
            return {"sequence": sequence, "frames": frames, "motion": motion, "flip": bool(rng.random() < 0.5),
                    "anchor": None}
        first = read_object(sequence, frames[0])
        ys, xs = np.nonzero(first)
        if len(xs) == 0:
            size = max(first.shape)
            anchor = np.array([first.shape[1] / 2, first.shape[0] / 2])
        else:
            size = max(np.ptp(xs), np.ptp(ys)) + 1
            anchor = np.array([xs.mean(), ys.mean()])
        fast = 0.0 if self.still else 0.012
        motion = _Path(rng.uniform(0.15, 0.85, 2) * [w, h], rng.uniform(-1, 1, 2) * fast * w + rng.normal(0, 0.002, 2) * w,
                       rng.uniform(0, 0.08, 2) * [w, h], rng.uniform(0, 2 * np.pi),
                       rng.uniform(0.25, 0.6) * h / size, rng.uniform(-0.01, 0.01), rng.uniform(-20, 20),
                       rng.uniform(-1.0, 1.0))
        return {"sequence": sequence, "frames": frames, "motion": motion, "flip": bool(rng.random() < 0.5),
                "anchor": anchor}

    def _warp(self, layer: dict, t: int) -> tuple[np.ndarray, np.ndarray]:
        """The layer's frame and object mask of clip frame ``t`` on the canvas."""
        index = layer["frames"][t]
        image, mask = read_frame(layer["sequence"], index), read_object(layer["sequence"], index)
        if layer["flip"]:
            image, mask = image[:, ::-1], mask[:, ::-1]
        anchor = layer["anchor"]
        if anchor is None:
            anchor = np.array([image.shape[1] / 2, image.shape[0] / 2])
        elif layer["flip"]:
            anchor = np.array([image.shape[1] - 1 - anchor[0], anchor[1]])
        centre, scale, angle = layer["motion"].at(t, period=max(self.config.num_frames, 8) * 1.5)
        matrix = cv2.getRotationMatrix2D((float(anchor[0]), float(anchor[1])), angle, scale)
        matrix[:, 2] += centre - anchor
        size = (self.config.width, self.config.height)
        border = cv2.BORDER_REFLECT101 if layer["anchor"] is None else cv2.BORDER_CONSTANT
        warped = cv2.warpAffine(np.ascontiguousarray(image), matrix, size, flags=cv2.INTER_LINEAR, borderMode=border)
        alpha = cv2.warpAffine(np.ascontiguousarray(mask), matrix, size, flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT)
        return warped, alpha

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for t in range(self.config.num_frames):
            canvas, alpha = self._warp(self.layers[0], t)
            ids = np.where(alpha > 0.5, 1, 0).astype(np.uint8)
            frame = canvas.astype(np.float32)
            for object_id, layer in enumerate(self.layers[1:], start=2):
                image, alpha = self._warp(layer, t)
                frame = frame * (1 - alpha[..., None]) + image.astype(np.float32) * alpha[..., None]
                ids[alpha > 0.5] = object_id
            yield np.clip(frame + 0.5, 0, 255).astype(np.uint8), ids


def write_composites(
    root: str | os.PathLike, sources: Sequence[VideoSequence], num_videos: int, config: CompositeConfig,
    name_prefix: str = "composite",
) -> list[str]:
    """Write ``num_videos`` composite clips in the DAVIS layout (``JPEGImages/<h>p``, ``Annotations/<h>p``,
    ``ImageSets/2017/train.txt``) under ``root``; returns the sequence names."""
    root = Path(root)
    resolution = f"{config.height}p"
    names = [f"{name_prefix}{i:04d}" for i in range(num_videos)]
    for index, name in enumerate(names):
        images, masks = root / "JPEGImages" / resolution / name, root / "Annotations" / resolution / name
        images.mkdir(parents=True, exist_ok=True)
        for t, (frame, ids) in enumerate(CompositeClip(sources, config, index)):
            cv2.imwrite(str(images / f"{t:05d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_JPEG_QUALITY, 92])
            write_mask(masks / f"{t:05d}.png", ids)
    atomic_write_text(root / "ImageSets" / "2017" / "train.txt", "".join(f"{n}\n" for n in names))
    return names


__all__ = ["CompositeClip", "CompositeConfig", "read_frame", "read_object", "write_composites"]
