"""The backdrop of a clip: background texture, camera path and lighting, independent of the object plan.

Drawn from its own random stream, so that the objects' plan can be redrawn without touching it.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from vidseg.data.synth.config import SynthConfig
from vidseg.data.synth.raster import _EXPOSURE, _line_kernel
from vidseg.data.synth.textures import make_texture


class _Backdrop:
    """Background texture (with a margin for camera motion), camera path and lighting of one clip."""

    def __init__(self, config: SynthConfig, rng: np.random.Generator):
        h, w = self.height, self.width = config.height, config.width
        self._cam_on = config.camera_motion
        if config.camera_motion:
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
        self._margin = int(math.ceil(self.camera_bound + 0.06 * diag)) + 2 if config.camera_motion else 0
        m = self._margin
        self.background = make_texture(rng, h + 2 * m, w + 2 * m, vivid=False)
        if config.lighting:
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

    def frame(self, cam: np.ndarray, cam_prev: np.ndarray, blur: bool) -> np.ndarray:
        """The background seen through camera ``cam``, blurred by the motion since ``cam_prev`` when ``blur``."""
        if not self._cam_on:
            return self.background.copy()
        m = self._margin
        bg = cam.copy()
        bg[:, 2] -= cam[:, :2] @ np.array([m, m], float)
        frame = cv2.warpAffine(
            self.background, bg, (self.width, self.height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
        )
        if blur:
            ctr_prev = cam_prev[:, :2] @ self._ctr + cam_prev[:, 2]
            ctr_now = cam[:, :2] @ self._ctr + cam[:, 2]
            d = (ctr_now - ctr_prev) * _EXPOSURE
            if math.hypot(d[0], d[1]) >= 1.5:
                kernel = _line_kernel(round(d[0] * 2) / 2, round(d[1] * 2) / 2)
                frame = cv2.filter2D(frame, -1, kernel, borderType=cv2.BORDER_REFLECT_101)
        return frame

    def light(self, frame: np.ndarray, t: int) -> np.ndarray:
        """``frame`` under the lighting of time ``t`` (unchanged without lighting changes)."""
        if self._light is None:
            return frame
        amp, wl, pl = self._light
        gain = 1.0 + amp * math.sin(wl * t + pl)
        return cv2.convertScaleAbs(frame, alpha=gain)
