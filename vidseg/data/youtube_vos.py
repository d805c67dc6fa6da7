"""YouTube-VOS 2018 / 2019 layout.

``ROOT/<split>/JPEGImages/<vid>/*.jpg``, ``ROOT/<split>/Annotations/<vid>/*.png`` and
``ROOT/<split>/meta.json`` (``{"videos": {vid: {"objects": {"1": {"category": .., "frames": [..]}}}}}``).
Labels are sparse (every 5th frame) and an object may first appear after frame 0.

The validation ground truth is not public, so the field evaluates on an 80/20 split of ``train``:
``split="train-80"`` and ``split="val-20"`` give a reproducible split (seeded shuffle of the sorted
video ids). A category is *seen* when it occurs in the training part, *unseen* otherwise.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np

from vidseg.data.sequence import ObjectInfo, VideoSequence, sequence_files
from vidseg.errors import VidsegError
from vidseg.io.masks import read_mask

LOCAL_SPLITS = {"train-80": "train", "val-20": "train"}
SPLIT_SEED = 0
HELD_OUT_FRACTION = 0.2


def split_train_videos(video_ids: list[str], seed: int = SPLIT_SEED) -> tuple[list[str], list[str]]:
    """Reproducible 80/20 split of training videos into (train, held-out), both sorted."""
    ordered = sorted(video_ids)
    random.Random(seed).shuffle(ordered)
    n_held = max(1, round(HELD_OUT_FRACTION * len(ordered))) if len(ordered) > 1 else 0
    return sorted(ordered[n_held:]), sorted(ordered[:n_held])


class YouTubeVOSIndex:
    """The videos of one YouTube-VOS split with their sparse annotations and object metadata.

    Args:
        root: dataset root holding ``train/`` and/or ``valid/``.
        split: ``train``, ``valid``, or the local ``train-80`` / ``val-20`` split of ``train``.
        sequences: restrict to these video ids.
    """

    def __init__(self, root: str | os.PathLike, split: str = "val-20", sequences: list[str] | None = None):
        self.root = Path(root)
        self.split = split
        folder = LOCAL_SPLITS.get(split, split)
        self.split_dir = self.root / folder
        meta_path = self.split_dir / "meta.json"
        if not meta_path.is_file():
            raise VidsegError("meta.json not found", meta_path, "point at a YouTube-VOS root holding train/ or valid/")
        try:
            self.meta = json.loads(meta_path.read_text())["videos"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise VidsegError(f"meta.json is not YouTube-VOS metadata ({exc.__class__.__name__})", meta_path) from None
        all_ids = sorted(self.meta)
        if split in LOCAL_SPLITS:
            train_ids, held_ids = split_train_videos(all_ids)
            chosen = train_ids if split == "train-80" else held_ids
            self.seen_categories = self._categories(train_ids)
        else:
            chosen = all_ids
            train_meta = self.root / "train" / "meta.json"
            self.seen_categories = (
                self._categories(list(json.loads(train_meta.read_text())["videos"]), train_meta)
                if train_meta.is_file()
                else self._categories(all_ids)
            )
        self.names = [n for n in chosen if sequences is None or n in sequences]
        self.annotation_dir = self.split_dir / "Annotations"
        self.image_dir = self.split_dir / "JPEGImages"

    def _categories(self, video_ids: list[str], meta_path: Path | None = None) -> set[str]:
        meta = self.meta if meta_path is None else json.loads(meta_path.read_text())["videos"]
        return {
            str(obj.get("category"))
            for vid in video_ids
            for obj in meta.get(vid, {}).get("objects", {}).values()
            if obj.get("category") is not None
        }

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self):
        return (self.sequence(name) for name in self.names)

    def is_seen(self, category: str | None) -> bool:
        return category in self.seen_categories

    def sequence(self, name: str) -> VideoSequence:
        entry = self.meta.get(name)
        if entry is None:
            raise VidsegError(f"video {name!r} is not in meta.json", self.split_dir / "meta.json")
        names, frame_files, mask_paths = sequence_files(self.image_dir / name, self.annotation_dir / name)
        objects = {}
        for key, obj in sorted(entry.get("objects", {}).items(), key=lambda kv: int(kv[0])):
            frames = tuple(str(f) for f in obj.get("frames", []))
            if not frames:
                continue
            objects[int(key)] = ObjectInfo(int(key), frames[0], obj.get("category"), frames)
        return VideoSequence(name, names, frame_files, mask_paths, objects)

    @staticmethod
    def load_mask(path: str | os.PathLike) -> np.ndarray:
        return read_mask(path)
