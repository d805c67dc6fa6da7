"""Planned full occlusions and late entries of a clip, checked on the rasterised frames.

A mixin of :class:`~vidseg.data.synth.clip.SynthClip`: an occlusion is planned, then measured on
exactly the pixels the renderer draws, and shortened until its hidden run fits ``max_hidden``.
"""

from __future__ import annotations

import numpy as np

from vidseg.data.synth.config import SynthConfig
from vidseg.data.synth.layers import _Event, _Layer
from vidseg.data.synth.raster import _box, _raster


class _OcclusionPlanner:
    """Plans occlusions and entries for a :class:`~vidseg.data.synth.clip.SynthClip` (its mixin; uses its attributes)."""

    config: SynthConfig
    height: int
    width: int
    _minside: float
    _objects: list[_Layer]
    _occluders: list[_Layer]

    def _hidden_geometric(self, layer: _Layer, event: _Event, t: int) -> bool:
        """Whether the plan alone hides ``layer`` at ``t`` (rasterised exactly as :meth:`render` does)."""
        cam = self.camera(t)
        points, _, _ = self._geometry(layer, t, cam)
        box = _box(points, 1.0, self.width, self.height)
        if box is None:
            return True  # entirely outside the frame
        hard = _raster(points, box) >= 128
        if event.kind != "behind":
            return not hard.any()
        occ = self._occluders[event.occluder]
        occ_points, _, _ = self._geometry(occ, t, cam)
        cover = _raster(occ_points, box) >= 128
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
                event, hidden, distance = self._draft_event(rng, layer, start)
                cap = max(1, (room - 1) // 2)
                ramp_in = self._ramp(rng, distance, cap)
                ramp_out = self._ramp(rng, distance, cap)
                hidden = max(1, min(hidden, room - ramp_in - ramp_out))
                layer.events.append(event)
                run0, run1 = self._fit_event(layer, event, ramp_in, hidden, ramp_out)
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

    def _draft_event(self, rng: np.random.Generator, layer: _Layer, start: int) -> tuple[_Event, int, float]:
        """An occlusion of ``layer`` from ``start`` (kind, occluder or exit point), the hidden frames wanted
        and the distance to travel out of view."""
        kind = "behind" if self._occluders and not layer.front and rng.random() < 0.6 else "exit"
        hidden = int(rng.integers(1, self.config.max_hidden + 1))
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
        return event, hidden, distance

    def _fit_event(self, layer: _Layer, event: _Event, ramp_in: int, hidden: int, ramp_out: int) -> tuple[int, int]:
        """Set the frames of ``event`` (already in ``layer.events``); return its measured hidden run."""
        max_hidden = self.config.max_hidden
        for _ in range(12):  # shorten the plateau, then the ramps, until the run fits max_hidden
            event.plateau_start = event.start + ramp_in
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
        return run0, run1

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
                occ.append((points, _box(points, 1.0, self.width, self.height)))
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
        box = _box(points, 1.0, self.width, self.height)
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
        hard = _raster(points, box) >= 128
        if not hard.any():
            return True
        cover = np.zeros_like(hard)
        for p, _ in near:
            cover |= _raster(p, box) >= 128
        return not np.any(hard & ~cover)
