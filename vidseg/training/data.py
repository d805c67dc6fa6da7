"""Training and validation data of a run, built from the ``data:`` section of a config.

:class:`ClipStream` hands out batches step by step and knows its exact position ``(epoch, index within
the epoch)``: clips depend only on (seed, epoch, index) and the data phase (clip length, labelled frames
only) depends only on the step, so a run resumed from ``(step, epoch, position)`` sees the same batches.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from vidseg.config.schema import DataConfig, SourceConfig, ValConfig, clip_phases
from vidseg.data.clips import ClipDataset, ClipSampler, ConcatClipDataset, collate_clips
from vidseg.errors import VidsegError


def _generate_once(root: Path, write: Callable[[Path], Any]) -> Path:
    """Run ``write(folder)`` unless ``root`` exists, atomically: into a temporary sibling, then renamed (so
    an interrupted run or a concurrent rank never leaves a half-written dataset)."""
    if root.exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    try:
        os.rename(tmp, root)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process finished first
        if not root.is_dir():
            raise
    return root


def ensure_synth(source: SourceConfig) -> Path:
    """Generate the synthetic DAVIS-layout folder ``source.root`` unless it exists."""
    from vidseg.data.synth import SynthConfig, write_davis

    config = SynthConfig(seed=source.seed, num_frames=source.num_frames, height=source.height, width=source.width)
    return _generate_once(Path(source.root), lambda folder: write_davis(folder, source.num_videos, config))


def _source_videos(source: SourceConfig) -> list:
    """The real annotated videos a generated source (composite, lookalike, crossing) is made from."""
    from vidseg.data.davis import DavisIndex

    if not Path(source.source).is_dir():
        raise VidsegError(f"{source.type} source folder not found", source.source, "check data.*.source")
    return list(DavisIndex(source.source, source.year, "train", source.resolution, sequences=source.sequences))


def ensure_composite(source: SourceConfig) -> Path:
    """Generate the composite DAVIS-layout folder ``source.root`` from the real videos of ``source.source``
    unless it exists."""
    from vidseg.data.composite import CompositeConfig, write_composites

    def write(folder: Path) -> None:
        real = _source_videos(source)
        config = CompositeConfig(seed=source.seed, num_frames=source.num_frames, height=source.height,
                                 width=source.width, max_pasted=source.max_pasted, still_fraction=source.still_fraction)
        write_composites(folder, real, source.num_videos, config)

    return _generate_once(Path(source.root), write)


def ensure_two_object(source: SourceConfig) -> Path:
    """Generate the ``lookalike`` or ``crossing`` DAVIS-layout folder ``source.root`` (one two-object clip per real
    video of ``source.source``, under its ``resolution``) unless it exists."""
    from vidseg.data.lookalike import crossing_set, lookalike_set

    def write(folder: Path) -> None:
        write_set = lookalike_set if source.type == "lookalike" else crossing_set
        write_set(folder, _source_videos(source), source.resolution or "480p")

    return _generate_once(Path(source.root), write)


def build_index(source: SourceConfig) -> Any:
    """The dataset index of a source (generating a missing synth or composite folder first)."""
    if source.type == "youtube_vos":
        from vidseg.data.youtube_vos import YouTubeVOSIndex

        return YouTubeVOSIndex(source.root, source.split or "train-80", source.sequences)
    from vidseg.data.davis import DavisIndex

    if source.type == "synth":
        ensure_synth(source)
    if source.type == "composite":
        ensure_composite(source)
        return DavisIndex(source.root, "2017", "train", f"{source.height}p")
    if source.type in ("lookalike", "crossing"):
        ensure_two_object(source)
        return DavisIndex(source.root, "2017", "val", source.resolution or "480p")
    root = Path(source.root)
    if not root.is_dir():
        raise VidsegError("dataset folder not found", root, "check data.*.root")
    split = source.split or ("train" if source.type == "davis" else "all")
    year = source.year if source.type == "davis" else "2017"
    resolution = source.resolution if source.type == "davis" else None
    sequences = source.sequences
    if split == "all" and not sequences:
        folder = DavisIndex(root, year, "train", resolution, sequences=[]).annotation_dir
        sequences = sorted(p.name for p in folder.iterdir() if p.is_dir())
    return DavisIndex(root, year, "train" if split == "all" else split, resolution, sequences=sequences or None)


def build_clip_dataset(
    data: DataConfig, clip_length: tuple[int, int], labelled_only: bool, seed: int, objects: str = "one"
) -> Any:
    """The (mixed) clip dataset of one data phase; ``objects`` is what a clip carries (``one`` or ``all``)."""
    parts = [
        ClipDataset(
            build_index(source),
            clip_length=clip_length,
            stride=data.stride,
            size=data.size,
            objects=objects,
            labelled_only=labelled_only,
            samples_per_epoch=data.samples_per_epoch,
            augment=data.augment,
            seed=seed,
            name=f"{source.type}:{Path(source.root).name}",
        )
        for source in data.train
    ]
    if len(parts) == 1:
        return parts[0]
    return ConcatClipDataset(parts, [s.weight for s in data.train], data.samples_per_epoch, seed)


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32  # base seed from the loader's generator + worker id
    np.random.seed(seed)
    random.seed(seed)


class ClipStream:
    """Batches for each training step of one rank, resumable from ``(step, epoch, position)``.

    ``position`` counts this rank's items consumed in ``epoch``; every step consumes ``batch_size``
    (the last incomplete batch of an epoch is dropped). ``objects`` is what a clip carries (``one`` or ``all``).
    """

    def __init__(self, data: DataConfig, seed: int, rank: int = 0, world_size: int = 1, objects: str = "one"):
        self.data, self.seed, self.rank, self.world_size = data, int(seed), rank, world_size
        self.objects = objects
        self.phases = clip_phases(data)
        self.epoch, self.position = 0, 0
        self._phase: int | None = None
        self._loader: DataLoader | None = None
        self._iter: Iterator | None = None
        self._datasets: dict[int, Any] = {}

    def phase_at(self, step: int) -> int:
        return max(i for i, (start, _, _) in enumerate(self.phases) if start <= step)

    def seek(self, epoch: int, position: int) -> None:
        """Continue from item ``position`` of ``epoch`` (restarts the loader)."""
        self.epoch, self.position = int(epoch), int(position)
        self._iter = None

    def _start(self, phase: int) -> None:
        if phase not in self._datasets:
            _, length, labelled_only = self.phases[phase]
            self._datasets[phase] = build_clip_dataset(self.data, length, labelled_only, self.seed, self.objects)
        dataset = self._datasets[phase]
        per_rank = len(ClipSampler(len(dataset), self.rank, self.world_size))
        if per_rank < self.data.batch_size:
            raise VidsegError(
                f"an epoch has {len(dataset)} clips, fewer than batch_size {self.data.batch_size} x "
                f"{self.world_size} process(es)", fix="raise data.samples_per_epoch or lower data.batch_size",
            )
        self.sampler = ClipSampler(len(dataset), self.rank, self.world_size)
        workers = self.data.workers
        self._loader = DataLoader(
            dataset,
            batch_size=self.data.batch_size,
            sampler=self.sampler,
            num_workers=workers,
            collate_fn=collate_clips,
            drop_last=True,
            persistent_workers=workers > 0,
            worker_init_fn=_seed_worker if workers > 0 else None,
            generator=torch.Generator().manual_seed(self.seed * 1000 + self.rank),
        )
        self._phase = phase
        self._iter = None

    def next(self, step: int) -> dict[str, Any]:
        """The batch of ``step`` (call with consecutive steps)."""
        phase = self.phase_at(step)
        if phase != self._phase:
            self._start(phase)
        for _ in range(2):
            if self._iter is None:
                self.sampler.set_epoch(self.epoch, self.position)
                self._iter = iter(self._loader)
            try:
                batch = next(self._iter)
            except StopIteration:
                self.epoch, self.position, self._iter = self.epoch + 1, 0, None
                continue
            self.position += self.data.batch_size
            return batch
        raise RuntimeError("the data loader yielded no batch in a fresh epoch")


@dataclass
class ValSequence:
    """A held-out video in memory: RGB frames (T, H, W, 3) and ground-truth id masks (T, H, W), uint8."""

    name: str
    frames: np.ndarray
    masks: np.ndarray


def load_val_sequences(val: ValConfig) -> list[ValSequence]:
    """Read the (truncated) validation sequences of ``val``."""
    from PIL import Image

    from vidseg.io.masks import read_mask

    index = build_index(val)
    load_mask = getattr(index, "load_mask", read_mask)
    out = []
    for seq in index:
        if val.max_sequences and len(out) >= val.max_sequences:
            break
        names = [n for n in seq.frame_names if n in seq.mask_paths]
        count = len(names) if not val.max_frames else min(len(names), val.max_frames)
        positions = [seq.frame_names.index(n) for n in names[:count]]
        frames = np.stack([np.asarray(Image.open(seq.frame_paths[p]).convert("RGB")) for p in positions])
        masks = np.stack([np.asarray(load_mask(seq.mask_paths[n]), dtype=np.uint8) for n in names[:count]])
        out.append(ValSequence(seq.name, frames, masks))
    return out


__all__ = ["ClipStream", "ValSequence", "build_clip_dataset", "build_index", "ensure_composite", "ensure_synth",
           "load_val_sequences"]
