"""Procedural synthetic video-object-segmentation benchmark.

Deterministic, streaming clips of textured shapes over a textured background, with the difficulties of
real VOS data switched on or off one by one:

* 1..N labelled objects (ids 1..N), each with a shape *category* (``ellipse``, ``star``, ``blob``, ...)
  so that YouTube-VOS seen/unseen splits mean something;
* look-alike **distractors**: unlabelled copies (same outline and texture) of a labelled object;
* **full occlusions**: an object goes behind an occluder or leaves the frame for 1..``max_hidden`` frames
  and comes back (the mask holds only the visible part; a fully hidden id is absent);
* objects that **enter late** (``late_entry``, used by the YouTube-VOS writer);
* **scale** and **shape** change (breathing scale, anisotropic stretch, non-rigid wobble), rotation;
* **camera motion** (pan, shake, small rotation and zoom applied to background and objects alike),
  **motion blur** along each layer's image-space velocity, slow lighting changes.

A clip is a compact *plan* (a background texture, one small texture per object and a handful of
trajectory coefficients); every frame is rendered from the plan on demand, so clips of any length stream
in constant memory and any frame can be rendered at random (:meth:`SynthClip.render`).

Writers produce the DAVIS layout (:func:`write_davis`), the YouTube-VOS layout with sparse labels and
``meta.json`` (:func:`write_youtube_vos`), an ``.mp4`` with its first-frame mask and ground truth
(:func:`write_video`), and a small demo clip (:func:`make_demo_clip`). Each output folder holds a
``vidseg_synth.json`` describing what was generated (configs, seeds, objects, occlusion runs measured
on the written masks); only empty folders and previous synth outputs are written into.

numpy + OpenCV only (no torch).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from vidseg.errors import VidsegError
from vidseg.io.atomic import atomic_path, atomic_write_text
from vidseg.io.masks import write_mask

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

TEXTURES: tuple[str, ...] = ("noise", "stripes", "checker", "spots", "waves")

MARKER_NAME = "vidseg_synth.json"
"""File written at the root of every synth output; its presence marks the folder as re-writable."""

GENERATOR = "vidseg data synth"
MAX_OBJECTS = 30
MAX_DISTRACTORS = 30
MIN_SIZE = 32
MAX_SIZE = 8192

_PLAN_ATTEMPTS = 12
_TEXTURE_HALF = 1.3  # half extent, in normalised object units, covered by an object's texture patch
_EXPOSURE = 0.5  # fraction of the inter-frame motion smeared by motion blur (a 180 degree shutter)

Progress = Callable[[int], object]


# --------------------------------------------------------------------------------------------------
# configuration


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


# --------------------------------------------------------------------------------------------------
# textures and outlines


def _value_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    cell = max(2.0, cell)
    grid = rng.random((int(h / cell) + 2, int(w / cell) + 2), dtype=np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _fractal(rng: np.random.Generator, h: int, w: int, cell: float, octaves: int = 4) -> np.ndarray:
    acc = np.zeros((h, w), np.float32)
    amp = 1.0
    for _ in range(octaves):
        acc += amp * _value_noise(rng, h, w, cell)
        amp *= 0.5
        cell /= 2.0
    lo, hi = float(acc.min()), float(acc.max())
    return (acc - lo) / max(hi - lo, 1e-6)


def _palette(rng: np.random.Generator, vivid: bool) -> np.ndarray:
    """(3, 3) uint8 RGB colours of one texture."""
    hue = rng.uniform(0, 180)
    hsv = np.empty((1, 3, 3), np.float32)
    for k in range(3):
        if vivid:
            hsv[0, k] = ((hue + rng.uniform(-35, 35)) % 180, rng.uniform(120, 255), rng.uniform(90, 255))
        else:
            hsv[0, k] = ((hue + rng.uniform(-25, 25)) % 180, rng.uniform(20, 130), rng.uniform(35, 225))
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0]


def make_texture(rng: np.random.Generator, h: int, w: int, kind: str | None = None, vivid: bool = True) -> np.ndarray:
    """An (h, w, 3) uint8 RGB texture of the given kind (random kind when None)."""
    kind = kind or TEXTURES[int(rng.integers(len(TEXTURES)))]
    scale = float(rng.uniform(0.08, 0.22)) * min(h, w) + 4.0
    if kind == "noise":
        pattern = _fractal(rng, h, w, scale)
    else:
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        angle = rng.uniform(0, np.pi)
        u = xs * np.float32(np.cos(angle)) + ys * np.float32(np.sin(angle))
        v = -xs * np.float32(np.sin(angle)) + ys * np.float32(np.cos(angle))
        warp = _fractal(rng, h, w, scale * 2, octaves=2) * np.float32(rng.uniform(0.5, 3.0))
        period = np.float32(scale * rng.uniform(0.4, 1.0))
        if kind == "stripes":
            pattern = 0.5 + 0.5 * np.sin(u * (2 * np.pi / period) + warp)
        elif kind == "checker":
            cells = np.floor(u / period + warp * 0.3) + np.floor(v / period)
            pattern = np.mod(cells, 2.0) * 0.8 + _fractal(rng, h, w, scale / 2, octaves=2) * 0.2
        elif kind == "spots":
            noise = _fractal(rng, h, w, scale * 0.6, octaves=3)
            pattern = np.clip((noise - 0.5) * 6.0 + 0.5, 0.0, 1.0)
        elif kind == "waves":
            pattern = 0.5 + 0.25 * np.sin(u * (2 * np.pi / period) + 2.0 * np.sin(v * (np.pi / period)) + warp)
            pattern = pattern + 0.25 * _fractal(rng, h, w, scale / 3, octaves=2)
        else:
            raise ValueError(f"unknown texture kind {kind!r}")
    colours = _palette(rng, vivid).astype(np.float32)
    positions = np.array([0.0, rng.uniform(0.3, 0.7), 1.0])
    levels = np.linspace(0.0, 1.0, 256)
    lut = np.stack([np.interp(levels, positions, colours[:, c]) for c in range(3)], axis=1)
    index = np.clip(pattern * 255.0, 0, 255).astype(np.uint8)
    image = lut.astype(np.float32)[index]
    shading = 0.8 + 0.4 * _fractal(rng, h, w, max(h, w) / 3, octaves=2)
    image *= shading[..., None]
    return np.clip(image, 0, 255).astype(np.uint8)


def _circle(n: int, rx: float = 1.0, ry: float = 1.0, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    th = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(th), cy + ry * np.sin(th)], axis=1)


def make_outline(category: str, rng: np.random.Generator) -> list[np.ndarray]:
    """Contours (float32 (N, 2)) of a shape, centred, with largest radius 1 (a ring has two)."""
    if category == "ellipse":
        contours = [_circle(56, 1.0, rng.uniform(0.45, 1.0))]
    elif category == "rectangle":
        a = rng.uniform(0.35, 1.0)
        contours = [np.array([[-1, -a], [1, -a], [1, a], [-1, a]], float)]
    elif category == "triangle":
        th = np.pi / 2 + np.arange(3) * 2 * np.pi / 3 + rng.uniform(-0.25, 0.25, 3)
        contours = [np.stack([np.cos(th), np.sin(th)], 1) * rng.uniform(0.75, 1.0, (3, 1))]
    elif category == "polygon":
        n = int(rng.integers(5, 9))
        th = np.arange(n) * 2 * np.pi / n + rng.uniform(-0.15, 0.15, n)
        contours = [np.stack([np.cos(th), np.sin(th)], 1) * rng.uniform(0.85, 1.0, (n, 1))]
    elif category == "star":
        n = int(rng.integers(4, 8))
        inner = rng.uniform(0.38, 0.6)
        th = np.arange(2 * n) * np.pi / n
        r = np.where(np.arange(2 * n) % 2 == 0, 1.0, inner)
        contours = [np.stack([r * np.cos(th), r * np.sin(th)], 1)]
    elif category == "blob":
        th = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        r = np.ones_like(th)
        for k in range(2, 6):
            r += rng.uniform(0.0, 0.3) / k * np.cos(k * th + rng.uniform(0, 2 * np.pi))
        contours = [np.stack([r * np.cos(th), r * np.sin(th)], 1)]
    elif category == "cross":
        a = rng.uniform(0.25, 0.42)
        contours = [
            np.array(
                [[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1], [-a, a], [-1, a], [-1, -a], [-a, -a]],
                float,
            )
        ]
    elif category == "heart":
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        contours = [np.stack([x, y], 1)]
    elif category == "crescent":
        r2, d = rng.uniform(0.7, 0.88), rng.uniform(0.4, 0.6)
        xi = (1 + d * d - r2 * r2) / (2 * d)
        yi = math.sqrt(max(1 - xi * xi, 1e-6))
        ti = math.atan2(yi, xi)
        outer = np.linspace(ti, 2 * np.pi - ti, 40)
        phi1 = math.atan2(-yi, xi - d)
        inner = np.linspace(phi1 + 2 * np.pi, -phi1, 28)[1:-1]
        contours = [
            np.concatenate(
                [np.stack([np.cos(outer), np.sin(outer)], 1), np.stack([d + r2 * np.cos(inner), r2 * np.sin(inner)], 1)]
            )
        ]
    elif category == "ring":
        b = rng.uniform(0.7, 1.0)
        hole = rng.uniform(0.38, 0.6)
        contours = [_circle(56, 1.0, b), _circle(40, hole, hole * b)]
    else:
        raise ValueError(f"unknown shape category {category!r}")
    centre = contours[0].mean(axis=0)
    contours = [c - centre for c in contours]
    radius = max(float(np.linalg.norm(c, axis=1).max()) for c in contours)
    return [(c / radius).astype(np.float32) for c in contours]


@lru_cache(maxsize=512)
def _line_kernel(dx: float, dy: float) -> np.ndarray:
    """Normalised linear motion-blur kernel for a displacement of (dx, dy) pixels."""
    n = int(math.ceil(max(abs(dx), abs(dy)))) | 1
    n = max(n, 3)
    canvas = np.zeros((n, n), np.uint8)
    c = (n - 1) / 2
    p0 = (int(round((c - dx / 2) * 16)), int(round((c - dy / 2) * 16)))
    p1 = (int(round((c + dx / 2) * 16)), int(round((c + dy / 2) * 16)))
    cv2.line(canvas, p0, p1, 255, 1, cv2.LINE_AA, 4)
    kernel = canvas.astype(np.float32)
    return kernel / max(float(kernel.sum()), 1.0)


def _smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


def _reflect(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    span = np.maximum(hi - lo, 1e-6)
    y = np.mod(x - lo, 2 * span)
    return lo + np.where(y > span, 2 * span - y, y)


# --------------------------------------------------------------------------------------------------
# the plan of a clip


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


class SynthClip:
    """The plan of one synthetic clip; iterate it for ``(frame RGB uint8 HxWx3, mask uint8 HxW)`` pairs.

    Attributes:
        config: the :class:`SynthConfig`.
        objects: the labelled objects (ids ``1..num_objects``) with their categories.
        distractors: for each distractor, the id of the labelled object it copies.
        events: the planned full occlusions, sorted by start frame.
    """

    def __init__(self, config: SynthConfig):
        self.config = config
        self.height, self.width = config.height, config.width
        self._minside = float(min(self.height, self.width))
        self._setup_scene(np.random.default_rng([config.seed, 0xB6]))
        # several candidate layouts; keep the first in which every object is well visible in frame 0
        best: tuple[float, int] | None = None
        for attempt in range(_PLAN_ATTEMPTS):
            self._plan(np.random.default_rng([config.seed, attempt]))
            score = self._first_frame_score()
            if best is None or score > best[0]:
                best = (score, attempt)
            if score >= 1.0:
                break
        if best[1] != attempt:
            self._plan(np.random.default_rng([config.seed, best[1]]))
        if config.occlusion:
            self._plan_checked_occlusions([config.seed, best[1], 0x0CC])

    # ---- public description -------------------------------------------------------------------

    def __len__(self) -> int:
        return self.config.num_frames

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for t in range(self.config.num_frames):
            frame, mask = self.render(t)
            yield frame, mask

    @property
    def objects(self) -> list[SynthObject]:
        return [SynthObject(layer.label, layer.category, layer.entry) for layer in self._objects]

    @property
    def categories(self) -> dict[int, str]:
        return {layer.label: layer.category for layer in self._objects}

    @property
    def distractors(self) -> list[int]:
        return [layer.copy_of for layer in self._layers if layer.kind == "distractor"]

    @property
    def events(self) -> list[OcclusionEvent]:
        found = [
            OcclusionEvent(layer.label, e.kind, e.start, e.hidden_start, e.hidden_end, e.end)
            for layer in self._objects
            for e in layer.events
        ]
        return sorted(found, key=lambda e: (e.start, e.object_id))

    @property
    def layer_kinds(self) -> list[str]:
        """Kind of each drawing layer, back to front (indices of the ``layers`` map of :meth:`render`)."""
        return [layer.kind for layer in self._layers]

    @property
    def layer_labels(self) -> list[int]:
        """Mask id of each drawing layer (0 for distractors and occluders)."""
        return [layer.label for layer in self._layers]

    def state_nbytes(self) -> int:
        """Bytes of image data held by the plan (background and textures): independent of the length."""
        return self._background.nbytes + sum(layer.texture.nbytes for layer in self._layers)

    def metadata(self) -> dict:
        return {
            "seed": self.config.seed,
            "num_frames": self.config.num_frames,
            "size": [self.height, self.width],
            "objects": {str(o.object_id): {"category": o.category, "planned_entry": o.first_frame} for o in self.objects},
            "distractors": [{"copy_of": c} for c in self.distractors],
            "planned_occlusions": [dataclasses.asdict(e) for e in self.events],
        }

    # ---- scene: background and camera (independent of the object plan) -------------------------

    def _setup_scene(self, rng: np.random.Generator) -> None:
        cfg, h, w = self.config, self.height, self.width
        self._cam_on = cfg.camera_motion
        if cfg.camera_motion:
            # translation: two slow sweeps and a fast shake per axis; small rotation and zoom
            amps = np.array([[0.022 * w, 0.018 * h], [0.012 * w, 0.010 * h], [0.003 * w, 0.003 * h]])
            self._cam_amps = amps * rng.uniform(0.6, 1.0, amps.shape)
            periods = np.array([rng.uniform(90, 240), rng.uniform(30, 90), rng.uniform(6, 14)])
            self._cam_w = 2 * np.pi / periods
            self._cam_ph = rng.uniform(0, 2 * np.pi, (3, 2))
            self._cam_rot = (
                math.radians(rng.uniform(0.5, 2.0)), 2 * np.pi / rng.uniform(100, 300), rng.uniform(0, 2 * np.pi)
            )  # fmt: skip
            self._cam_zoom = (rng.uniform(0.02, 0.05), 2 * np.pi / rng.uniform(100, 300), rng.uniform(0, 2 * np.pi))
        # largest camera shift; also used without camera motion, so that switching the camera on or off
        # changes nothing but the camera (the objects' world paths stay the same)
        self.camera_bound = float(2 * 0.037 * max(h, w))
        diag = math.hypot(h, w)
        self._margin = int(math.ceil(self.camera_bound + 0.06 * diag)) + 2 if cfg.camera_motion else 0
        m = self._margin
        self._background = make_texture(rng, h + 2 * m, w + 2 * m, vivid=False)
        if cfg.lighting:
            self._light = (rng.uniform(0.03, 0.08), 2 * np.pi / rng.uniform(40, 160), rng.uniform(0, 2 * np.pi))
        else:
            self._light = None
        self._ctr = np.array([(w - 1) / 2, (h - 1) / 2])

    def camera(self, t: float) -> np.ndarray:
        """(2, 3) affine map from world coordinates to frame pixels at time ``t``."""
        if not self._cam_on:
            return np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        shift = (self._cam_amps * (np.sin(self._cam_w[:, None] * t + self._cam_ph) - np.sin(self._cam_ph))).sum(axis=0)
        a, wr, pr = self._cam_rot
        angle = a * (math.sin(wr * t + pr) - math.sin(pr))
        z, wz, pz = self._cam_zoom
        zoom = math.exp(z * (math.sin(wz * t + pz) - math.sin(pz)))
        c, s = zoom * math.cos(angle), zoom * math.sin(angle)
        lin = np.array([[c, -s], [s, c]])
        off = self._ctr - lin @ (self._ctr + shift)
        return np.hstack([lin, off[:, None]])

    # ---- planning ---------------------------------------------------------------------------------

    def _motion(self, layer: _Layer, rng: np.random.Generator, speed_scale: float = 1.0) -> None:
        cfg, h, w = self.config, self.height, self.width
        unit = self._minside / 256.0
        margin = self.camera_bound + 0.3 * layer.r0
        layer.lo = np.array([min(margin, w / 2 - 1), min(margin, h / 2 - 1)])
        layer.hi = np.array([w - layer.lo[0], h - layer.lo[1]])
        span = layer.hi - layer.lo
        speed = rng.uniform(0.3, 2.5) * unit * speed_scale
        direction = rng.uniform(0, 2 * np.pi)
        layer.vel = speed * np.array([math.cos(direction), math.sin(direction)])
        layer.amps = rng.uniform(0.04, 0.16, (2, 2)) * span * speed_scale
        layer.omegas = 2 * np.pi / rng.uniform(40, 160, 2)
        layer.phases = rng.uniform(0, 2 * np.pi, (2, 2))
        layer.offset0 = (layer.amps * np.sin(layer.phases)).sum(axis=0)
        layer.rot0 = rng.uniform(0, 2 * np.pi)
        layer.rot_speed = math.radians(rng.uniform(-2.0, 2.0))
        layer.rot_amp = math.radians(rng.uniform(0, 25))
        layer.rot_w = 2 * np.pi / rng.uniform(30, 120)
        layer.rot_ph = rng.uniform(0, 2 * np.pi)
        if cfg.scale_change:
            layer.scale_amp = rng.uniform(0.15, 0.4)
            layer.scale_w = 2 * np.pi / rng.uniform(40, 150)
            layer.scale_ph = rng.uniform(0, 2 * np.pi)
        if cfg.shape_change:
            layer.aniso_amp = rng.uniform(0.08, 0.25)
            layer.aniso_w = 2 * np.pi / rng.uniform(30, 100)
            layer.aniso_ph = rng.uniform(0, 2 * np.pi)
            layer.wobble_amp = rng.uniform(0.04, 0.12)
            layer.wobble_k = int(rng.integers(2, 5))
            layer.wobble_w = 2 * np.pi / rng.uniform(20, 60)
            layer.wobble_ph = rng.uniform(0, 2 * np.pi)

    def _new_shape_layer(self, rng: np.random.Generator, kind: str, label: int, category: str) -> _Layer:
        lo, hi = self.config.object_size
        r0 = rng.uniform(lo, hi) * self._minside
        contours = make_outline(category, rng)
        layer = _Layer(kind, label, category, contours, np.zeros((1, 1, 3), np.uint8), r0)
        self._motion(layer, rng)
        side = int(np.clip(2 * _TEXTURE_HALF * layer.max_extent(), 8, 1024))
        layer.texture = make_texture(rng, side, side, vivid=True)
        return layer

    def _plan(self, rng: np.random.Generator) -> None:
        cfg, h, w = self.config, self.height, self.width
        n = cfg.num_objects
        if cfg.object_categories:
            cats = [cfg.object_categories[i % len(cfg.object_categories)] for i in range(n)]
        else:
            pool = list(cfg.categories)
            order = [pool[int(i)] for i in rng.permutation(len(pool))]
            cats = [order[i] if i < len(order) else pool[int(rng.integers(len(pool)))] for i in range(n)]
        objects = [self._new_shape_layer(rng, "object", i + 1, cats[i]) for i in range(n)]
        distractors = []
        for _ in range(cfg.num_distractors):
            source = objects[int(rng.integers(n))]
            r0 = source.r0 * rng.uniform(0.85, 1.15)
            layer = _Layer("distractor", 0, source.category, source.contours, source.texture, r0)
            layer.copy_of = source.label
            self._motion(layer, rng)
            distractors.append(layer)
        occluders = []
        if cfg.occlusion:
            count = 2 if cfg.num_frames >= 150 and w >= 1.5 * h else 1
            for _ in range(count):
                occluders.append(self._new_occluder(rng, occluders))
        movers = objects + distractors
        self._place(rng, movers, occluders)
        self._movers = [movers[int(i)] for i in rng.permutation(len(movers))]
        for layer in movers:
            layer.front = bool(occluders) and rng.random() < (0.25 if layer.kind == "object" else 0.3)
        self._objects = objects
        self._occluders = occluders
        self._order_layers()
        for layer in objects:
            layer.events = []
            layer.entry = 0
        if cfg.late_entry and n >= 2:
            late = [o for o in objects[1:] if rng.random() < 0.5] or [objects[1 + int(rng.integers(n - 1))]]
            for layer in late:
                self._plan_entry(rng, layer)

    def _new_occluder(self, rng: np.random.Generator, others: list[_Layer]) -> _Layer:
        h, w = self.height, self.width
        inner = self._minside * rng.uniform(0.15, 0.19)
        if rng.random() < 0.6:
            hx, hy = inner * rng.uniform(1.0, 1.35), inner * rng.uniform(1.05, 1.9)
            contour = np.array([[-hx, -hy], [hx, -hy], [hx, hy], [-hx, hy]], float)
            category = "pillar"
        else:
            contour = _circle(48, inner * rng.uniform(1.0, 1.3), inner * rng.uniform(1.0, 1.5))
            category = "rock"
        r0 = float(np.linalg.norm(contour, axis=1).max())
        texture_side = int(np.clip(2 * _TEXTURE_HALF * r0, 8, 2048))
        texture = make_texture(rng, texture_side, texture_side)
        layer = _Layer("occluder", 0, category, [(contour / r0).astype(np.float32)], texture, r0)
        layer.inner = inner
        margin = self.camera_bound + inner
        lo = np.array([min(margin, w / 2), min(margin, h / 2)])
        hi = np.array([w, h]) - lo
        best, best_d = None, -1.0
        for _ in range(50):
            p = lo + rng.random(2) * (hi - lo)
            d = min((float(np.linalg.norm(p - o.p0)) - o.inner - inner for o in others), default=1e9)
            if d > best_d:
                best, best_d = p, d
            if d > 0:
                break
        layer.p0 = best
        layer.lo, layer.hi = lo - 1e6, hi + 1e6
        layer.rot0 = math.radians(rng.uniform(-8, 8))
        return layer

    def _place(self, rng: np.random.Generator, movers: list[_Layer], occluders: list[_Layer]) -> None:
        """Choose start positions that keep objects apart and out from behind occluders at frame 0."""
        placed: list[_Layer] = []
        for layer in movers:
            best, best_gap = None, -1e9
            for _ in range(60):
                p = layer.lo + rng.random(2) * (layer.hi - layer.lo)
                gap = min((float(np.linalg.norm(p - o.p0)) - 0.85 * (o.r0 + layer.r0) for o in placed), default=1e9)
                clear = (float(np.linalg.norm(p - o.p0)) - o.r0 - 0.6 * layer.r0 for o in occluders)
                gap = min(gap, min(clear, default=1e9))
                if gap > best_gap:
                    best, best_gap = p, gap
                if gap > 0:
                    break
            layer.p0 = best
            placed.append(layer)

    def _pose(self, layer: _Layer, t: float, cam: np.ndarray | None = None):
        """World centre, radius, rotation, stretches of a layer at frame ``t`` (occlusion plans applied)."""
        centre = layer.base_centre(t)
        radius, theta, sx, sy = layer.shape(t)
        event = layer.active_event(int(t)) if layer.events else None
        if event is not None:
            wgt = event.weight(int(t))
            if event.kind == "behind":
                occ = self._occluders[event.occluder]
                amp, w1, p1, w2, p2 = event.jitter
                target = occ.p0 + amp * np.array([math.sin(w1 * t + p1), math.sin(w2 * t + p2)])
                fit = (occ.inner - amp * math.sqrt(2) - self._hide_margin) / max(layer.extent(radius, sx, sy), 1e-6)
                radius *= 1.0 - wgt * (1.0 - min(1.0, max(fit, 0.0)))
            else:
                if cam is None:
                    cam = self.camera(t)
                target = np.linalg.solve(cam[:, :2], event.target - cam[:, 2])
            centre = centre + wgt * (target - centre)
        return centre, radius, theta, sx, sy

    @property
    def _hide_margin(self) -> float:
        return 2.5 / 0.9  # 2.5 frame pixels at the smallest camera zoom

    def _hidden_geometric(self, layer: _Layer, event: _Event, t: int) -> bool:
        """Whether the plan alone hides ``layer`` at ``t`` (rasterised exactly as :meth:`render` does)."""
        cam = self.camera(t)
        points, _, _ = self._geometry(layer, t, cam)
        box = self._box(points, 1.0)
        if box is None:
            return True  # entirely outside the frame
        hard = self._raster(points, box) >= 128
        if event.kind != "behind":
            return not hard.any()
        occ = self._occluders[event.occluder]
        occ_points, _, _ = self._geometry(occ, t, cam)
        cover = self._raster(occ_points, box) >= 128
        return not np.any(hard & ~cover)

    def _hidden_run(self, layer: _Layer, event: _Event) -> tuple[int, int]:
        hidden = [t for t in range(event.start, event.end) if self._hidden_geometric(layer, event, t)]
        if not hidden:
            return event.plateau_start, event.plateau_start
        return hidden[0], hidden[-1] + 1

    def _offscreen_target(self, layer: _Layer, t: int) -> tuple[np.ndarray, float]:
        """Frame point just outside the nearest border from the object's path at ``t``; travel distance."""
        cam = self.camera(t)
        cf = cam[:, :2] @ layer.base_centre(t) + cam[:, 2]
        ext = layer.max_extent() * 1.1 + 4.0
        dists = [cf[0], self.width - cf[0], cf[1], self.height - cf[1]]
        side = int(np.argmin(dists))
        target = cf.copy()
        if side == 0:
            target[0] = -ext
        elif side == 1:
            target[0] = self.width + ext
        elif side == 2:
            target[1] = -ext
        else:
            target[1] = self.height + ext
        return target, float(np.linalg.norm(target - cf))

    def _ramp(self, rng: np.random.Generator, distance: float, cap: int) -> int:
        speed = rng.uniform(6.0, 14.0) * self._minside / 256.0
        return int(np.clip(round(distance / speed), min(3, cap), max(min(15, cap), 1)))

    def _plan_entry(self, rng: np.random.Generator, layer: _Layer) -> None:
        total = self.config.num_frames
        if total < 8:
            return
        t_enter = int(rng.integers(3, max(4, total // 2)))
        target, distance = self._offscreen_target(layer, t_enter)
        ramp = self._ramp(rng, distance, max(1, (total - t_enter) // 2))
        event = _Event("enter", 0, 0, t_enter, t_enter + ramp, target=target)
        layer.events = [event]
        event.hidden_start, event.hidden_end = self._hidden_run(layer, event)
        layer.entry = event.hidden_end

    def _plan_occlusions(self, rng: np.random.Generator, objects: list[_Layer]) -> None:
        cfg, total = self.config, self.config.num_frames
        if total < 12:
            return
        max_hidden = cfg.max_hidden
        order = [objects[int(i)] for i in rng.permutation(len(objects))]
        forced, forced_tries = True, 0  # the first event is placed early so that every clip has one
        for layer in order:
            cursor = layer.events[-1].end + 2 if layer.events else 3
            while True:
                if forced:
                    start = cursor + int(rng.integers(0, max(1, min(20, total - cursor - 12))))
                else:
                    start = cursor + int(rng.integers(20, 90))
                room = total - 2 - start  # frames available for ramps + hidden
                if room < 3:
                    break
                kind = "behind" if self._occluders and not layer.front and rng.random() < 0.6 else "exit"
                hidden = int(rng.integers(1, max_hidden + 1))
                event = _Event(kind, start, start, start, start)
                if kind == "behind":
                    centre = layer.base_centre(start)
                    index = int(np.argmin([np.linalg.norm(centre - o.p0) for o in self._occluders]))
                    occ = self._occluders[index]
                    event.occluder = index
                    event.jitter = (0.08 * occ.inner, 2 * np.pi / rng.uniform(15, 40), rng.uniform(0, 6.3),
                                    2 * np.pi / rng.uniform(15, 40), rng.uniform(0, 6.3))  # fmt: skip
                    distance = float(np.linalg.norm(centre - occ.p0))
                else:
                    event.target, distance = self._offscreen_target(layer, start)
                cap = max(1, (room - 1) // 2)
                ramp_in = self._ramp(rng, distance, cap)
                ramp_out = self._ramp(rng, distance, cap)
                hidden = max(1, min(hidden, room - ramp_in - ramp_out))
                layer.events.append(event)
                for _ in range(12):  # shorten the plateau, then the ramps, until the run fits max_hidden
                    event.plateau_start = start + ramp_in
                    event.plateau_end = event.plateau_start + hidden
                    event.end = event.plateau_end + ramp_out
                    run0, run1 = self._hidden_run(layer, event)
                    excess = (run1 - run0) - max_hidden
                    if excess <= 0:
                        break
                    if hidden > 1:
                        hidden = max(1, hidden - excess)
                    elif ramp_in > 2 or ramp_out > 2:
                        cut = (excess + 1) // 2
                        ramp_in, ramp_out = max(2, ramp_in - cut), max(2, ramp_out - cut)
                    else:
                        break
                if event.end > total - 2 or run1 - run0 < 1 or run1 - run0 > max_hidden:
                    layer.events.pop()
                    if not forced:
                        break
                    forced_tries += 1
                    forced = forced_tries < 4
                    continue
                event.hidden_start, event.hidden_end = run0, run1
                forced = False
                cursor = event.end + 2

    def _order_layers(self) -> None:
        back = [m for m in self._movers if not m.front]
        front = [m for m in self._movers if m.front]
        self._layers = back + self._occluders + front

    def _plan_checked_occlusions(self, seed: list[int]) -> None:
        """Plan occlusions, then make sure no object stays hidden behind an occluder for longer than
        ``max_hidden`` frames or to the end of the clip by drifting behind it on its own path: such
        objects move in front of the occluders and the occlusions are planned again."""
        for attempt in range(len(self._objects) + 1):
            for layer in self._objects:
                layer.events = [e for e in layer.events if e.kind == "enter"]
            self._order_layers()
            self._plan_occlusions(np.random.default_rng(seed + [attempt]), self._objects)
            bad = self._overlong_hidden()
            if not bad:
                return
            for layer in bad:
                layer.front = True
        for layer in self._objects:  # not reached in practice: the loop ends once every object is in front
            if layer.front:
                layer.events = [e for e in layer.events if e.kind != "behind"]
        self._order_layers()

    def _overlong_hidden(self) -> list[_Layer]:
        """Objects behind the occluders that the occluders or the frame border hide too long."""
        back = [o for o in self._objects if not o.front]
        if not back or not self._occluders:
            return []
        total, limit = self.config.num_frames, self.config.max_hidden
        run_start: dict[int, int | None] = {o.label: None for o in back}
        bad: dict[int, _Layer] = {}
        for t in range(total):
            cam = self.camera(t)
            occ = []
            for layer in self._occluders:
                points = self._geometry(layer, t, cam)[0]
                occ.append((points, self._box(points, 1.0)))
            for layer in back:
                if layer.label in bad:
                    continue
                hidden = self._covered(layer, t, cam, occ)
                start = run_start[layer.label]
                if hidden and start is None:
                    run_start[layer.label] = t
                elif not hidden and start is not None:
                    if t - start > limit and not (start == 0 and layer.entry > 0):
                        bad[layer.label] = layer
                    run_start[layer.label] = None
        for layer in back:
            if run_start[layer.label] is not None:
                bad[layer.label] = layer
        return list(bad.values())

    def _covered(self, layer: _Layer, t: int, cam: np.ndarray, occ: list) -> bool:
        points = self._geometry(layer, t, cam)[0]
        box = self._box(points, 1.0)
        if box is None:
            return True
        x0, y0, x1, y1 = box
        near = [(p, b) for p, b in occ if b is not None and b[0] < x1 and x0 < b[2] and b[1] < y1 and y0 < b[3]]
        if not near:
            return False
        if len(near) == 1:
            b = near[0][1]
            if not (b[0] <= x0 and b[1] <= y0 and x1 <= b[2] and y1 <= b[3]):
                # outside-the-frame parts were clipped from box; inside parts must lie in the occluder box
                return False
        hard = self._raster(points, box) >= 128
        if not hard.any():
            return True
        cover = np.zeros_like(hard)
        for p, _ in near:
            cover |= self._raster(p, box) >= 128
        return not np.any(hard & ~cover)

    def _first_frame_score(self) -> float:
        """min over objects visible at frame 0 of visible/drawn area (1 = every object fully visible)."""
        stats: dict[int, list[int]] = {}
        self.render(0, stats=stats)
        score = 1.0
        for layer in self._objects:
            if layer.entry > 0:
                continue
            drawn, visible = stats.get(layer.label, (0, 0))
            if drawn == 0 or visible < 12:
                return 0.0
            score = min(score, visible / drawn / 0.6)
        return min(score, 1.0)

    # ---- rendering -------------------------------------------------------------------------------

    def render(self, t: int, layers: bool = False, stats: dict | None = None):
        """Render frame ``t``: ``(frame, mask)``, or ``(frame, mask, layer_map)`` when ``layers``.

        ``layer_map`` (int16 HxW) is the index of the front-most layer at each pixel (see
        :attr:`layer_kinds`), -1 for background. ``stats``, when given, receives ``{id: [drawn, visible]}``
        pixel counts of the labelled objects.
        """
        if not 0 <= t < self.config.num_frames and stats is None:
            raise IndexError(f"frame {t} outside 0..{self.config.num_frames - 1}")
        h, w = self.height, self.width
        cam = self.camera(t)
        blur = self.config.motion_blur
        cam_prev = self.camera(t - 1) if blur else cam
        m = self._margin
        if self._cam_on:
            bg = cam.copy()
            bg[:, 2] -= cam[:, :2] @ np.array([m, m], float)
            frame = cv2.warpAffine(self._background, bg, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
            if blur:
                ctr_prev = cam_prev[:, :2] @ self._ctr + cam_prev[:, 2]
                ctr_now = cam[:, :2] @ self._ctr + cam[:, 2]
                d = (ctr_now - ctr_prev) * _EXPOSURE
                if math.hypot(d[0], d[1]) >= 1.5:
                    kernel = _line_kernel(round(d[0] * 2) / 2, round(d[1] * 2) / 2)
                    frame = cv2.filter2D(frame, -1, kernel, borderType=cv2.BORDER_REFLECT_101)
        else:
            frame = self._background.copy()
        mask = np.zeros((h, w), np.uint8)
        layer_map = np.full((h, w), -1, np.int16) if layers else None
        for index, layer in enumerate(self._layers):
            self._draw(frame, mask, layer, index, t, cam, cam_prev, layer_map, stats)
        if stats is not None:
            for layer in self._objects:
                entry = stats.setdefault(layer.label, [0, 0])
                entry[1] = int(np.count_nonzero(mask == layer.label))
        if self._light is not None:
            amp, wl, pl = self._light
            gain = 1.0 + amp * math.sin(wl * t + pl)
            frame = cv2.convertScaleAbs(frame, alpha=gain)
        if layers:
            return frame, mask, layer_map
        return frame, mask

    def _geometry(self, layer: _Layer, t: int, cam: np.ndarray):
        """Frame-space contours of a layer at ``t``, and its (2, 2) linear map and offset."""
        centre, radius, theta, sx, sy = self._pose(layer, t, cam)
        c, s = math.cos(theta), math.sin(theta)
        lin = cam[:, :2] @ np.array([[c * sx, -s * sy], [s * sx, c * sy]]) * radius
        off = cam[:, :2] @ centre + cam[:, 2]
        points = []
        wob = layer.wobble_amp
        lin32, off32 = lin.T.astype(np.float32), off.astype(np.float32)
        for contour, angles in zip(layer.contours, layer.angles):
            if wob:
                factor = 1.0 + wob * np.sin(layer.wobble_k * angles + np.float32(layer.wobble_w * t + layer.wobble_ph))
                contour = contour * factor[:, None]
            points.append(contour @ lin32 + off32)
        return points, lin, off

    def _box(self, points: list[np.ndarray], pad: float) -> tuple[int, int, int, int] | None:
        allpts = points[0] if len(points) == 1 else np.concatenate(points)
        lo, hi = allpts.min(axis=0), allpts.max(axis=0)
        x0 = max(int(math.floor(lo[0] - pad)), 0)
        y0 = max(int(math.floor(lo[1] - pad)), 0)
        x1 = min(int(math.ceil(hi[0] + pad)) + 1, self.width)
        y1 = min(int(math.ceil(hi[1] + pad)) + 1, self.height)
        if x0 >= x1 or y0 >= y1:
            return None
        return x0, y0, x1, y1

    @staticmethod
    def _raster(points: list[np.ndarray], box: tuple[int, int, int, int]) -> np.ndarray:
        """Anti-aliased uint8 coverage of the contours inside ``box`` (even-odd: rings have holes)."""
        x0, y0, x1, y1 = box
        alpha = np.zeros((y1 - y0, x1 - x0), np.uint8)
        origin = np.array([x0, y0], np.float32)
        cv2.fillPoly(alpha, [np.round((p - origin) * 16).astype(np.int32) for p in points], 255, cv2.LINE_AA, 4)
        return alpha

    def _draw(self, frame, mask, layer: _Layer, index: int, t: int, cam, cam_prev, layer_map, stats) -> None:
        points, lin, off = self._geometry(layer, t, cam)
        pad = 2.0
        kernel = None
        if self.config.motion_blur and layer.kind != "occluder":
            prev_centre = self._pose(layer, t - 1, cam_prev)[0]
            prev = cam_prev[:, :2] @ prev_centre + cam_prev[:, 2]
            d = (off - prev) * _EXPOSURE
            cap = 0.08 * self._minside
            length = math.hypot(d[0], d[1])
            if length > cap:
                d *= cap / length
                length = cap
            if length >= 1.5:
                kernel = _line_kernel(round(d[0] * 2) / 2, round(d[1] * 2) / 2)
                pad += kernel.shape[0] / 2 + 1
        box = self._box(points, pad)
        if box is None:
            return
        x0, y0, x1, y1 = box
        rw, rh = x1 - x0, y1 - y0
        alpha = self._raster(points, box)
        # texture patch pixel p -> normalised u = (p - (P-1)/2) * k -> frame
        side = layer.texture.shape[0]
        k = 2 * _TEXTURE_HALF / side
        tex_lin = lin * k
        tex_off = off - tex_lin @ np.array([(side - 1) / 2, (side - 1) / 2]) - np.array([x0, y0])
        tex = cv2.warpAffine(
            layer.texture,
            np.hstack([tex_lin, tex_off[:, None]]),
            (rw, rh),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT_101,
        )
        hard = alpha >= 128
        blend = alpha
        if kernel is not None:
            tex = cv2.filter2D(tex, -1, kernel, borderType=cv2.BORDER_REPLICATE)
            blend = cv2.filter2D(alpha, -1, kernel, borderType=cv2.BORDER_CONSTANT)
        roi = frame[y0:y1, x0:x1]
        a3 = cv2.merge([blend, blend, blend])
        fg = cv2.multiply(tex, a3, scale=1 / 255)
        bg = cv2.multiply(roi, cv2.bitwise_not(a3), scale=1 / 255)
        cv2.add(fg, bg, dst=roi)
        mask[y0:y1, x0:x1][hard] = layer.label
        if layer_map is not None:
            layer_map[y0:y1, x0:x1][hard] = index
        if stats is not None and layer.label:
            stats.setdefault(layer.label, [0, 0])[0] = int(np.count_nonzero(hard))


def generate_clip(config: SynthConfig) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream the frames of a clip: ``(frame RGB uint8 (H, W, 3), mask uint8 (H, W))`` per frame.

    Memory does not grow with ``config.num_frames``; use :class:`SynthClip` for the metadata.
    """
    return iter(SynthClip(config))


# --------------------------------------------------------------------------------------------------
# output folders


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


@dataclass
class SynthOutput:
    """What a dataset writer produced (``info``: per-sequence metadata, also in ``vidseg_synth.json``)."""

    root: Path
    layout: str
    sequences: list[str]
    num_frames: int
    seconds: float
    splits: dict[str, list[str]] = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    @property
    def frames_per_second(self) -> float:
        return self.num_frames / self.seconds if self.seconds > 0 else float("inf")


def _sequence_names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i:04d}" for i in range(count)]


def _is_int(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def _check_common(num_sequences: int, jpeg_quality: int) -> None:
    if not _is_int(num_sequences) or num_sequences < 1:
        raise VidsegError(f"number of sequences must be >= 1, got {num_sequences!r}")
    if not _is_int(jpeg_quality) or not 1 <= jpeg_quality <= 100:
        raise VidsegError(f"JPEG quality must be 1..100, got {jpeg_quality!r}")


def _start_output(root: Path, layout: str, entries: list[str], config: SynthConfig) -> None:
    previous = _claim_folder(root)
    if previous is not None:
        _remove_entries(root, previous.get("entries", []))
    # written first, so that an interrupted run leaves a folder that the next run may overwrite
    _write_marker(root, layout, False, entries, config, {})


def write_davis(
    root: str | os.PathLike,
    num_sequences: int = 4,
    config: SynthConfig | None = None,
    *,
    val_fraction: float = 0.5,
    split_names: tuple[str, str] = ("train", "val"),
    years: Sequence[str] = ("2016", "2017"),
    resolution: str | None = None,
    jpeg_quality: int = 90,
    name_prefix: str = "synth",
    progress: Progress | None = None,
) -> SynthOutput:
    """Write a DAVIS-layout benchmark readable by :class:`vidseg.data.davis.DavisIndex`.

    ``JPEGImages/<res>/<seq>/00000.jpg``, ``Annotations/<res>/<seq>/00000.png`` (every frame) and
    ``ImageSets/<year>/<split>.txt`` for each of ``years``; ``<res>`` is ``resolution`` or ``{height}p``
    (pass ``resolution=None`` or that name to ``DavisIndex``). Sequence ``i`` is named
    ``<prefix>0000``... and uses seed ``derive_seed(config.seed, i)``; the last
    ``max(1, round(num_sequences * val_fraction))`` sequences form the second split. Every object is
    visible in frame 0, as on DAVIS.
    """
    config = config or SynthConfig()
    _check_common(num_sequences, jpeg_quality)
    if not 0.0 <= val_fraction <= 1.0:
        raise VidsegError(f"val_fraction must be in [0, 1], got {val_fraction}")
    root = Path(root)
    res = resolution or resolution_name(config.height)
    names = _sequence_names(name_prefix, num_sequences)
    n_val = min(num_sequences, max(1, round(num_sequences * val_fraction)))
    splits = {split_names[0]: names[: num_sequences - n_val], split_names[1]: names[num_sequences - n_val :]}
    entries = [f"JPEGImages/{res}/{n}" for n in names] + [f"Annotations/{res}/{n}" for n in names]
    entries += [f"ImageSets/{y}/{s}.txt" for y in years for s in splits]
    _start_output(root, "davis", entries, config)
    start = time.perf_counter()
    infos = {}
    total = 0
    base = dataclasses.replace(config, late_entry=False)
    for index, name in enumerate(names):
        clip = SynthClip(dataclasses.replace(base, seed=derive_seed(config.seed, index)))
        vis = _Visibility(range(1, config.num_objects + 1))
        image_dir = root / "JPEGImages" / res / name
        mask_dir = root / "Annotations" / res / name
        for t, (frame, mask) in enumerate(clip):
            _write_jpeg(image_dir / f"{t:05d}.jpg", frame, jpeg_quality)
            write_mask(mask_dir / f"{t:05d}.png", mask)
            vis.update(t, mask)
            total += 1
            if progress is not None:
                progress(1)
        infos[name] = {**clip.metadata(), "visibility": vis.to_json()}
    for year in years:
        for split, members in splits.items():
            atomic_write_text(root / "ImageSets" / str(year) / f"{split}.txt", "".join(f"{n}\n" for n in members))
    seconds = time.perf_counter() - start
    _write_marker(root, "davis", True, entries, config, {"resolution": res, "splits": splits, "sequences": infos})
    return SynthOutput(root, "davis", names, total, seconds, splits, infos)


def write_youtube_vos(
    root: str | os.PathLike,
    num_sequences: int = 5,
    config: SynthConfig | None = None,
    *,
    sparse_every: int = 5,
    late_entry: bool = True,
    unseen_categories: Sequence[str] = ("heart", "ring"),
    jpeg_quality: int = 90,
    name_prefix: str = "synth",
    progress: Progress | None = None,
) -> SynthOutput:
    """Write a YouTube-VOS-layout benchmark readable by :class:`vidseg.data.youtube_vos.YouTubeVOSIndex`.

    ``train/JPEGImages/<vid>/*.jpg`` (every frame), ``train/Annotations/<vid>/*.png`` (every
    ``sparse_every``-th frame; 1 = dense) and ``train/meta.json`` listing each object's category and the
    annotated frames in which it is visible. With ``late_entry`` some objects first appear after
    frame 0 (at least one per video with two or more objects). ``unseen_categories`` occur only in the
    videos that the local ``val-20`` split holds out, each of which has at least one such object, so
    seen/unseen scores mean something there.
    """
    from vidseg.data.youtube_vos import split_train_videos  # numpy-only module

    config = config or SynthConfig()
    _check_common(num_sequences, jpeg_quality)
    if not _is_int(sparse_every) or sparse_every < 1:
        raise VidsegError(f"sparse_every must be an integer >= 1, got {sparse_every!r}")
    unseen = tuple(unseen_categories or ())
    for name in unseen:
        if name not in SHAPES:
            raise VidsegError(f"unknown shape category {name!r}", fix=f"choose from {', '.join(SHAPES)}")
    seen = tuple(c for c in config.categories if c not in unseen)
    if unseen and not seen:
        raise VidsegError("every category is unseen", fix="leave at least one category for the training videos")
    root = Path(root)
    split_dir = root / "train"
    names = _sequence_names(name_prefix, num_sequences)
    _, held_out = split_train_videos(names)
    entries = [f"train/JPEGImages/{n}" for n in names] + [f"train/Annotations/{n}" for n in names] + ["train/meta.json"]
    _start_output(root, "youtube-vos", entries, config)
    start = time.perf_counter()
    meta: dict[str, dict] = {}
    infos = {}
    total = 0
    base = dataclasses.replace(config, late_entry=late_entry)
    for index, name in enumerate(names):
        seed = derive_seed(config.seed, index)
        cfg = dataclasses.replace(base, seed=seed)
        if unseen and config.object_categories is None:
            pick = np.random.default_rng([seed, 0x5EE])
            if name in held_out:
                pool = list(unseen) + list(seen)
                chosen = [unseen[int(pick.integers(len(unseen)))]]
                chosen += [pool[int(pick.integers(len(pool)))] for _ in range(cfg.num_objects - 1)]
                chosen = [chosen[int(i)] for i in pick.permutation(cfg.num_objects)]
                cfg = dataclasses.replace(cfg, object_categories=tuple(chosen))
            else:
                cfg = dataclasses.replace(cfg, categories=seen)
        clip = SynthClip(cfg)
        categories = clip.categories
        frames_of: dict[int, list[str]] = {i: [] for i in categories}
        vis = _Visibility(sorted(categories))
        image_dir = split_dir / "JPEGImages" / name
        mask_dir = split_dir / "Annotations" / name
        for t, (frame, mask) in enumerate(clip):
            _write_jpeg(image_dir / f"{t:05d}.jpg", frame, jpeg_quality)
            present = vis.update(t, mask)
            if t % sparse_every == 0:
                write_mask(mask_dir / f"{t:05d}.png", mask)
                for i, frames in frames_of.items():
                    if present[i]:
                        frames.append(f"{t:05d}")
            total += 1
            if progress is not None:
                progress(1)
        meta[name] = {
            "objects": {str(i): {"category": categories[i], "frames": frames} for i, frames in frames_of.items() if frames}
        }
        infos[name] = {**clip.metadata(), "visibility": vis.to_json(), "held_out": name in held_out}
    atomic_write_text(split_dir / "meta.json", json.dumps({"videos": meta}, indent=1) + "\n")
    seconds = time.perf_counter() - start
    splits = {"train-80": [n for n in names if n not in held_out], "val-20": list(held_out)}
    extra = {"sparse_every": sparse_every, "unseen_categories": list(unseen), "splits": splits, "sequences": infos}
    _write_marker(root, "youtube-vos", True, entries, config, extra)
    return SynthOutput(root, "youtube-vos", names, total, seconds, splits, infos)


@dataclass
class SynthVideo:
    """Paths written by :func:`write_video`."""

    video: Path
    first_mask: Path
    gt_dir: Path | None
    num_frames: int
    fps: float
    objects: dict[int, str]
    seconds: float = 0.0


def _video_paths(path: Path) -> tuple[Path, Path]:
    return path.with_name(f"{path.stem}_mask.png"), path.with_name(f"{path.stem}_gt")


def _write_video_file(path: Path, config: SynthConfig, fps: float, gt: bool, progress: Progress | None):
    first_mask_path, gt_dir = _video_paths(path)
    start = time.perf_counter()
    clip = SynthClip(dataclasses.replace(config, late_entry=False))
    vis = _Visibility(sorted(clip.categories))
    with atomic_path(path) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (config.width, config.height))
        if not writer.isOpened():
            raise VidsegError(
                "OpenCV cannot open an mp4v video writer", path, "install opencv-python(-headless) with FFmpeg"
            )
        try:
            for t, (frame, mask) in enumerate(clip):
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
                if t == 0:
                    write_mask(first_mask_path, mask)
                if gt:
                    write_mask(gt_dir / f"{t:05d}.png", mask)
                vis.update(t, mask)
                if progress is not None:
                    progress(1)
        finally:
            writer.release()
    info = {**clip.metadata(), "visibility": vis.to_json(), "fps": fps}
    result = SynthVideo(path, first_mask_path, gt_dir if gt else None, config.num_frames, float(fps), clip.categories)
    result.seconds = time.perf_counter() - start
    return result, info


def write_video(
    path: str | os.PathLike,
    config: SynthConfig | None = None,
    *,
    fps: float = 30.0,
    gt: bool = True,
    progress: Progress | None = None,
) -> SynthVideo:
    """Write one clip as ``path`` (.mp4, OpenCV ``mp4v``), ``<stem>_mask.png`` (the frame-0 mask; every
    object is visible there) and, with ``gt``, ``<stem>_gt/00000.png ...`` (every frame's mask).

    Streams frame by frame: fine for thousands of frames at 480x854. The folder of ``path`` must be
    new, empty or a previous synth output; other videos written there before are kept.
    """
    config = config or SynthConfig()
    path = Path(path)
    if path.suffix.lower() != ".mp4":
        raise VidsegError("synthetic videos are written as .mp4", path, "give a path ending in .mp4")
    if not fps > 0:
        raise VidsegError(f"fps must be positive, got {fps}")
    root = path.parent
    previous = _claim_folder(root)
    mask_path, gt_dir = _video_paths(path)
    own = [path.name, mask_path.name, gt_dir.name]
    entries = list(previous.get("entries", [])) if previous else []
    if previous is not None:
        _remove_entries(root, own)
    entries += [e for e in own if e not in entries]
    sequences = dict(previous.get("sequences", {})) if previous and previous.get("layout") == "video" else {}
    _write_marker(root, "video", False, entries, config, {"sequences": sequences})
    result, info = _write_video_file(path, config, fps, gt, progress)
    sequences[path.stem] = info
    _write_marker(root, "video", True, entries, config, {"sequences": sequences})
    return result


def write_videos(
    root: str | os.PathLike,
    num_sequences: int = 1,
    config: SynthConfig | None = None,
    *,
    fps: float = 30.0,
    gt: bool = True,
    name_prefix: str = "synth",
    progress: Progress | None = None,
) -> SynthOutput:
    """The ``video`` layout of ``vidseg data synth``: ``ROOT/<name>.mp4``, ``<name>_mask.png`` and
    ``<name>_gt/`` for each sequence (seeds as in :func:`write_davis`)."""
    config = config or SynthConfig()
    _check_common(num_sequences, 90)
    if not fps > 0:
        raise VidsegError(f"fps must be positive, got {fps}")
    root = Path(root)
    names = _sequence_names(name_prefix, num_sequences)
    entries = [e for n in names for e in (f"{n}.mp4", f"{n}_mask.png", f"{n}_gt")]
    _start_output(root, "video", entries, config)
    start = time.perf_counter()
    infos = {}
    for index, name in enumerate(names):
        cfg = dataclasses.replace(config, seed=derive_seed(config.seed, index))
        _, infos[name] = _write_video_file(root / f"{name}.mp4", cfg, fps, gt, progress)
    seconds = time.perf_counter() - start
    _write_marker(root, "video", True, entries, config, {"sequences": infos})
    return SynthOutput(root, "video", names, num_sequences * config.num_frames, seconds, {}, infos)


@dataclass
class DemoClip:
    """Paths written by :func:`make_demo_clip`."""

    frames_dir: Path
    first_mask: Path
    gt_dir: Path
    num_frames: int
    objects: dict[int, str]


def make_demo_clip(
    out_dir: str | os.PathLike,
    seed: int = 0,
    num_frames: int = 40,
    size: tuple[int, int] = (256, 448),
    num_objects: int = 2,
    **overrides,
) -> DemoClip:
    """Write a small clip for demos: ``frames/00000.jpg ...``, ``first_mask.png`` and ``gt/00000.png ...``.

    ``overrides`` are further :class:`SynthConfig` fields (e.g. ``num_distractors=0``).
    """
    height, width = size
    config = SynthConfig(seed=seed, num_frames=num_frames, height=height, width=width, num_objects=num_objects, **overrides)
    config = dataclasses.replace(config, late_entry=False)
    root = Path(out_dir)
    entries = ["frames", "gt", "first_mask.png"]
    _start_output(root, "demo", entries, config)
    clip = SynthClip(config)
    vis = _Visibility(sorted(clip.categories))
    for t, (frame, mask) in enumerate(clip):
        _write_jpeg(root / "frames" / f"{t:05d}.jpg", frame, 95)
        write_mask(root / "gt" / f"{t:05d}.png", mask)
        if t == 0:
            write_mask(root / "first_mask.png", mask)
        vis.update(t, mask)
    info = {**clip.metadata(), "visibility": vis.to_json()}
    _write_marker(root, "demo", True, entries, config, {"sequences": {"demo": info}})
    return DemoClip(root / "frames", root / "first_mask.png", root / "gt", num_frames, clip.categories)
