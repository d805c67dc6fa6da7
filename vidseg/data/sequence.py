"""The dataset-independent description of one annotated video."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vidseg.io.files import list_images


def sequence_files(image_folder: Path, annotation_folder: Path) -> tuple[tuple[str, ...], tuple[Path, ...], dict[str, Path]]:
    """(frame names, frame files, annotation files by frame name) of one sequence.

    Frame names come from the images, or from the annotations when the images are absent.
    """
    mask_files = list_images(annotation_folder, (".png",)) if annotation_folder.is_dir() else []
    frame_files = list_images(image_folder) if image_folder.is_dir() else []
    names = tuple(p.stem for p in (frame_files or mask_files))
    return names, tuple(frame_files), {p.stem: p for p in mask_files}


@dataclass(frozen=True)
class ObjectInfo:
    """One annotated object: its id in the masks, its category (if known) and where it is annotated."""

    object_id: int
    first_frame: str
    category: str | None = None
    annotated_frames: tuple[str, ...] = ()


@dataclass(frozen=True)
class VideoSequence:
    """Frames and annotations of one video.

    ``frame_names`` lists every frame (stems such as ``00000``) in temporal order; ``frame_paths``
    holds their image files, or is empty when only annotations are on disk (evaluation needs no
    frames). ``mask_paths`` maps a frame name to its annotation PNG: every frame on DAVIS, every
    5th on YouTube-VOS.
    """

    name: str
    frame_names: tuple[str, ...]
    frame_paths: tuple[Path, ...]
    mask_paths: dict[str, Path]
    objects: dict[int, ObjectInfo] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frame_names)

    @property
    def annotated_frames(self) -> list[str]:
        return [name for name in self.frame_names if name in self.mask_paths]

    def frame_index(self, name: str) -> int:
        return self.frame_names.index(name)
