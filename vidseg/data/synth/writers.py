"""Dataset writers of ``vidseg data synth``: DAVIS and YouTube-VOS layouts and ``.mp4`` videos.

Each streams its clips frame by frame to disk and records what it wrote (configs, seeds, objects,
occlusion runs measured on the written masks) in the folder's ``vidseg_synth.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from vidseg.data.synth.clip import SynthClip
from vidseg.data.synth.config import SHAPES, SynthConfig, derive_seed, resolution_name
from vidseg.data.synth.folders import (
    _claim_folder,
    _remove_entries,
    _start_output,
    _Visibility,
    _write_jpeg,
    _write_marker,
)
from vidseg.errors import VidsegError
from vidseg.io.atomic import atomic_path, atomic_write_text
from vidseg.io.masks import write_mask

Progress = Callable[[int], object]


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
