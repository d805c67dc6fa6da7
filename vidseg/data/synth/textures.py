"""Procedural textures (fractal value noise, stripes, checkers, spots, waves) coloured by random palettes."""

from __future__ import annotations

import cv2
import numpy as np

TEXTURES: tuple[str, ...] = ("noise", "stripes", "checker", "spots", "waves")


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
