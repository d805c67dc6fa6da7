"""The videos of a dataset split as prediction tasks: where the frames are, which masks are given, and where the
results go, in the benchmark's layout.

- DAVIS: ``OUT/<sequence>/<frame>.png``; the first frame's annotation is given (none for the unsupervised task).
- YouTube-VOS: ``OUT/Annotations/<video>/<frame>.png`` for every frame of ``JPEGImages``; each object is given by
  the annotation of its first frame (``meta.json``), with only the objects that start there, as the protocol says
  (on a split of ``train`` those PNGs also hold the objects already seen, which must not be given again).
- A folder of videos (files or frame folders; a folder of palette PNGs is masks, not a video): ``OUT/<video name>/``;
  masks from ``MASKS/<name>/`` (PNGs named after their frames) or ``MASKS/<name>.png`` (the first frame's), none
  for a method that discovers objects.

Building tasks only reads; a given mask that must be cut from an annotation is written when its video runs
(:func:`given_mask_files`).
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vidseg.constants import VOID_ID
from vidseg.errors import VidsegError
from vidseg.io.files import IMAGE_SUFFIXES, list_images
from vidseg.io.masks import read_mask, write_mask
from vidseg.io.video import VIDEO_SUFFIXES, VideoReader

DATASETS = ("davis", "youtube-vos", "folder")


@dataclass(frozen=True)
class GivenMask:
    """A mask a video starts from: ``source`` as it is, or only the objects ``keep`` of it (YouTube-VOS), or with
    every object merged into id 1 (``merge``: DAVIS 2016). ``source`` may be a folder of masks (folder dataset)."""

    source: str
    keep: tuple[int, ...] | None = None
    merge: bool = False


@dataclass(frozen=True)
class VideoTask:
    """One video of a split (picklable, for worker processes)."""

    name: str
    video: str  # a frame folder or a video file
    masks: tuple[GivenMask, ...]  # empty: the method discovers the objects
    num_frames: int
    out_dir: str


@dataclass(frozen=True)
class SplitTasks:
    """The tasks of one split and whether it can be scored (``no_ground_truth``: why not)."""

    tasks: list[VideoTask]
    description: str
    no_ground_truth: str | None = None
    zip_layout: bool = False  # YouTube-VOS: the results also go into a submission zip


def _restricted(names: list[str], sequences: list[str] | None, where: Path) -> list[str]:
    if sequences is None:
        return names
    missing = [n for n in sequences if n not in names]
    if missing:
        raise VidsegError(f"sequence(s) {', '.join(missing[:3])} not in the split", where, "check --sequences")
    return [n for n in names if n in sequences]


def davis_tasks(root: str | os.PathLike, out: Path, year: str, split: str, resolution: str, task: str,
                sequences: list[str] | None = None) -> SplitTasks:
    from vidseg.data.davis import DavisIndex

    index = DavisIndex(root, year=year, split=split, resolution=resolution, task=task, sequences=sequences)
    tasks, first_only = [], []
    for sequence in index:
        if not sequence.frame_paths:
            raise VidsegError(f"sequence {sequence.name!r} has no frames", index.image_dir / sequence.name,
                              "the dataset needs its JPEGImages folder")
        if len(sequence.mask_paths) < 2 <= len(sequence):
            first_only.append(sequence.name)
        given = ()
        if task == "semi-supervised":
            given = (GivenMask(str(next(iter(sequence.mask_paths.values()))), merge=index.single_object),)
        tasks.append(VideoTask(sequence.name, str(sequence.frame_paths[0].parent), given, len(sequence),
                               str(out / sequence.name)))
    no_gt = None
    if first_only:
        no_gt = (f"DAVIS {year} {split} has no ground truth beyond the first frame (e.g. {first_only[0]}): submit the "
                 "results to the DAVIS server")
    return SplitTasks(tasks, f"DAVIS {year} {split} ({index.resolution})", no_gt)


def youtube_vos_tasks(root: str | os.PathLike, out: Path, split: str, task: str,
                      sequences: list[str] | None = None) -> SplitTasks:
    from vidseg.data.youtube_vos import YouTubeVOSIndex

    index = YouTubeVOSIndex(root, split=split)
    tasks = []
    for name in _restricted(index.names, sequences, index.split_dir / "meta.json"):
        sequence = index.sequence(name)
        if not sequence.frame_paths:
            raise VidsegError(f"video {name!r} has no frames", index.image_dir / name,
                              "the dataset needs its JPEGImages folder")
        starts: dict[str, list[int]] = defaultdict(list)
        for object_id, info in sequence.objects.items():
            starts[info.first_frame].append(object_id)
        given = []
        if task == "semi-supervised":
            for frame, ids in sorted(starts.items(), key=lambda item: sequence.frame_index(item[0])):
                if frame not in sequence.mask_paths:
                    raise VidsegError(f"video {name!r}: object {ids[0]} starts at frame {frame}, which has no "
                                      "annotation PNG", index.annotation_dir / name, "the dataset is incomplete")
                given.append(GivenMask(str(sequence.mask_paths[frame]), keep=tuple(sorted(ids))))
        tasks.append(VideoTask(name, str(sequence.frame_paths[0].parent), tuple(given), len(sequence),
                               str(out / "Annotations" / name)))
    no_gt = None
    if split not in ("train", "train-80", "val-20"):
        no_gt = (f"YouTube-VOS {split} has no public ground truth: submit the zip to the server, or score the local "
                 "split with --set val-20")
    return SplitTasks(tasks, f"YouTube-VOS {split}", no_gt, zip_layout=True)


def folder_tasks(root: str | os.PathLike, out: Path, masks: str | os.PathLike | None,
                 sequences: list[str] | None = None) -> SplitTasks:
    root = Path(root)
    if not root.is_dir():
        raise VidsegError("video folder not found", root, "give a folder of video files or of frame folders")
    videos: dict[str, Path] = {}
    for entry in sorted(root.iterdir()):
        is_video = entry.is_file() and entry.suffix.lower() in VIDEO_SUFFIXES
        if not (is_video or (entry.is_dir() and _frame_folder(entry))):
            continue
        name = entry.stem if is_video else entry.name
        if name in videos:
            raise VidsegError(f"two videos are named {name!r} ({videos[name].name}, {entry.name})", root,
                              "rename one: results are written to a folder per name")
        videos[name] = entry
    if not videos:
        raise VidsegError("the folder holds no videos (.mp4/.avi/.mov files or folders of frames)", root)
    tasks = []
    for name in _restricted(sorted(videos), sequences, root):
        given: tuple[GivenMask, ...] = ()
        if masks is not None:
            found = [p for p in (Path(masks) / name, Path(masks) / f"{name}.png") if p.exists()]
            if not found:
                raise VidsegError(f"no mask for video {name!r}", masks,
                                  f"add {name}/ (masks named after their frames) or {name}.png (the first frame's)")
            given = (GivenMask(str(found[0])),)
        tasks.append(VideoTask(name, str(videos[name]), given, len(VideoReader(videos[name])), str(out / name)))
    return SplitTasks(tasks, f"{len(tasks)} videos of {root}", f"the videos of {root} have no ground truth")


def _frame_folder(folder: Path) -> bool:
    """Whether ``folder`` holds frames: images, the first not an indexed (palette) PNG, which is a mask."""
    images = list_images(folder, IMAGE_SUFFIXES)
    if not images:
        return False
    with Image.open(images[0]) as first:
        return first.mode != "P"


def given_mask_files(task: VideoTask, folder: Path) -> list[Path]:
    """The mask files to give ``task``'s video: the sources, or cut copies written into ``folder`` (one per frame,
    named after it) where a source holds objects that must not be given there or must be merged."""
    files = []
    for given in task.masks:
        source = Path(given.source)
        if given.keep is None and not given.merge:
            files.append(source)
            continue
        mask = read_mask(source)
        objects = (mask > 0) & (mask != VOID_ID)
        if given.merge:
            cut = np.where(objects, 1, mask).astype(np.uint8)
        else:
            cut = np.where(objects & ~np.isin(mask, given.keep), 0, mask).astype(np.uint8)
        if np.array_equal(cut, mask):
            files.append(source)
            continue
        target = folder / f"{source.stem}.png"
        write_mask(target, cut)
        files.append(target)
    return files
