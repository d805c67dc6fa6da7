"""Outlines of the shape categories (:data:`~vidseg.data.synth.config.SHAPES`), normalised to radius 1."""

from __future__ import annotations

import math

import numpy as np


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
