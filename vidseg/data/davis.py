"""DAVIS 2016 / 2017 layout.

``ROOT/JPEGImages/<resolution>/<seq>/*.jpg``, ``ROOT/Annotations[_unsupervised]/<resolution>/<seq>/*.png``
and ``ROOT/ImageSets/<year>/<split>.txt``. Any resolution folder works (``480p``, ``Full-Resolution``,
``240p``). DAVIS 2016 is single-object: every object id is merged into 1.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vidseg.constants import VOID_ID
from vidseg.data.sequence import ObjectInfo, VideoSequence, sequence_files
from vidseg.errors import VidsegError
from vidseg.io.masks import object_ids, read_mask

TASKS = ("semi-supervised", "unsupervised")


def detect_layout(root: str | os.PathLike, year: str | None, resolution: str | None,
                  task: str = "semi-supervised") -> tuple[str, str, list[str]]:
    """The DAVIS year and resolution folder to use: the ones given, else detected (2016 when the root has only
    ``ImageSets/2016``; ``480p``, else the only resolution folder). The third value lists the detected ones as
    command-line flags, for a caller to say what it chose."""
    root = Path(root)
    detected = []
    if year is None:
        only_2016 = (root / "ImageSets" / "2016").is_dir() and not (root / "ImageSets" / "2017").is_dir()
        year = "2016" if only_2016 else "2017"
        detected.append(f"--year {year}")
    if resolution is None:
        folder = root / ("Annotations_unsupervised" if task == "unsupervised" and year == "2017" else "Annotations")
        found = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
        resolution = "480p" if "480p" in found or len(found) != 1 else found[0]
        detected.append(f"--resolution {resolution}")
    return year, resolution, detected


class DavisIndex:
    """The sequences of one DAVIS split, with their frame and annotation files.

    Args:
        root: dataset root (holds ``Annotations`` and ``ImageSets``; ``JPEGImages`` is optional).
        year: ``"2016"`` or ``"2017"``; 2016 merges all objects into id 1.
        split: name of a file in ``ImageSets/<year>/`` (``train``, ``val``, ``test-dev``); when that
            folder is absent every annotated sequence is used.
        resolution: ``"480p"``, ``"Full-Resolution"``, ``"240p"``, ...; ``None`` picks the only one.
        task: ``"semi-supervised"`` (``Annotations``) or ``"unsupervised"`` (``Annotations_unsupervised``; DAVIS
            2016 has one foreground object per video and scores both tasks on ``Annotations``).
        sequences: restrict to these sequence names.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        year: str = "2017",
        split: str = "val",
        resolution: str | None = "480p",
        task: str = "semi-supervised",
        sequences: list[str] | None = None,
    ):
        self.root = Path(root)
        self.year = str(year)
        if self.year not in ("2016", "2017"):
            raise VidsegError(f"unknown DAVIS year {year!r}", fix="use 2016 or 2017")
        if task not in TASKS:
            raise VidsegError(f"unknown task {task!r}", fix=f"use one of {', '.join(TASKS)}")
        self.task = task
        self.split = split
        own_folder = task == "unsupervised" and self.year == "2017"
        annotations = self.root / ("Annotations_unsupervised" if own_folder else "Annotations")
        if not annotations.is_dir():
            raise VidsegError("no DAVIS annotation folder", annotations, "point --gt/root at a DAVIS root")
        self.resolution = resolution or self._only_resolution(annotations)
        self.annotation_dir = annotations / self.resolution
        self.image_dir = self.root / "JPEGImages" / self.resolution
        if not self.annotation_dir.is_dir():
            found = sorted(p.name for p in annotations.iterdir() if p.is_dir())
            raise VidsegError(f"no resolution folder {self.resolution!r}", annotations, f"found: {', '.join(found)}")
        if sequences is not None:
            missing = [n for n in sequences if not (self.annotation_dir / n).is_dir()]
            if missing:
                raise VidsegError(
                    f"sequence(s) {', '.join(missing[:3])} not found", self.annotation_dir, "check the sequence names"
                )
            self.names = list(sequences)
        else:
            self.names = self._split_names()
        self.single_object = self.year == "2016"

    @staticmethod
    def _only_resolution(annotations: Path) -> str:
        found = sorted(p.name for p in annotations.iterdir() if p.is_dir())
        if len(found) != 1:
            raise VidsegError(f"several resolution folders ({', '.join(found)})", annotations, "choose one with resolution=")
        return found[0]

    def _split_names(self) -> list[str]:
        split_file = self.root / "ImageSets" / self.year / f"{self.split}.txt"
        if split_file.is_file():
            names = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
            missing = [n for n in names if not (self.annotation_dir / n).is_dir()]
            if missing:
                raise VidsegError(
                    f"sequence(s) {', '.join(missing[:3])} listed but not annotated", split_file, "the dataset is incomplete"
                )
            return names
        if (self.root / "ImageSets").is_dir():
            found = sorted(f"--year {p.parent.name} --set {p.stem}" for p in (self.root / "ImageSets").glob("*/*.txt"))
            hint = f"this root has: {'; '.join(found)}" if found else "choose an existing split with --set"
            raise VidsegError("split file not found", split_file, hint)
        return sorted(p.name for p in self.annotation_dir.iterdir() if p.is_dir())

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self):
        return (self.sequence(name) for name in self.names)

    def sequence(self, name: str) -> VideoSequence:
        names, frame_files, mask_paths = sequence_files(self.image_dir / name, self.annotation_dir / name)
        if not mask_paths:
            raise VidsegError("no annotation PNGs", self.annotation_dir / name)
        first_name, first_path = next(iter(mask_paths.items()))
        objects = {i: ObjectInfo(object_id=i, first_frame=first_name) for i in object_ids(self.load_mask(first_path))}
        return VideoSequence(name, names, frame_files, mask_paths, objects)

    def load_mask(self, path: str | os.PathLike) -> np.ndarray:
        """Read one annotation; on DAVIS 2016 every object becomes id 1 (void stays 255)."""
        mask = read_mask(path)
        if self.single_object:
            mask = np.where((mask > 0) & (mask != VOID_ID), 1, mask).astype(np.uint8)
        return mask
