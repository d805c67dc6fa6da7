"""A short synthetic clip that looks like a DAVIS-2016 video: one animal trotting across a meadow.

Unlike the flat shapes of :mod:`vidseg.data.synth`, a :class:`SceneClip` is rendered through a pinhole
camera standing 1.3 m above a ground plane:

* a sky gradient with soft clouds, distant hills and a treeline at infinity (they move only when the
  camera turns);
* a perspective meadow (grass, dry patches, a dirt path) whose texture grows towards the bottom of the
  frame and fades into haze, motion-blurred by sampling the moving camera during the exposure;
* one articulated quadruped (body, neck, head, tail, four legs swinging in a trot) with fur texture,
  shading lit from one side, a soft shadow and motion blur; it walks across the scene while moving
  towards or away from the camera, so its scale changes;
* a camera that tracks the animal sideways, turns a little, zooms slowly and shakes slightly;
* a tree trunk close to the camera that passes in front of the animal for a few frames;
* vignetting, sensor noise and JPEG compression.

The ground truth is exact: id 1 on the animal's pixels that are not hidden by the trunk, 0 elsewhere.
The same seed gives byte-identical frames and masks.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vidseg.data.synth import MAX_SIZE, DemoClip
from vidseg.data.synth.folders import _start_output, _write_jpeg, _write_marker
from vidseg.data.synth.layers import _smoothstep
from vidseg.data.synth.raster import _line_kernel
from vidseg.data.synth.textures import _fractal
from vidseg.errors import VidsegError
from vidseg.io.masks import write_mask

MIN_HEIGHT = 64
MIN_WIDTH = 96
JPEG_QUALITY = 85

_CAMERA_HEIGHT = 1.3  # metres above the ground
_EXPOSURE = 0.5  # fraction of the inter-frame motion smeared by motion blur
_GROUND_SAMPLES = 3  # camera positions averaged over the exposure for the ground
_TILE = 128  # side of the periodic noise tiles that texture the ground
_TILE_CELLS = 8  # noise cells along a tile side
_FUR_RES = 64.0  # fur texture pixels per metre
_FUR_BOX = (-2.0, 2.0, -0.3, 2.7)  # object-space extent (x0, x1, y0, y1) in metres covered by the fur
_BARK_RES = 200.0  # bark texture pixels per metre
_TRUNK_TOP = 3.0  # metres of trunk rendered above the ground

_FUR_COLOURS = np.array(
    [[118, 82, 52], [140, 78, 42], [118, 114, 108], [176, 146, 104], [62, 52, 45], [196, 184, 160]], np.float32
)


@dataclass(frozen=True)
class SceneConfig:
    """Size, length and seed of a scene clip (validated on construction)."""

    seed: int = 0
    num_frames: int = 30
    height: int = 240
    width: int = 432

    def __post_init__(self) -> None:
        for name in ("seed", "num_frames", "height", "width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise VidsegError(f"scene {name} must be an integer, got {value!r}")
        if self.seed < 0:
            raise VidsegError(f"scene seed must be >= 0, got {self.seed}")
        if self.num_frames < 2:
            raise VidsegError(f"scene num_frames must be >= 2, got {self.num_frames}")
        if not (MIN_HEIGHT <= self.height <= MAX_SIZE and MIN_WIDTH <= self.width <= MAX_SIZE):
            raise VidsegError(
                f"scene size must be at least {MIN_HEIGHT}x{MIN_WIDTH} and at most {MAX_SIZE}x{MAX_SIZE} "
                f"(height x width), got {self.height}x{self.width}"
            )

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------------
# geometry helpers (object space: metres, x forward, y up, feet at y = 0)


def _ellipse(cx: float, cy: float, rx: float, ry: float, angle: float = 0.0, n: int = 24) -> np.ndarray:
    th = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x, y = rx * np.cos(th), ry * np.sin(th)
    c, s = math.cos(angle), math.sin(angle)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def _tapered(points: np.ndarray, widths: list[float]) -> np.ndarray:
    """Polygon around a polyline, ``widths[i]`` wide at ``points[i]``."""
    tangent = np.gradient(points, axis=0)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-9)
    offset = normal * (np.asarray(widths)[:, None] / 2)
    return np.concatenate([points + offset, (points - offset)[::-1]])


def _direction(angle: float) -> np.ndarray:
    return np.array([math.cos(angle), math.sin(angle)])


@dataclass(frozen=True)
class _Animal:
    """Proportions (metres, radians) of a four-legged animal seen from the side."""

    length: float
    depth: float
    leg: float
    neck: float
    neck_angle: float
    head: float
    head_angle: float
    tail: float
    tail_angle: float
    stride: float

    @staticmethod
    def random(rng: np.random.Generator) -> _Animal:
        length = rng.uniform(1.0, 1.35)
        leg = length * rng.uniform(0.5, 0.65)
        return _Animal(
            length=length,
            depth=length * rng.uniform(0.36, 0.44),
            leg=leg,
            neck=length * rng.uniform(0.3, 0.45),
            neck_angle=math.radians(rng.uniform(35, 60)),
            head=length * rng.uniform(0.28, 0.36),
            head_angle=math.radians(rng.uniform(-50, -20)),
            tail=length * rng.uniform(0.25, 0.45),
            tail_angle=math.radians(rng.uniform(200, 235)),
            stride=2.4 * leg,
        )

    def _limb(self, hip: np.ndarray, reach: float, swing: float, bend: float, front: bool) -> list[np.ndarray]:
        d = self.depth
        upper_angle, lower_angle = (swing + 0.35 * bend, swing - bend) if front else (swing - 0.3 * bend, swing + 0.6 * bend)
        knee = hip + 0.48 * reach * np.array([math.sin(upper_angle), -math.cos(upper_angle)])
        foot = knee + 0.52 * reach * np.array([math.sin(lower_angle), -math.cos(lower_angle)])
        widths = [0.4 * d, 0.18 * d, 0.13 * d] if front else [0.55 * d, 0.2 * d, 0.13 * d]
        return [_tapered(np.stack([hip, knee, foot]), widths), _ellipse(foot[0], foot[1] + 0.02 * d, 0.07 * d, 0.06 * d)]

    def parts(self, phase: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Polygons at gait ``phase``: ``(near, far)``; the far-side legs are drawn behind and darker."""
        length, d = self.length, self.depth
        swing_amp, bend_amp = 0.42, 0.9
        front_reach = self.leg + 0.45 * d
        drop = front_reach * (1.0 - math.cos(swing_amp * abs(math.sin(phase))))
        body_y = self.leg + d / 2 - drop
        near: list[np.ndarray] = []
        far: list[np.ndarray] = []
        # trot: diagonal legs move together
        for front, x, side_phase in ((True, 0.34, 0.0), (False, -0.34, math.pi)):
            hip_y = body_y - (0.05 if front else 0.0) * d
            reach = hip_y + drop
            for legs, shift, extra in ((near, 0.0, 0.0), (far, 0.05 * length, math.pi)):
                p = phase + side_phase + extra
                hip = np.array([x * length + shift, hip_y])
                legs.extend(self._limb(hip, reach, swing_amp * math.sin(p), bend_amp * max(0.0, math.cos(p)), front))
        th = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        body = np.stack([length / 2 * np.cos(th), body_y + d / 2 * np.sin(th) * (1 + 0.12 * np.cos(th))], axis=1)
        neck_base = np.array([0.36 * length, body_y + 0.1 * d])
        neck_end = neck_base + self.neck * _direction(self.neck_angle)
        neck = _tapered(np.stack([neck_base, (neck_base + neck_end) / 2, neck_end]), [0.6 * d, 0.42 * d, 0.32 * d])
        head_dir = _direction(self.head_angle)
        head_line = np.stack([neck_end - 0.1 * self.head * head_dir, neck_end + 0.45 * self.head * head_dir,
                              neck_end + self.head * head_dir])
        head = _tapered(head_line, [0.42 * self.head, 0.4 * self.head, 0.22 * self.head])
        skull = _ellipse(neck_end[0], neck_end[1], 0.24 * self.head, 0.22 * self.head)
        ear_base = neck_end + np.array([-0.05, 0.12]) * self.head
        ear = np.stack([ear_base, ear_base + np.array([-0.12, 0.35]) * self.head, ear_base + np.array([0.12, 0.05]) * self.head])
        tail_root = np.array([-0.46 * length, body_y + 0.25 * d])
        tail_angle = self.tail_angle + 0.15 * math.sin(2 * phase)
        tail_line = np.stack([tail_root, tail_root + 0.5 * self.tail * _direction(tail_angle),
                              tail_root + self.tail * _direction(tail_angle - 0.3)])
        tail = _tapered(tail_line, [0.14 * d, 0.09 * d, 0.03 * d])
        near.extend([body, neck, head, skull, ear, tail])
        return near, far


