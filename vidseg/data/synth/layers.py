"""The plan of a clip: labelled objects, planned occlusions, and the drawable layers with their motion.

:class:`SynthObject` and :class:`OcclusionEvent` describe a clip to callers; :class:`_Event` and
:class:`_Layer` are the generator's own state, evaluated per frame by :class:`~vidseg.data.synth.clip.SynthClip`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_TEXTURE_HALF = 1.3  # half extent, in normalised object units, covered by an object's texture patch


def _smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


def _reflect(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    span = np.maximum(hi - lo, 1e-6)
    y = np.mod(x - lo, 2 * span)
    return lo + np.where(y > span, 2 * span - y, y)


@dataclass(frozen=True)
class SynthObject:
    """A labelled object of a clip; ``first_frame`` is the planned entry (0 unless it enters late)."""

    object_id: int
    category: str
    first_frame: int = 0


@dataclass(frozen=True)
class OcclusionEvent:
    """A planned full occlusion of one object.

    ``kind`` is ``behind`` (goes behind an occluder), ``exit`` (leaves the frame and comes back) or
    ``enter`` (outside the frame from frame 0, then enters). The object moves out of view over
    ``[start, hidden_start)``, is fully hidden over ``[hidden_start, hidden_end)`` (by the geometry of
    the plan; another layer may hide it longer) and is back on its own path at ``end``.
    """

    object_id: int
    kind: str
    start: int
    hidden_start: int
    hidden_end: int
    end: int

    @property
    def hidden_frames(self) -> int:
        return self.hidden_end - self.hidden_start


class _Event:
    """A planned occlusion: the blend weight ramps up over [start, plateau_start), is 1 until plateau_end,
    ramps down until end; hidden_start/hidden_end is the run of frames in which the plan hides the object."""

    __slots__ = (
        "end",
        "hidden_end",
        "hidden_start",
        "jitter",
        "kind",
        "occluder",
        "plateau_end",
        "plateau_start",
        "start",
        "target"
    )  # fmt: skip

    def __init__(self, kind, start, plateau_start, plateau_end, end, occluder=None, target=None, jitter=None):
        self.kind = kind
        self.start = start
        self.plateau_start = plateau_start
        self.plateau_end = plateau_end
        self.end = end
        self.hidden_start = plateau_start
        self.hidden_end = plateau_end
        self.occluder = occluder
        self.target = target  # frame-space point for exit/enter
        self.jitter = jitter  # (amp, w1, p1, w2, p2) for behind

    def weight(self, t: int) -> float:
        if t < self.start or t >= self.end:
            return 0.0
        if t < self.plateau_start:
            return _smoothstep((t - self.start + 1) / (self.plateau_start - self.start + 1))
        if t < self.plateau_end:
            return 1.0
        return _smoothstep((self.end - t) / (self.end - self.plateau_end + 1))


class _Layer:
    """One drawable: a labelled object, a distractor or an occluder."""

    def __init__(self, kind: str, label: int, category: str, contours: list[np.ndarray], texture: np.ndarray, r0: float):
        self.kind = kind
        self.label = label
        self.category = category
        self.contours = contours
        self.angles = [np.arctan2(c[:, 1], c[:, 0]).astype(np.float32) for c in contours]
        self.texture = texture
        self.r0 = float(r0)
        self.inner = 0.0  # occluders: radius of the disc they surely cover (world px)
        self.copy_of: int | None = None
        # motion (world coordinates)
        self.p0 = np.zeros(2)
        self.vel = np.zeros(2)
        self.amps = np.zeros((0, 2))
        self.omegas = np.zeros(0)
        self.phases = np.zeros((0, 2))
        self.offset0 = np.zeros(2)
        self.lo = np.zeros(2)
        self.hi = np.ones(2)
        self.rot0 = 0.0
        self.rot_speed = 0.0
        self.rot_amp = 0.0
        self.rot_w = 0.0
        self.rot_ph = 0.0
        self.scale_amp = 0.0
        self.scale_w = 0.0
        self.scale_ph = 0.0
        self.aniso_amp = 0.0
        self.aniso_w = 0.0
        self.aniso_ph = 0.0
        self.wobble_amp = 0.0
        self.wobble_k = 2
        self.wobble_w = 0.0
        self.wobble_ph = 0.0
        self.events: list[_Event] = []
        self.entry = 0
        self.front = False  # drawn in front of the occluders (never hidden by them)

    def base_centre(self, t: float) -> np.ndarray:
        if len(self.omegas):
            osc = (self.amps * np.sin(self.omegas[:, None] * t + self.phases)).sum(axis=0) - self.offset0
        else:
            osc = 0.0
        return _reflect(self.p0 + self.vel * t + osc, self.lo, self.hi)

    def shape(self, t: float) -> tuple[float, float, float, float]:
        """(radius in world px, rotation, x stretch, y stretch) before occlusion adjustments."""
        radius = self.r0 * math.exp(self.scale_amp * math.sin(self.scale_w * t + self.scale_ph))
        stretch = math.exp(self.aniso_amp * math.sin(self.aniso_w * t + self.aniso_ph))
        theta = self.rot0 + self.rot_speed * t + self.rot_amp * math.sin(self.rot_w * t + self.rot_ph)
        return radius, theta, stretch, 1.0 / stretch

    def extent(self, radius: float, sx: float, sy: float) -> float:
        return radius * max(sx, sy) * (1.0 + self.wobble_amp)

    def max_extent(self) -> float:
        return self.r0 * math.exp(self.scale_amp) * math.exp(self.aniso_amp) * (1.0 + self.wobble_amp)

    def active_event(self, t: int) -> _Event | None:
        for event in self.events:
            if event.start <= t < event.end:
                return event
        return None
