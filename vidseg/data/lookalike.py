"""Two-object clips made from annotated videos, to measure whether a mask stays on its own object.

- :func:`lookalike_clip`: a video with its own object, mirrored left-right and ``delay`` frames later, pasted in
  front as object 2: the distractor is the same instance (appearance, texture, size), seen in another pose. The
  failure it measures is the one frozen features show on a herd, a crowd or a flock.
- :func:`crossing_clip`: a video's object (1) with another video's object (2) pasted in front at the same size,
  sliding horizontally through it, so the two cross near the middle of the clip: it measures which object keeps
  which mask after they overlap.

:func:`write_two_object_set` writes such clips in the DAVIS layout (2017 multi-object ids), readable by every
loader, ``vidseg predict`` and ``vidseg eval``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from vidseg.data.composite import read_frame, read_object
from vidseg.data.sequence import VideoSequence
from vidseg.errors import VidsegError
from vidseg.io.atomic import atomic_write_text
from vidseg.io.masks import write_mask

Clip = Iterator[tuple[np.ndarray, np.ndarray]]  # (RGB frame, id mask) per frame


def _paste(frame: np.ndarray, ids: np.ndarray, image: np.ndarray, alpha: np.ndarray) -> None:
    """``image`` over ``frame`` where ``alpha`` (soft, [0, 1]); its pixels become object 2 in ``ids`` (in place)."""
    blended = frame.astype(np.float32) * (1 - alpha[..., None]) + image.astype(np.float32) * alpha[..., None]
    frame[:] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    ids[alpha > 0.5] = 2


def lookalike_clip(sequence: VideoSequence, delay: int = 12) -> Clip:
    """``len(sequence) - delay`` frames: frame ``t`` with frame ``t + delay`` mirrored pasted over it (see the
    module docstring)."""
    if len(sequence) <= delay:
        raise VidsegError(f"sequence {sequence.name!r} has {len(sequence)} frames, not more than the delay {delay}")
    for t in range(len(sequence) - delay):
        frame, own = read_frame(sequence, t).copy(), read_object(sequence, t)
        ids = (own > 0.5).astype(np.uint8)
        later = np.ascontiguousarray(read_frame(sequence, t + delay)[:, ::-1])
        _paste(frame, ids, later, np.ascontiguousarray(read_object(sequence, t + delay)[:, ::-1]))
        yield frame, ids


def _box(mask: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre (x, y) and height of the object in a binary mask (the frame's centre and a third of its height when
    the mask is empty)."""
    ys, xs = np.nonzero(mask > 0.5)
    if len(xs) == 0:
        return np.array([mask.shape[1] / 2, mask.shape[0] / 2]), mask.shape[0] / 3
    return np.array([(xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2]), float(np.ptp(ys) + 1)


def crossing_clip(target: VideoSequence, other: VideoSequence) -> Clip:
    """``min(len)`` frames of ``target`` with ``other``'s object pasted in front (see the module docstring): scaled to
    the target object's height in the first frame, level with it in every frame, and moving at constant speed from
    the side of it with more room (up to 1.5 object heights away, its centre inside the first frame, so that it is
    one of the objects the first frame gives) to as far on the other side."""
    length = min(len(target), len(other))
    centre0, height0 = _box(read_object(target, 0))
    _, other_height = _box(read_object(other, 0))
    scale = height0 / other_height
    width = read_frame(target, 0).shape[1]
    direction = -1.0 if centre0[0] < width / 2 else 1.0  # -1: starts on the right
    room = (width - 1 - centre0[0]) if direction < 0 else centre0[0]
    amplitude = min(1.5 * height0, 0.9 * room)
    for t in range(length):
        frame, own = read_frame(target, t).copy(), read_object(target, t)
        ids = (own > 0.5).astype(np.uint8)
        image, alpha = read_frame(other, t), read_object(other, t)
        source_centre, _ = _box(alpha)
        own_centre, _ = _box(own)
        travel = direction * (2 * t / max(length - 1, 1) - 1) * amplitude
        goal = np.array([own_centre[0] + travel, own_centre[1]])
        matrix = cv2.getRotationMatrix2D((float(source_centre[0]), float(source_centre[1])), 0.0, scale)
        matrix[:, 2] += goal - source_centre
        size = (frame.shape[1], frame.shape[0])
        warped = cv2.warpAffine(np.ascontiguousarray(image), matrix, size, flags=cv2.INTER_LINEAR)
        warped_alpha = cv2.warpAffine(np.ascontiguousarray(alpha), matrix, size, flags=cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_CONSTANT)
        _paste(frame, ids, warped, warped_alpha)
        yield frame, ids


def write_two_object_set(root: str | os.PathLike, clips: dict[str, Clip], resolution: str) -> list[str]:
    """Write ``clips`` (name -> clip) in the DAVIS layout under ``root``: ``JPEGImages/<resolution>/<name>``,
    ``Annotations/<resolution>/<name>`` and ``ImageSets/2017/val.txt``; returns the names."""
    root = Path(root)
    for name, clip in clips.items():
        images, masks = root / "JPEGImages" / resolution / name, root / "Annotations" / resolution / name
        images.mkdir(parents=True, exist_ok=True)
        for t, (frame, ids) in enumerate(clip):
            cv2.imwrite(str(images / f"{t:05d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_JPEG_QUALITY, 92])
            write_mask(masks / f"{t:05d}.png", ids)
    atomic_write_text(root / "ImageSets" / "2017" / "val.txt", "".join(f"{n}\n" for n in clips))
    return list(clips)


def lookalike_set(root: str | os.PathLike, sources: Sequence[VideoSequence], resolution: str,
                  delay: int = 12) -> list[str]:
    """One :func:`lookalike_clip` per source video, named after it."""
    return write_two_object_set(root, {s.name: lookalike_clip(s, delay) for s in sources}, resolution)


def crossing_set(root: str | os.PathLike, sources: Sequence[VideoSequence], resolution: str) -> list[str]:
    """One :func:`crossing_clip` per source video, crossed by the next one's object (in a ring): ``a+b`` is a's
    object crossed by b's."""
    if len(sources) < 2:
        raise VidsegError("crossing clips need at least two source videos")
    pairs = {f"{a.name}+{b.name}": crossing_clip(a, b) for a, b in zip(sources, [*sources[1:], sources[0]])}
    return write_two_object_set(root, pairs, resolution)


__all__ = ["crossing_clip", "crossing_set", "lookalike_clip", "lookalike_set", "write_two_object_set"]