# --------------------------------------------------------------------------------------------------
# textures


def _periodic_noise(rng: np.random.Generator, size: int, cells: int, octaves: int = 3) -> np.ndarray:
    """A (size, size) float32 fractal noise tile in [0, 1] that repeats seamlessly."""
    acc = np.zeros((size, size), np.float32)
    amp = 1.0
    for _ in range(octaves):
        grid = np.tile(rng.random((cells, cells), dtype=np.float32), (3, 3))
        acc += amp * cv2.resize(grid, (3 * size, 3 * size), interpolation=cv2.INTER_CUBIC)[size : 2 * size, size : 2 * size]
        amp *= 0.5
        cells *= 2
    lo, hi = float(acc.min()), float(acc.max())
    return (acc - lo) / max(hi - lo, 1e-6)


def _jitter(rng: np.random.Generator, colour, spread: float = 0.08) -> np.ndarray:
    return np.asarray(colour, np.float32) * rng.uniform(1 - spread, 1 + spread, 3).astype(np.float32)


def _soft_step(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    x = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _fur_texture(rng: np.random.Generator) -> np.ndarray:
    x0, x1, y0, y1 = _FUR_BOX
    h, w = int((y1 - y0) * _FUR_RES), int((x1 - x0) * _FUR_RES)
    base = _jitter(rng, _FUR_COLOURS[int(rng.integers(len(_FUR_COLOURS)))])
    fur = base * (0.82 + 0.36 * _fractal(rng, h, w, 10.0))[..., None]
    if rng.random() < 0.35:  # piebald patches
        patches = _soft_step(_fractal(rng, h, w, 40.0, octaves=3), 0.55, 0.62)[..., None]
        other = _jitter(rng, _FUR_COLOURS[int(rng.integers(len(_FUR_COLOURS)))])
        fur = fur * (1 - patches) + other * (0.9 + 0.2 * _fractal(rng, h, w, 10.0)[..., None]) * patches
    return np.clip(fur, 0, 255).astype(np.uint8)


def _bark_texture(rng: np.random.Generator, radius: float, light: float) -> np.ndarray:
    """Bark strip (rows: height from the top, columns: across the trunk) shaded as a lit cylinder."""
    h, w = int(_TRUNK_TOP * _BARK_RES), max(int(2 * radius * _BARK_RES), 8)
    streaks = cv2.resize(_fractal(rng, h // 10, w, 5.0), (w, h), interpolation=cv2.INTER_CUBIC)
    cracks = _soft_step(streaks, 0.25, 0.4)
    grain = _fractal(rng, h, w, 12.0, octaves=3)
    base = _jitter(rng, (92, 80, 68), 0.12)
    bark = base * (0.5 + 0.5 * cracks * (0.8 + 0.4 * grain))[..., None]
    across = (np.arange(w, dtype=np.float32) + 0.5) / w * 2 - 1
    lit = np.clip(light * 0.7 * across + 0.7 * np.sqrt(1 - across**2), 0, None)
    bark *= (0.3 + 0.85 * lit)[None, :, None]
    return np.clip(bark, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# the clip


@dataclass(frozen=True)
class _Camera:
    """Pinhole camera at one instant: sideways position (m), turn (rad), horizon row, focal length (px)."""

    track: float
    yaw: float
    horizon: float
    focal: float


class SceneClip:
    """One animal crossing a natural-looking scene; frames rendered on demand by :meth:`render`."""

    def __init__(self, config: SceneConfig):
        self.config = config
        h, w = config.height, config.width
        self.height, self.width = h, w
        self._cx, self._cy = (w - 1) / 2, (h - 1) / 2
        rng = np.random.default_rng(config.seed)
        last = config.num_frames - 1

        # camera: tracks the animal so that it drifts across the frame; slow turn, zoom and shake
        self._focal = min(2.4 * h, 1.35 * w)
        self._zoom = rng.uniform(-0.05, 0.1)
        self._pitch = (self._cy - 0.33 * h) / self._focal
        self._turn = (rng.uniform(0.01, 0.025), rng.uniform(0.03, 0.08), rng.uniform(0, 2 * np.pi))
        self._shake = rng.uniform(0.4, 1.2, 4) / self._focal, rng.uniform(0.5, 1.3, 4), rng.uniform(0, 2 * np.pi, 4)

        # the animal: world position (X, Z) in metres; it walks along X and towards or away along Z
        self.direction = 1 if rng.random() < 0.5 else -1
        self._speed = rng.uniform(0.11, 0.16)
        near, far = rng.uniform(5.3, 5.8), rng.uniform(6.8, 7.6)
        self._depths = (far, near) if rng.random() < 0.6 else (near, far)
        self._drift = min(0.36 * w / last, 0.012 * w)
        self._phase0 = rng.uniform(0, 2 * np.pi)
        self.animal = _Animal.random(rng)
        self._fur = _fur_texture(rng)
        self._light = 1 if rng.random() < 0.5 else -1  # sunlight from the right (1) or the left (-1)

        # ground colours and the sky panorama (at infinity: only the camera's turn moves it)
        self._grass = _jitter(rng, (88, 108, 56))
        self._dry = _jitter(rng, (150, 138, 92))
        self._dirt = _jitter(rng, (132, 108, 80))
        self._tiles = [_periodic_noise(rng, _TILE, _TILE_CELLS) for _ in range(3)]
        self._tile_offsets = rng.uniform(0, _TILE, (6, 2)).astype(np.float32)
        self._grass_cover = rng.uniform(0.35, 0.6)
        overcast = rng.random() < 0.3
        self._zenith = _jitter(rng, (150, 158, 168) if overcast else (112, 146, 188), 0.05)
        self._haze = _jitter(rng, (198, 204, 206), 0.04)
        self._ground_haze = 0.6 * self._haze + 0.4 * self._grass
        self._sky, self._sky_origin = self._make_sky(rng, overcast)

        # a trunk close to the camera passes in front of the animal around t_occ
        t_occ = last * rng.uniform(0.4, 0.6)
        cam = self.camera(t_occ)
        x_obj, _, scale = self._object_place(t_occ, cam)
        self._trunk_depth = rng.uniform(1.8, 2.5)
        self._trunk_radius = rng.uniform(0.08, 0.12)
        self._trunk_lean = rng.uniform(-0.06, 0.06)
        target = x_obj + rng.uniform(-0.2, 0.2) * self.animal.length * scale
        self._trunk_world_x = cam.track + self._trunk_depth * ((target - self._cx) / cam.focal + cam.yaw)
        self._bark = _bark_texture(rng, self._trunk_radius, self._light)

        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((xs - self._cx) / (w / 2)) ** 2 + ((ys - self._cy) / (h / 2)) ** 2
        self._vignette = (1.0 - 0.12 * r2)[..., None]
        self._xs = xs[0]

    def __len__(self) -> int:
        return self.config.num_frames

    # ---- motion ----------------------------------------------------------------------------------

    def _progress(self, t: float) -> float:
        return t / (self.config.num_frames - 1)

    def _object_world(self, t: float) -> tuple[float, float]:
        far, near = self._depths
        return self.direction * self._speed * t, far + (near - far) * self._progress(t)

    def camera(self, t: float) -> _Camera:
        """The camera at (possibly fractional) frame time ``t``."""
        focal = self._focal * (1.0 + self._zoom * _smoothstep(self._progress(t)))
        amp, freq, phase = self._turn
        shake_amp, shake_freq, shake_phase = self._shake
        shake = shake_amp * np.sin(shake_freq * t + shake_phase)
        yaw = amp * math.sin(freq * t + phase) + float(shake[0] + shake[1])
        pitch = self._pitch + float(shake[2] + shake[3])
        x_target = self._cx + self.direction * self._drift * (t - (self.config.num_frames - 1) / 2)
        obj_x, obj_z = self._object_world(t)
        track = obj_x - obj_z * ((x_target - self._cx) / focal + yaw)
        return _Camera(track, yaw, self._cy - focal * pitch, focal)

    def _object_place(self, t: float, cam: _Camera) -> tuple[float, float, float]:
        """Image column of the animal's centre, image row of its feet, and pixels per metre."""
        obj_x, obj_z = self._object_world(t)
        x = self._cx + cam.focal * ((obj_x - cam.track) / obj_z - cam.yaw)
        return x, cam.horizon + cam.focal * _CAMERA_HEIGHT / obj_z, cam.focal / obj_z

    # ---- background ------------------------------------------------------------------------------

    def _make_sky(self, rng: np.random.Generator, overcast: bool) -> tuple[np.ndarray, tuple[float, float]]:
        """Panorama of sky, clouds, hills and treeline at 1 px per ``1/focal`` rad, and its origin angles."""
        focal, last = self._focal, self.config.num_frames - 1
        times = np.linspace(-1.0, last + 1.0, 4 * last + 9)
        cams = [self.camera(float(t)) for t in times]
        yaws = [c.yaw for c in cams]
        min_focal = min(c.focal for c in cams)
        half_w = (self._cx + 2) / min_focal
        left, right = min(yaws) - half_w, max(yaws) + half_w
        top = -(max(c.horizon for c in cams) + 2) / min_focal
        bottom = 0.05
        h, w = math.ceil((bottom - top) * focal) + 1, math.ceil((right - left) * focal) + 1
        elevation = -(top + np.arange(h, dtype=np.float32)[:, None] / focal)  # radians above the horizon
        height_frac = np.clip(elevation / max(-top, 1e-6), 0, 1) ** 0.7
        sky = self._haze * (1 - height_frac[..., None]) + self._zenith * height_frac[..., None]
        sky = np.broadcast_to(sky, (h, w, 3)).copy()

        clouds = cv2.resize(_fractal(rng, h, max(w // 3, 2), h / 3), (w, h), interpolation=cv2.INTER_CUBIC)
        threshold = rng.uniform(0.35, 0.55) if not overcast else 0.2
        cover = _soft_step(clouds, threshold, threshold + 0.35) * np.clip(elevation / 0.03, 0, 1)
        shade = _fractal(rng, h, w, h / 4, octaves=3)
        cloud = np.array([236, 236, 233], np.float32) * (0.78 + 0.22 * shade)[..., None]
        sky = sky * (1 - cover[..., None]) + cloud * cover[..., None]

        for base, amp, colour, fine in (
            (rng.uniform(0.02, 0.035), 0.03, self._haze * 0.5 + np.float32([90, 108, 104]) * 0.5, 0.0),
            (rng.uniform(0.006, 0.014), 0.012, _jitter(rng, (50, 68, 42)), 1.0),
        ):
            ridge = base + amp * _fractal(rng, 1, w, w / 3)[0]
            if fine:  # a treeline: bumpy crowns
                ridge = ridge + 0.006 * _fractal(rng, 1, w, 6.0, octaves=2)[0]
            cover = np.clip((ridge[None, :] - elevation) * focal + 0.5, 0, 1)[..., None]
            texture = 0.85 + 0.3 * _fractal(rng, h, w, 4.0 + 8.0 * (1 - fine), octaves=3)[..., None]
            sky = sky * (1 - cover) + colour * texture * cover
        return np.clip(sky, 0, 255).astype(np.float32), (left, top)

    def _sky_view(self, cam: _Camera) -> np.ndarray:
        # panorama column c looks at (left + c / focal) rad right of the start, row r at (top + r / focal) rad below
        # the horizon; frame pixel (x, y) looks at ((x - cx) / f + yaw, (y - horizon) / f)
        left, top = self._sky_origin
        ratio = self._focal / cam.focal
        matrix = np.array(
            [
                [ratio, 0.0, (cam.yaw - self._cx / cam.focal - left) * self._focal],
                [0.0, ratio, (-cam.horizon / cam.focal - top) * self._focal],
            ]
        )
        return cv2.warpAffine(
            self._sky, matrix, (self.width, self.height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )

    def _ground(self, cam: _Camera, row0: int) -> tuple[np.ndarray, np.ndarray]:
        """Colour and coverage of the ground plane on rows ``row0..height`` seen by ``cam``."""
        ys = np.arange(row0, self.height, dtype=np.float32)[:, None]
        below = ys - np.float32(cam.horizon)
        cover = np.clip(below + 0.5, 0, 1)
        depth = np.float32(_CAMERA_HEIGHT * cam.focal) / np.maximum(below, 0.3)
        depth = np.minimum(depth, 400.0)
        lateral = cam.track + ((self._xs[None, :] - self._cx) / cam.focal + cam.yaw) * depth
        footprint = depth / cam.focal * np.maximum(1.0, depth / _CAMERA_HEIGHT)  # metres per pixel

        def first_row(cell: float) -> int:
            """First row where texture cells of ``cell`` metres span two pixels or more (not aliased)."""
            sharp = footprint[:, 0] < cell
            return int(np.argmax(sharp)) if sharp.any() else len(sharp)

        def sample(tile: int, cell: float, octave: int, start: int = 0, stretch: float = 1.0) -> np.ndarray:
            """Tile ``tile`` laid on the ground with ``cell``-metre cells (``stretch`` times longer along Z)."""
            if start >= len(depth):
                return np.zeros((0, lateral.shape[1]), np.float32)
            scale = np.float32(_TILE / _TILE_CELLS / cell)
            ox, oy = self._tile_offsets[octave]
            u = np.mod(lateral[start:] * scale + ox, _TILE)
            v = np.mod(depth[start:] * (scale / stretch) + oy, _TILE)
            v = np.ascontiguousarray(np.broadcast_to(v, u.shape))
            return cv2.remap(self._tiles[tile], u, v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)

        dry = _soft_step(sample(0, 3.0, 0), self._grass_cover, self._grass_cover + 0.25)[..., None]
        colour = self._grass * (1 - dry) + self._dry * dry
        far, near = self._depths
        path_depth = far + (near - far) * (lateral / (self.direction * self._speed * (self.config.num_frames - 1)))
        edge = 0.55 + 0.25 * (sample(1, 0.8, 1) - 0.5)
        path = _soft_step(edge - np.abs(depth - path_depth), 0.0, 0.15)[..., None] * 0.85
        colour = colour * (1 - path) + self._dirt * path
        detail = np.ones_like(lateral)
        for octave, (cell, amp) in enumerate(((0.6, 0.35), (0.2, 0.3), (0.07, 0.25)), start=2):
            start = first_row(cell)
            fade = np.clip(2.0 - 2.0 * footprint[start:] / cell, 0, 1)
            detail[start:] += amp * fade * (sample(octave % 3, cell, octave, start) - 0.5)
        # grass blades: fine along X, long along Z, so they stand up in the image
        blade = 0.03
        sharp = depth[:, 0] / cam.focal < blade
        start = int(np.argmax(sharp)) if sharp.any() else len(sharp)
        across = np.clip(2.0 - 2.0 * depth[start:] / cam.focal / blade, 0, 1) * (1 - path[start:, :, 0])
        detail[start:] += 0.3 * across * (sample(2, blade, 5, start, stretch=8.0) - 0.5)
        colour = colour * detail[..., None]
        haze = (1 - np.exp(-depth / 90.0))[..., None]
        colour = colour * (1 - haze) + self._ground_haze * haze
        return colour, cover

    # ---- object and trunk -------------------------------------------------------------------------

    def _animal_layers(self, t: float, cam: _Camera, box_pad: int):
        """Near/far coverage (uint8) of the animal at ``t`` in its box, the box, and the object transform."""
        x, foot_y, scale = self._object_place(t, cam)
        phase = self._phase0 + 2 * np.pi * self._speed * t / self.animal.stride
        near, far = self.animal.parts(phase)
        flip = np.array([self.direction * scale, -scale])
        to_image = [np.array([x, foot_y]) + p * flip for p in near], [np.array([x, foot_y]) + p * flip for p in far]
        points = np.concatenate(to_image[0] + to_image[1])
        x0 = max(math.floor(points[:, 0].min()) - box_pad, 0)
        y0 = max(math.floor(points[:, 1].min()) - box_pad, 0)
        x1 = min(math.ceil(points[:, 0].max()) + box_pad + 1, self.width)
        y1 = min(math.ceil(points[:, 1].max()) + box_pad + 1, self.height)
        if x0 >= x1 or y0 >= y1:
            return None
        origin = np.array([x0, y0])
        layers = []
        for polygons in to_image:
            alpha = np.zeros((y1 - y0, x1 - x0), np.uint8)
            for polygon in polygons:
                cv2.fillPoly(alpha, [np.round((polygon - origin) * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
            layers.append(alpha)
        return layers[0], layers[1], (x0, y0, x1, y1), (x, foot_y, scale)

    def _draw_shadow(self, frame: np.ndarray, t: float, cam: _Camera) -> None:
        x, foot_y, scale = self._object_place(t, cam)
        _, depth = self._object_world(t)
        half_w = scale * (0.5 * self.animal.length + 0.2)
        half_h = max(cam.focal * _CAMERA_HEIGHT * 0.3 / depth**2, 1.5)
        centre = (x - self._light * 0.3 * scale, foot_y)
        pad = int(half_h * 3 + 4)
        x0, x1 = max(int(centre[0] - half_w) - pad, 0), min(int(centre[0] + half_w) + pad, self.width)
        y0, y1 = max(int(centre[1] - half_h) - pad, 0), min(int(centre[1] + half_h) + pad, self.height)
        if x0 >= x1 or y0 >= y1:
            return
        shadow = np.zeros((y1 - y0, x1 - x0), np.float32)
        polygon = _ellipse(centre[0] - x0, centre[1] - y0, half_w, half_h, n=40)
        cv2.fillPoly(shadow, [np.round(polygon * 16).astype(np.int32)], 1.0, cv2.LINE_AA, 4)
        shadow = cv2.GaussianBlur(shadow, (0, 0), half_h * 0.8 + 1.0)
        frame[y0:y1, x0:x1] *= (1.0 - 0.45 * shadow)[..., None]

    def _draw_animal(self, frame: np.ndarray, mask: np.ndarray, t: int, cam: _Camera, cam_prev: _Camera) -> None:
        x_prev, y_prev, _ = self._object_place(t - 1, cam_prev)
        x_now, y_now, _ = self._object_place(t, cam)
        d = np.array([x_now - x_prev, y_now - y_prev]) * _EXPOSURE
        kernel = _line_kernel(round(d[0] * 2) / 2, round(d[1] * 2) / 2) if math.hypot(d[0], d[1]) >= 1.5 else None
        pad = 3 + (kernel.shape[0] // 2 + 1 if kernel is not None else 0)
        layers = self._animal_layers(t, cam, pad)
        if layers is None:
            return
        near, far, (x0, y0, x1, y1), (x, foot_y, scale) = layers
        alpha = np.maximum(near, far)
        fur_left, _, _, fur_top = _FUR_BOX
        k = scale / _FUR_RES
        matrix = np.array(
            [
                [self.direction * k, 0.0, x + self.direction * scale * fur_left - x0],
                [0.0, k, foot_y - scale * fur_top - y0],
            ]
        )
        fur = cv2.warpAffine(self._fur, matrix, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        # shading: the softened silhouette as a height field, lit from the side and above
        sigma = max(0.12 * self.animal.length * scale, 1.0)
        height = cv2.GaussianBlur(alpha.astype(np.float32) / 255.0, (0, 0), sigma)
        gx = cv2.Sobel(height, cv2.CV_32F, 1, 0, ksize=3) / 8.0 * (5.0 * sigma)
        gy = cv2.Sobel(height, cv2.CV_32F, 0, 1, ksize=3) / 8.0 * (5.0 * sigma)
        light = np.array([0.65 * self._light, -0.55, 0.55])
        light /= np.linalg.norm(light)
        lambert = (-gx * light[0] - gy * light[1] + light[2]) / np.sqrt(gx * gx + gy * gy + 1.0)
        shade = 0.4 + 0.95 * np.clip(lambert, 0, None)
        far_only = far.astype(np.float32) / 255.0 * (1.0 - near.astype(np.float32) / 255.0)
        shade *= 1.0 - 0.35 * far_only
        _composite(frame[y0:y1, x0:x1], fur.astype(np.float32) * shade[..., None], alpha, kernel)
        mask[y0:y1, x0:x1][alpha >= 128] = 1

    def _trunk_column(self, cam: _Camera) -> float:
        return self._cx + cam.focal * ((self._trunk_world_x - cam.track) / self._trunk_depth - cam.yaw)

    def _draw_trunk(self, frame: np.ndarray, mask: np.ndarray, cam: _Camera, cam_prev: _Camera) -> None:
        scale = cam.focal / self._trunk_depth
        x_base = self._trunk_column(cam)
        d = (x_base - self._trunk_column(cam_prev)) * _EXPOSURE
        kernel = _line_kernel(round(d * 2) / 2, 0.0) if abs(d) >= 1.5 else None
        k = scale / _BARK_RES
        bark_w = self._bark.shape[1]
        # bark pixel (a, b): a across the trunk, b down from the top; the trunk leans by _trunk_lean m per m
        y_top = cam.horizon + scale * (_CAMERA_HEIGHT - _TRUNK_TOP)
        x_top = x_base - scale * self._trunk_radius + self._trunk_lean * _TRUNK_TOP * scale
        matrix = np.array([[k, -self._trunk_lean * k, x_top], [0.0, k, y_top]])
        corners = np.array([[0, 0], [bark_w, 0], [bark_w, self._bark.shape[0]], [0, self._bark.shape[0]]], float)
        image_corners = corners @ matrix[:, :2].T + matrix[:, 2]
        pad = 2 + (kernel.shape[0] // 2 + 1 if kernel is not None else 0)
        x0 = max(math.floor(image_corners[:, 0].min()) - pad, 0)
        x1 = min(math.ceil(image_corners[:, 0].max()) + pad + 1, self.width)
        if x0 >= x1:
            return
        y0, y1 = 0, self.height
        local = matrix.copy()
        local[:, 2] -= (x0, y0)
        alpha = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(alpha, [np.round((image_corners - (x0, y0)) * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
        bark = cv2.warpAffine(self._bark, local, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        _composite(frame[y0:y1, x0:x1], bark.astype(np.float32), alpha, kernel)
        mask[y0:y1, x0:x1][alpha >= 128] = 0

    # ---- frames ----------------------------------------------------------------------------------

    def render(self, t: int, stats: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``t``: ``(frame (H, W, 3) uint8 RGB, mask (H, W) uint8 with id 1 on the visible animal)``.

        ``stats``, when given, receives ``drawn`` (animal pixels before the trunk) and ``visible``.
        """
        if not 0 <= t < self.config.num_frames:
            raise IndexError(f"frame {t} outside 0..{self.config.num_frames - 1}")
        h, w = self.height, self.width
        cam, cam_prev = self.camera(t), self.camera(t - 1)
        frame = self._sky_view(cam)
        offsets = np.linspace(-_EXPOSURE / 2, _EXPOSURE / 2, _GROUND_SAMPLES)
        cams = [self.camera(t + float(o)) for o in offsets]
        row0 = min(max(math.floor(min(c.horizon for c in cams)), 0), h)
        colour_sum = np.zeros((h - row0, w, 3), np.float32)
        cover_sum = np.zeros((h - row0, 1), np.float32)
        for sample_cam in cams:
            colour, cover = self._ground(sample_cam, row0)
            colour_sum += colour * cover[..., None]
            cover_sum += cover
        cover = (cover_sum / len(cams))[..., None]
        frame[row0:] = frame[row0:] * (1 - cover) + colour_sum / len(cams)
        self._draw_shadow(frame, t, cam)
        mask = np.zeros((h, w), np.uint8)
        self._draw_animal(frame, mask, t, cam, cam_prev)
        if stats is not None:
            stats["drawn"] = int(np.count_nonzero(mask))
        self._draw_trunk(frame, mask, cam, cam_prev)
        if stats is not None:
            stats["visible"] = int(np.count_nonzero(mask))
        noise = np.random.default_rng([self.config.seed, t]).standard_normal((h, w, 3), dtype=np.float32)
        frame = frame * self._vignette + 2.2 * noise
        return np.clip(frame + 0.5, 0, 255).astype(np.uint8), mask


def _composite(region: np.ndarray, colour: np.ndarray, alpha: np.ndarray, kernel: np.ndarray | None) -> None:
    """Blend ``colour`` over the float32 ``region`` in place with ``alpha`` (uint8), both motion-blurred along
    ``kernel`` when given (the mask stays the unblurred ``alpha``)."""
    if kernel is not None:
        colour = cv2.filter2D(colour, -1, kernel, borderType=cv2.BORDER_REPLICATE)
        alpha = cv2.filter2D(alpha, -1, kernel, borderType=cv2.BORDER_CONSTANT)
    weight = (alpha.astype(np.float32) / 255.0)[..., None]
    region *= 1.0 - weight
    region += colour * weight


def make_scene_clip(
    out_dir: str | os.PathLike, seed: int = 0, num_frames: int = 30, size: tuple[int, int] = (240, 432)
) -> DemoClip:
    """Write a DAVIS-like clip of one animal: ``frames/00000.jpg ...``, ``first_mask.png``, ``gt/00000.png ...``.

    The folder's ``vidseg_synth.json`` lists ``occluded_frames`` (the trunk hides part of the animal).
    """
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise VidsegError(f"scene size must be (height, width), got {size!r}")
    config = SceneConfig(seed=seed, num_frames=num_frames, height=size[0], width=size[1])
    root = Path(out_dir)
    entries = ["frames", "gt", "first_mask.png"]
    _start_output(root, "scene", entries, config)
    clip = SceneClip(config)
    occluded, visible = [], []
    for t in range(num_frames):
        stats: dict = {}
        frame, mask = clip.render(t, stats)
        _write_jpeg(root / "frames" / f"{t:05d}.jpg", frame, JPEG_QUALITY)
        write_mask(root / "gt" / f"{t:05d}.png", mask)
        if t == 0:
            write_mask(root / "first_mask.png", mask)
        if stats["visible"] < stats["drawn"]:
            occluded.append(t)
        visible.append(stats["visible"])
    info = {"objects": {"1": "animal"}, "occluded_frames": occluded, "visible_pixels": visible}
    _write_marker(root, "scene", True, entries, config, {"sequences": {"scene": info}})
    return DemoClip(root / "frames", root / "first_mask.png", root / "gt", num_frames, {1: "animal"})
