"""What a synthetic clip looks like (:class:`SynthConfig`), its limits, and per-sequence seeds.

Kept apart from the generator so that the CLI and the writers can validate settings without it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from vidseg.errors import VidsegError

SHAPES: tuple[str, ...] = (
    "ellipse",
    "rectangle",
    "triangle",
    "polygon",
    "star",
    "blob",
    "cross",
    "heart",
    "crescent",
    "ring",
)
"""Shape categories of the labelled objects (the YouTube-VOS ``category`` of an object)."""

MAX_OBJECTS = 30
MAX_DISTRACTORS = 30
MIN_SIZE = 32
MAX_SIZE = 8192


@dataclass(frozen=True)
class SynthConfig:
    """What one synthetic clip looks like. Every field is validated on construction.

    Args:
        seed: non-negative integer; the same config gives byte-identical frames and masks.
        num_frames, height, width: clip length and frame size (at least 32x32).
        num_objects: labelled objects, ids ``1..num_objects``.
        num_distractors: unlabelled look-alikes (same outline and texture as a random labelled object).
        occlusion: plan full occlusions (behind an occluder, or out of the frame) of 1..``max_hidden``
            frames; needs at least about 12 frames, and the clip always has one when it is that long.
        camera_motion, motion_blur, scale_change, shape_change, lighting: switch those effects.
        late_entry: let objects 2..N enter the clip after frame 0 (at least one does when N >= 2).
        max_hidden: longest planned full occlusion in frames.
        categories: shape categories the labelled objects are drawn from.
        object_categories: explicit categories for ids 1, 2, ... (cycled when shorter); overrides
            ``categories``.
        object_size: range of the object radius as a fraction of ``min(height, width)``.
    """

    seed: int = 0
    num_frames: int = 40
    height: int = 256
    width: int = 448
    num_objects: int = 2
    num_distractors: int = 1
    occlusion: bool = True
    camera_motion: bool = True
    motion_blur: bool = True
    scale_change: bool = True
    shape_change: bool = True
    lighting: bool = True
    late_entry: bool = False
    max_hidden: int = 25
    categories: tuple[str, ...] = SHAPES
    object_categories: tuple[str, ...] | None = None
    object_size: tuple[float, float] = (0.08, 0.15)

    def __post_init__(self) -> None:
        def integer(name: str, low: int, high: int | None = None) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise VidsegError(f"synth {name} must be an integer, got {value!r}")
            if value < low or (high is not None and value > high):
                bound = f"{low}..{high}" if high is not None else f">= {low}"
                raise VidsegError(f"synth {name} must be {bound}, got {value}")

        integer("seed", 0)
        integer("num_frames", 1)
        integer("height", MIN_SIZE, MAX_SIZE)
        integer("width", MIN_SIZE, MAX_SIZE)
        integer("num_objects", 1, MAX_OBJECTS)
        integer("num_distractors", 0, MAX_DISTRACTORS)
        integer("max_hidden", 1)
        object.__setattr__(self, "categories", tuple(self.categories))
        if not self.categories:
            raise VidsegError("synth categories is empty", fix=f"choose from {', '.join(SHAPES)}")
        if self.object_categories is not None:
            object.__setattr__(self, "object_categories", tuple(self.object_categories))
            if not self.object_categories:
                raise VidsegError("synth object_categories is empty", fix="give None or at least one category")
        for name in self.categories + (self.object_categories or ()):
            if name not in SHAPES:
                raise VidsegError(f"unknown shape category {name!r}", fix=f"choose from {', '.join(SHAPES)}")
        low, high = (float(v) for v in self.object_size)
        if not 0.01 <= low <= high <= 0.4:
            raise VidsegError(f"synth object_size must satisfy 0.01 <= low <= high <= 0.4, got {self.object_size}")
        object.__setattr__(self, "object_size", (low, high))

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["categories"] = list(self.categories)
        data["object_categories"] = None if self.object_categories is None else list(self.object_categories)
        data["object_size"] = list(self.object_size)
        return data


def derive_seed(seed: int, index: int) -> int:
    """Seed of sequence ``index`` of a dataset generated with ``seed`` (32-bit, well mixed)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def resolution_name(height: int) -> str:
    """DAVIS resolution folder of a frame height: ``480p`` (DAVIS) or ``{height}p``."""
    return f"{int(height)}p"
