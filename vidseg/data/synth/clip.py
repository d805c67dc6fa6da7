"""One synthetic clip (:class:`SynthClip`): a compact plan rendered frame by frame on demand.

The plan is drawn once (layout, then occlusions, by the two planner mixins); :meth:`SynthClip.render`
then draws any frame from it, so clips of any length stream in constant memory.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import cv2
import numpy as np

from vidseg.data.synth.backdrop import _Backdrop
from vidseg.data.synth.config import SynthConfig
from vidseg.data.synth.layers import _TEXTURE_HALF, OcclusionEvent, SynthObject, _Layer
from vidseg.data.synth.layout import _LayoutPlanner
from vidseg.data.synth.occlusions import _OcclusionPlanner
from vidseg.data.synth.raster import _EXPOSURE, _box, _line_kernel, _raster

_PLAN_ATTEMPTS = 12


class SynthClip(_LayoutPlanner, _OcclusionPlanner):
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
        self._backdrop = _Backdrop(config, np.random.default_rng([config.seed, 0xB6]))
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
        return self._backdrop.background.nbytes + sum(layer.texture.nbytes for layer in self._layers)

    def metadata(self) -> dict:
        return {
            "seed": self.config.seed,
            "num_frames": self.config.num_frames,
            "size": [self.height, self.width],
            "objects": {str(o.object_id): {"category": o.category, "planned_entry": o.first_frame} for o in self.objects},
            "distractors": [{"copy_of": c} for c in self.distractors],
            "planned_occlusions": [dataclasses.asdict(e) for e in self.events],
        }

    def camera(self, t: float) -> np.ndarray:
        """(2, 3) affine map from world coordinates to frame pixels at time ``t``."""
        return self._backdrop.camera(t)

    # ---- planning ---------------------------------------------------------------------------------

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
        frame = self._backdrop.frame(cam, cam_prev, blur)
        mask = np.zeros((h, w), np.uint8)
        layer_map = np.full((h, w), -1, np.int16) if layers else None
        for index, layer in enumerate(self._layers):
            self._draw(frame, mask, layer, index, t, cam, cam_prev, layer_map, stats)
        if stats is not None:
            for layer in self._objects:
                entry = stats.setdefault(layer.label, [0, 0])
                entry[1] = int(np.count_nonzero(mask == layer.label))
        frame = self._backdrop.light(frame, t)
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

    def _draw(self, frame, mask, layer: _Layer, index: int, t: int, cam, cam_prev, layer_map, stats) -> None:
        points, lin, off = self._geometry(layer, t, cam)
        pad = 2.0
        kernel = None
        if self.config.motion_blur and layer.kind != "occluder":
            kernel = self._blur_kernel(layer, t, off, cam_prev)
            if kernel is not None:
                pad += kernel.shape[0] / 2 + 1
        box = _box(points, pad, self.width, self.height)
        if box is None:
            return
        x0, y0, x1, y1 = box
        alpha = _raster(points, box)
        tex = self._texture_patch(layer, lin, off, box)
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

    def _blur_kernel(self, layer: _Layer, t: int, off: np.ndarray, cam_prev: np.ndarray) -> np.ndarray | None:
        """Motion-blur kernel of a layer whose centre is at frame point ``off`` (None below 1.5 pixels)."""
        prev_centre = self._pose(layer, t - 1, cam_prev)[0]
        prev = cam_prev[:, :2] @ prev_centre + cam_prev[:, 2]
        d = (off - prev) * _EXPOSURE
        cap = 0.08 * self._minside
        length = math.hypot(d[0], d[1])
        if length > cap:
            d *= cap / length
            length = cap
        if length < 1.5:
            return None
        return _line_kernel(round(d[0] * 2) / 2, round(d[1] * 2) / 2)

    @staticmethod
    def _texture_patch(layer: _Layer, lin: np.ndarray, off: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """The layer's texture mapped onto the frame pixels of ``box``."""
        x0, y0, x1, y1 = box
        # texture patch pixel p -> normalised u = (p - (P-1)/2) * k -> frame
        side = layer.texture.shape[0]
        k = 2 * _TEXTURE_HALF / side
        tex_lin = lin * k
        tex_off = off - tex_lin @ np.array([(side - 1) / 2, (side - 1) / 2]) - np.array([x0, y0])
        return cv2.warpAffine(
            layer.texture,
            np.hstack([tex_lin, tex_off[:, None]]),
            (x1 - x0, y1 - y0),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT_101,
        )


def generate_clip(config: SynthConfig) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream the frames of a clip: ``(frame RGB uint8 (H, W, 3), mask uint8 (H, W))`` per frame.

    Memory does not grow with ``config.num_frames``; use :class:`SynthClip` for the metadata.
    """
    return iter(SynthClip(config))
