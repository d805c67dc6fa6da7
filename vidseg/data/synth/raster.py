"""Rasterisation shared by the planner and the renderer: contour boxes, anti-aliased coverage, blur kernels.

The planner decides visibility on exactly the pixels :meth:`SynthClip.render` draws, so both use these.
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

_EXPOSURE = 0.5  # fraction of the inter-frame motion smeared by motion blur (a 180 degree shutter)


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


def _box(points: list[np.ndarray], pad: float, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Pixel box ``(x0, y0, x1, y1)`` of the contours grown by ``pad``, clipped to the frame; None when empty."""
    allpts = points[0] if len(points) == 1 else np.concatenate(points)
    lo, hi = allpts.min(axis=0), allpts.max(axis=0)
    x0 = max(int(math.floor(lo[0] - pad)), 0)
    y0 = max(int(math.floor(lo[1] - pad)), 0)
    x1 = min(int(math.ceil(hi[0] + pad)) + 1, width)
    y1 = min(int(math.ceil(hi[1] + pad)) + 1, height)
    if x0 >= x1 or y0 >= y1:
        return None
    return x0, y0, x1, y1


def _raster(points: list[np.ndarray], box: tuple[int, int, int, int]) -> np.ndarray:
    """Anti-aliased uint8 coverage of the contours inside ``box`` (even-odd: rings have holes)."""
    x0, y0, x1, y1 = box
    alpha = np.zeros((y1 - y0, x1 - x0), np.uint8)
    origin = np.array([x0, y0], np.float32)
    cv2.fillPoly(alpha, [np.round((p - origin) * 16).astype(np.int32) for p in points], 255, cv2.LINE_AA, 4)
    return alpha
