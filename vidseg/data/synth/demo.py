"""A small demo clip on disk (frames, first-frame mask, ground truth) for ``vidseg demo`` and examples."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from vidseg.data.synth.clip import SynthClip
from vidseg.data.synth.config import SynthConfig
from vidseg.data.synth.folders import (
    _start_output,
    _Visibility,
    _write_jpeg,
    _write_marker,
)
from vidseg.io.masks import write_mask


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
