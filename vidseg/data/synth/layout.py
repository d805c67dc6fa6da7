"""Layout of a clip's layers: shapes, textures, start positions, motion and depth order.

A mixin of :class:`~vidseg.data.synth.clip.SynthClip`, kept apart so that planning reads on its own;
it draws from the random stream in exactly the order the generator's seeds were fixed with.
"""

from __future__ import annotations

import math

import numpy as np

from vidseg.data.synth.backdrop import _Backdrop
from vidseg.data.synth.config import SynthConfig
from vidseg.data.synth.layers import _TEXTURE_HALF, _Layer
from vidseg.data.synth.shapes import _circle, make_outline
from vidseg.data.synth.textures import make_texture


class _LayoutPlanner:
    """Plans the layers of a :class:`~vidseg.data.synth.clip.SynthClip` (its mixin; uses its attributes)."""

    config: SynthConfig
    height: int
    width: int
    _minside: float
    _backdrop: _Backdrop
    _movers: list[_Layer]
    _objects: list[_Layer]
    _occluders: list[_Layer]
    _layers: list[_Layer]

    def _motion(self, layer: _Layer, rng: np.random.Generator, speed_scale: float = 1.0) -> None:
        cfg, h, w = self.config, self.height, self.width
        unit = self._minside / 256.0
        margin = self._backdrop.camera_bound + 0.3 * layer.r0
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
        """Draw the layers (objects, distractors, occluders), their start positions and depth order."""
        cfg, h, w = self.config, self.height, self.width
        n = cfg.num_objects
        cats = self._object_categories(rng)
        objects = [self._new_shape_layer(rng, "object", i + 1, cats[i]) for i in range(n)]
        distractors = [self._new_distractor(rng, objects) for _ in range(cfg.num_distractors)]
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

    def _object_categories(self, rng: np.random.Generator) -> list[str]:
        """Categories of ids 1..N: the explicit ones, else a shuffle of the pool (drawn again past its end)."""
        cfg = self.config
        n = cfg.num_objects
        if cfg.object_categories:
            return [cfg.object_categories[i % len(cfg.object_categories)] for i in range(n)]
        pool = list(cfg.categories)
        order = [pool[int(i)] for i in rng.permutation(len(pool))]
        return [order[i] if i < len(order) else pool[int(rng.integers(len(pool)))] for i in range(n)]

    def _new_distractor(self, rng: np.random.Generator, objects: list[_Layer]) -> _Layer:
        """An unlabelled copy (outline and texture) of a random labelled object, with its own size and motion."""
        source = objects[int(rng.integers(len(objects)))]
        r0 = source.r0 * rng.uniform(0.85, 1.15)
        layer = _Layer("distractor", 0, source.category, source.contours, source.texture, r0)
        layer.copy_of = source.label
        self._motion(layer, rng)
        return layer

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
        margin = self._backdrop.camera_bound + inner
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

    def _order_layers(self) -> None:
        back = [m for m in self._movers if not m.front]
        front = [m for m in self._movers if m.front]
        self._layers = back + self._occluders + front
