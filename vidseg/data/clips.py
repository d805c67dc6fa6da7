"""Training clips sampled from a dataset index, reproducible from (seed, epoch, index).

:class:`ClipDataset` turns an index (:class:`~vidseg.data.davis.DavisIndex`,
:class:`~vidseg.data.youtube_vos.YouTubeVOSIndex`, or anything iterable over
:class:`~vidseg.data.sequence.VideoSequence` with an optional ``load_mask(path)``) into a torch
``Dataset`` of clips. Item ``i`` of epoch ``e`` depends only on ``(seed, e, i)``: the random state is a
:class:`numpy.random.Generator` built from ``SeedSequence([tag, seed, e, i])`` (and a
:class:`torch.Generator` seeded from it for the augmentation), never the global RNGs and not the worker
id. So any number of DataLoader workers gives the same batches, and training resumes exactly.

Sampling one clip:

1. the video: within each block of ``N`` consecutive indices (``N`` = usable videos) every video is
   used once, in an order shuffled per (seed, epoch, block);
2. the clip length ``T`` (an int, or drawn from a ``(min, max)`` range and clamped to the video);
3. the object (``objects="one"``: one random object; ``"all"``: every object visible at the start);
4. the temporal stride, uniform in ``stride`` = ``(min, max)``, clamped so that the clip fits;
5. the start: a labelled frame at or after the object's first annotated appearance (an object that
   first appears at frame 10 never starts a clip before frame 10) in which the object is visible;
   starts where it is not visible (occlusion) are redrawn;
6. the clip's frames ``start, start + s, ...`` (with ``labelled_only=True`` the clip runs over the
   labelled frames only: every s-th annotated frame, S2S's first training phase on YouTube-VOS);
7. joint augmentation (:class:`~vidseg.data.transforms.ClipAugment`) to the fixed output size,
   redrawn when it pushes the object(s) out of the first frame.

Item (a dict; batch it with :func:`collate_clips`):

* ``frames``: float32 ``(T, 3, H, W)`` in [0, 1] (ImageNet-normalised when ``normalize=True``);
* ``masks``: int64 ``(T, H, W)`` ids: ``objects="one"``: 0/1; ``"all"``: 0..K, the objects remapped to
  1..K in order of (first appearance, original id); 0 on void pixels and on unlabelled frames;
* ``void``: bool ``(T, H, W)``: void (255) pixels of labelled frames, including pixels an affine
  brought in from outside the image;
* ``labelled``: bool ``(T,)``: the frame has an annotation (compute the loss only there);
* ``frame_valid``: bool ``(T,)``: all True (``collate_clips`` pads variable-length clips with False);
* ``object_ids``: int64 ``(S,)`` original ids of the slots (S = 1 for "one", ``max_objects`` for
  "all"; 0 in unused slots), ``object_valid`` bool ``(S,)``, ``object_first`` int64 ``(S,)`` clip
  frame where the object is first given (0 unless ``later_objects=True``; -1 for unused slots),
  ``num_objects`` int64 ``()``. ``object_valid`` is False (``num_objects`` 0) in the rare item whose
  object(s) stay under ``min_pixels`` in the first frame even without geometric augmentation (a tiny
  object shrunk by the resize): skip such items or let their loss be empty;
* ``frame_indices`` int64 ``(T,)`` (indices into ``sequence.frame_names``), ``stride``, ``epoch``,
  ``index``, ``length`` (int64 scalars), ``sequence`` and ``dataset`` (str).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, Sampler

from vidseg.constants import VOID_ID
from vidseg.data.sequence import VideoSequence
from vidseg.data.transforms import AugmentConfig, ClipAugment
from vidseg.data.transforms import normalize as imagenet_normalize
from vidseg.errors import VidsegError
from vidseg.io.masks import read_mask

OBJECT_MODES = ("one", "all")
_TAG_ITEM, _TAG_ORDER, _TAG_MIX = 0x1717, 0x2828, 0x3939
_TIME_KEYS = ("frames", "masks", "void", "labelled", "frame_valid", "frame_indices")


def item_rng(seed: int, epoch: int, index: int, tag: int = _TAG_ITEM) -> np.random.Generator:
    """The random generator of item ``index`` of ``epoch`` (all non-negative integers)."""
    return np.random.default_rng(np.random.SeedSequence([int(tag), int(seed), int(epoch), int(index)]))


def _range(value, name: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        low = high = int(value)
    else:
        low, high = (int(v) for v in value)
    if low < 1 or high < low:
        raise ValueError(f"{name} must be a positive int or a (min, max) range with 1 <= min <= max, got {value!r}")
    return low, high


def _check_size(size) -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    h, w = (int(s) for s in size)
    if h < 32 or w < 32 or h % 32 or w % 32:
        raise ValueError(f"output size must be (height, width) divisible by 32, got {tuple(size)}")
    return h, w


@dataclass(frozen=True)
class _Candidates:
    """Clip starts of one object (or of any object): positions on the sequence's timeline."""

    starts: np.ndarray  # sorted positions on the timeline where a clip may start

    def max_length(self, timeline_len: int) -> int:
        return timeline_len - int(self.starts[0])


@dataclass(frozen=True)
class _SeqPlan:
    sequence: VideoSequence
    timeline: np.ndarray  # frame indices a clip runs over (all frames, or the labelled ones)
    labelled: np.ndarray  # bool per frame index
    objects: dict[int, _Candidates]  # usable objects (objects="one")
    any_object: _Candidates | None  # starts for objects="all"


def _open_frame(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise VidsegError("frame file not found", path, "the dataset is incomplete: restore its JPEGImages") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise VidsegError(f"cannot read frame ({exc.__class__.__name__})", path, "the file is corrupted") from None


class ClipDataset(Dataset):
    """Random training clips from one dataset index (see the module docstring).

    Args:
        index: a DAVIS / YouTube-VOS index, or any iterable of ``VideoSequence`` (its ``load_mask``
            is used when it has one, else :func:`~vidseg.io.masks.read_mask`).
        clip_length: frames per clip, an int or a ``(min, max)`` range drawn per item.
        stride: temporal stride range ``(min, max)`` (or an int); clamped for short videos.
        size: output ``(height, width)``, both divisible by 32 (e.g. ``(256, 448)``).
        objects: ``"one"`` (a random object, binary mask) or ``"all"`` (ids remapped to 1..K).
        max_objects: slots for ``objects="all"`` (a random subset is kept when more are visible).
        later_objects: with ``"all"``, also take objects that first appear later in the clip
            (``object_first`` says where); otherwise they are background.
        labelled_only: clips over annotated frames only (every s-th labelled frame).
        samples_per_epoch: items per epoch (default: the number of usable videos).
        augment: an :class:`AugmentConfig` (default ``AugmentConfig()``), or ``None``/``False`` to
            only resize (bilinear + antialias for frames, nearest for masks).
        seed: base seed; item ``i`` of epoch ``e`` depends only on ``(seed, e, i)``.
        normalize: ImageNet-normalise the frames (else they are in [0, 1]).
        min_pixels: an object counts as visible in the clip's first frame with at least this many
            pixels (at the output size); the start and the augmentation are redrawn otherwise.
        name: a label copied into every item (``dataset``).
    """

    def __init__(
        self,
        index: Any,
        clip_length: int | tuple[int, int] = 5,
        stride: int | tuple[int, int] = (1, 3),
        size: tuple[int, int] = (256, 448),
        objects: str = "one",
        max_objects: int = 10,
        later_objects: bool = False,
        labelled_only: bool = False,
        samples_per_epoch: int | None = None,
        augment: AugmentConfig | None | bool = True,
        seed: int = 0,
        normalize: bool = False,
        min_pixels: int = 8,
        name: str | None = None,
        start_tries: int = 8,
        augment_tries: int = 5,
    ):
        if objects not in OBJECT_MODES:
            raise ValueError(f"objects must be one of {OBJECT_MODES}, got {objects!r}")
        if max_objects < 1:
            raise ValueError("max_objects must be at least 1")
        if int(seed) < 0:
            raise ValueError("seed must be non-negative")
        self.index = index
        self.clip_length = _range(clip_length, "clip_length")
        self.stride = _range(stride, "stride")
        self.size = _check_size(size)
        self.objects = objects
        self.max_objects = int(max_objects) if objects == "all" else 1
        self.later_objects = bool(later_objects) and objects == "all"
        self.labelled_only = bool(labelled_only)
        self.seed = int(seed)
        self.normalize = bool(normalize)
        self.min_pixels = max(1, int(min_pixels))
        self.start_tries = max(1, int(start_tries))
        self.augment_tries = max(0, int(augment_tries))
        self.name = name if name is not None else type(index).__name__
        if augment is True:
            augment = AugmentConfig()
        elif augment is None or augment is False:
            augment = AugmentConfig.none()
        self.augment = ClipAugment(self.size, augment)
        self._load_mask = getattr(index, "load_mask", read_mask)
        self.epoch = 0
        self.skipped: dict[str, str] = {}
        self.plans = self._build_plans()
        if samples_per_epoch is not None and int(samples_per_epoch) < 1:
            raise ValueError("samples_per_epoch must be positive")
        self.samples_per_epoch = int(samples_per_epoch) if samples_per_epoch is not None else len(self.plans)

    # ------------------------------------------------------------------ indexing
    def _where(self) -> Path | None:
        root = getattr(self.index, "root", None)
        return Path(root) if root is not None else None

    def _build_plans(self) -> list[_SeqPlan]:
        try:
            sequences = list(self.index)
        except TypeError:
            raise ValueError("index must be iterable over VideoSequence objects") from None
        if not sequences:
            raise VidsegError("the dataset index has no sequences", self._where(), "check the root, split and sequence names")
        plans = []
        longest = 0  # longest timeline among sequences with an annotated object
        image_dir = getattr(self.index, "image_dir", None)
        for seq in sequences:
            if not isinstance(seq, VideoSequence):
                raise ValueError(f"index yielded {type(seq).__name__}, not VideoSequence")
            if not seq.frame_paths:
                folder = Path(image_dir) / seq.name if image_dir is not None else None
                raise VidsegError(
                    f"sequence {seq.name!r} has annotations but no frames", folder,
                    "training needs the JPEGImages of every sequence (restore them or drop the sequence)",
                )
            names = {n: i for i, n in enumerate(seq.frame_names)}
            stray = [n for n in seq.mask_paths if n not in names]
            if stray:
                raise VidsegError(
                    f"annotation {stray[0]!r} of sequence {seq.name!r} has no frame", seq.mask_paths[stray[0]],
                    "the frames of this sequence are incomplete: restore its JPEGImages",
                )
            n = len(seq.frame_names)
            labelled = np.zeros(n, dtype=bool)
            for frame in seq.mask_paths:
                labelled[names[frame]] = True
            timeline = np.flatnonzero(labelled) if self.labelled_only else np.arange(n)
            position = {int(f): p for p, f in enumerate(timeline)}
            objects: dict[int, _Candidates] = {}
            for obj_id, info in sorted(seq.objects.items()):
                if info.first_frame not in names:
                    continue
                first = names[info.first_frame]
                if info.annotated_frames:
                    frames = [names[f] for f in info.annotated_frames if f in names and labelled[names[f]]]
                else:
                    frames = [int(f) for f in np.flatnonzero(labelled) if f >= first]
                starts = np.array(sorted(position[f] for f in frames if f >= first and f in position), dtype=np.int64)
                if len(starts):
                    longest = max(longest, len(timeline) - int(starts[0]))
                if len(starts) and len(timeline) - starts[0] >= self.clip_length[0]:
                    objects[obj_id] = _Candidates(starts[len(timeline) - starts >= self.clip_length[0]])
            if not objects:
                self.skipped[seq.name] = (
                    "no annotated object" if not seq.objects else f"shorter than {self.clip_length[0]} frames after its objects appear"
                )
                continue
            union = np.unique(np.concatenate([c.starts for c in objects.values()]))
            plans.append(_SeqPlan(seq, timeline, labelled, objects, _Candidates(union)))
        if not plans and longest == 0:
            raise VidsegError(
                "no sequence has an annotated object", self._where(), "check the annotations (and meta.json)"
            )
        if not plans:
            unit = "labelled frames" if self.labelled_only else "frames"
            raise VidsegError(
                f"clip length {self.clip_length[0]} is longer than every video (the longest has {longest} {unit}"
                f" from its first annotated object on)",
                self._where(),
                "use a shorter clip_length" + (" or labelled_only=False" if self.labelled_only else ""),
            )
        return plans

    def __len__(self) -> int:
        return self.samples_per_epoch

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch of integer indices (with persistent workers use :class:`ClipSampler`)."""
        if int(epoch) < 0:
            raise ValueError("epoch must be non-negative")
        self.epoch = int(epoch)

    def __getitem__(self, key) -> dict[str, Any]:
        if isinstance(key, tuple):
            epoch, index = key
        else:
            epoch, index = self.epoch, key
        return self.sample(int(epoch), int(index))

    # ------------------------------------------------------------------ sampling
    def _video_for(self, epoch: int, index: int) -> int:
        n = len(self.plans)
        block, slot = divmod(index, n)
        order = item_rng(self.seed, epoch, block, _TAG_ORDER).permutation(n)
        return int(order[slot])

    def sample(self, epoch: int, index: int) -> dict[str, Any]:
        """The clip of item ``index`` in ``epoch`` (any non-negative index; ``index >= len`` is fine)."""
        if epoch < 0 or index < 0:
            raise IndexError(f"epoch and index must be non-negative, got ({epoch}, {index})")
        rng = item_rng(self.seed, epoch, index)
        plan = self.plans[self._video_for(epoch, index)]
        length = int(rng.integers(self.clip_length[0], self.clip_length[1] + 1))
        start_mask_cache: dict[int, np.ndarray] = {}

        def mask_at(frame: int) -> np.ndarray:
            if frame not in start_mask_cache:
                seq = plan.sequence
                start_mask_cache[frame] = np.asarray(self._load_mask(seq.mask_paths[seq.frame_names[frame]]))
            return start_mask_cache[frame]

        chosen = None
        for attempt in range(self.start_tries):
            if self.objects == "one":
                ids = sorted(plan.objects)
                obj = ids[int(rng.integers(len(ids)))]
                cand = plan.objects[obj]
            else:
                obj, cand = None, plan.any_object
            frames, stride, t = self._draw_clip(rng, plan, cand, length, first_only=attempt == self.start_tries - 1)
            start_mask = mask_at(int(frames[0]))
            if obj is not None:
                visible = int((start_mask == obj).sum()) > 0
            else:
                visible = bool(((start_mask > 0) & (start_mask != VOID_ID)).any())
            if chosen is None or visible:
                chosen = (obj, frames, stride)
            if visible:
                break
        obj, frames, stride = chosen
        return self._load_clip(rng, plan, obj, frames, stride, epoch, index, mask_at)

    def _draw_clip(self, rng, plan: _SeqPlan, cand: _Candidates, length: int, first_only: bool):
        span = len(plan.timeline)
        length = min(length, cand.max_length(span))
        if length > 1:
            s_hi = min(self.stride[1], (span - 1 - int(cand.starts[0])) // (length - 1))
        else:
            s_hi = self.stride[1]
        s_lo = min(self.stride[0], s_hi)
        stride = int(rng.integers(s_lo, s_hi + 1))
        feasible = cand.starts[cand.starts + (length - 1) * stride <= span - 1]
        start = int(feasible[0]) if first_only else int(feasible[int(rng.integers(len(feasible)))])
        positions = start + stride * np.arange(length)
        return plan.timeline[positions], stride, length

    def _load_clip(self, rng, plan: _SeqPlan, obj, frame_idx: np.ndarray, stride: int, epoch: int, index: int, mask_at):
        seq = plan.sequence
        images = [_open_frame(seq.frame_paths[int(f)]) for f in frame_idx]
        shape = images[0].shape
        for f, image in zip(frame_idx, images):
            if image.shape != shape:
                raise VidsegError(
                    f"frame size {image.shape[1]}x{image.shape[0]} differs from {shape[1]}x{shape[0]} of the clip",
                    seq.frame_paths[int(f)], "all frames of a video must have the same size",
                )
        labelled = plan.labelled[frame_idx]
        lab_pos = [t for t in range(len(frame_idx)) if labelled[t]]
        raw_masks = []
        for t in lab_pos:
            mask = mask_at(int(frame_idx[t]))
            if mask.shape != shape[:2]:
                raise VidsegError(
                    f"mask size {mask.shape[1]}x{mask.shape[0]} differs from frame size {shape[1]}x{shape[0]}",
                    seq.mask_paths[seq.frame_names[int(frame_idx[t])]], "resize the annotation to its frame",
                )
            raw_masks.append(mask)
        frames_u8 = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        masks_u8 = torch.from_numpy(np.stack(raw_masks).astype(np.uint8))

        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        in_size = tuple(frames_u8.shape[-2:])
        T = len(frame_idx)
        params = None
        for attempt in range(self.augment_tries + 1):
            p = self.augment.sample(T, in_size, gen)
            if attempt == self.augment_tries:
                p = p.without_geometry()
            first = self.augment.apply_masks(masks_u8[:1], p, [0])[0]
            if params is None or self._first_ok(first, obj):
                params = p
            if self._first_ok(first, obj):
                break
        frames = self.augment.apply_frames(frames_u8, params)
        masks = self.augment.apply_masks(masks_u8, params, lab_pos)

        H, W = self.size
        full = torch.zeros((T, H, W), dtype=torch.uint8)
        full[lab_pos] = masks
        lab = torch.from_numpy(labelled.copy())
        void = (full == VOID_ID) & lab.view(T, 1, 1)
        slots = self.max_objects
        object_ids = torch.zeros(slots, dtype=torch.int64)
        object_valid = torch.zeros(slots, dtype=torch.bool)
        object_first = torch.full((slots,), -1, dtype=torch.int64)
        out_masks = torch.zeros((T, H, W), dtype=torch.int64)
        if obj is not None:
            out_masks[full == obj] = 1
            object_ids[0] = obj
            object_valid[0] = self._count(full[0], obj) >= self.min_pixels
            object_first[0] = 0
        else:
            picked = self._pick_objects(rng, full, lab_pos)
            for k, (oid, t_first) in enumerate(picked):
                out_masks[full == oid] = k + 1
                object_ids[k] = oid
                object_valid[k] = True
                object_first[k] = t_first
        if self.normalize:
            frames = imagenet_normalize(frames)
        return {
            "frames": frames,
            "masks": out_masks,
            "void": void,
            "labelled": lab,
            "frame_valid": torch.ones(T, dtype=torch.bool),
            "frame_indices": torch.from_numpy(frame_idx.astype(np.int64)),
            "object_ids": object_ids,
            "object_valid": object_valid,
            "object_first": object_first,
            "num_objects": object_valid.sum(),
            "stride": torch.tensor(stride, dtype=torch.int64),
            "length": torch.tensor(T, dtype=torch.int64),
            "epoch": torch.tensor(epoch, dtype=torch.int64),
            "index": torch.tensor(index, dtype=torch.int64),
            "sequence": seq.name,
            "dataset": self.name,
        }

    @staticmethod
    def _count(mask: torch.Tensor, obj: int) -> int:
        return int((mask == obj).sum())

    def _first_ok(self, first: torch.Tensor, obj) -> bool:
        if obj is not None:
            return self._count(first, obj) >= self.min_pixels
        ids, counts = torch.unique(first, return_counts=True)
        return any(0 < int(i) < VOID_ID and int(c) >= self.min_pixels for i, c in zip(ids, counts))

    def _pick_objects(self, rng, full: torch.Tensor, lab_pos: list[int]) -> list[tuple[int, int]]:
        """(original id, first clip frame) of the objects kept, in their new order 1..K."""
        first_seen: dict[int, int] = {}
        frames = lab_pos if self.later_objects else lab_pos[:1]
        for t in frames:
            ids, counts = torch.unique(full[t], return_counts=True)
            for i, c in zip(ids.tolist(), counts.tolist()):
                if 0 < i < VOID_ID and c >= self.min_pixels and i not in first_seen:
                    first_seen[i] = t
        at_start = sorted(i for i, t in first_seen.items() if t == 0)
        later = sorted((i for i, t in first_seen.items() if t > 0), key=lambda i: (first_seen[i], i))
        keep = list(at_start)
        if len(keep) > self.max_objects:
            keep = sorted(rng.choice(keep, size=self.max_objects, replace=False).tolist())
        room = self.max_objects - len(keep)
        if room > 0 and later:
            if len(later) > room:
                later = [later[i] for i in sorted(rng.choice(len(later), size=room, replace=False).tolist())]
            keep += later
        keep.sort(key=lambda i: (first_seen[i], i))
        return [(int(i), int(first_seen[i])) for i in keep]


class ConcatClipDataset(Dataset):
    """A weighted mixture of clip datasets (e.g. DAVIS + YouTube-VOS + synthetic).

    Every epoch of ``samples_per_epoch`` items holds each dataset in proportion to ``weights``
    (exact counts by largest remainder, positions shuffled per (seed, epoch)); the j-th item drawn
    from dataset d is that dataset's item ``(epoch, j)``. So the mixture is deterministic given
    (seed, epoch, index), like its parts. ``weights`` default to the parts' lengths. A part needs a
    ``sample(epoch, index)`` method (``ClipDataset`` has one) or is indexed with ``index % len``.
    Items get ``dataset`` = the part's name and ``source`` = its position in ``datasets``.
    """

    def __init__(
        self,
        datasets: Sequence[Dataset],
        weights: Sequence[float] | None = None,
        samples_per_epoch: int | None = None,
        seed: int = 0,
    ):
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("ConcatClipDataset needs at least one dataset")
        sizes = {tuple(ds.size) for ds in self.datasets if getattr(ds, "size", None) is not None}
        if len(sizes) > 1:
            raise ValueError(f"datasets have different output sizes {sorted(sizes)}: batches need one size")
        slots = {ds.max_objects for ds in self.datasets if getattr(ds, "max_objects", None) is not None}
        if len(slots) > 1:
            raise ValueError(f"datasets have different object slots {sorted(slots)} (objects / max_objects): batches need one")
        if weights is None:
            weights = [len(ds) for ds in self.datasets]
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (len(self.datasets),) or (weights < 0).any() or not weights.sum() > 0 or not np.isfinite(weights).all():
            raise ValueError(f"weights must be one non-negative number per dataset, not all zero; got {weights.tolist()}")
        self.weights = weights / weights.sum()
        self.samples_per_epoch = int(samples_per_epoch) if samples_per_epoch is not None else int(sum(len(d) for d in self.datasets))
        if self.samples_per_epoch < 1:
            raise ValueError("samples_per_epoch must be positive")
        if int(seed) < 0:
            raise ValueError("seed must be non-negative")
        self.seed = int(seed)
        self.epoch = 0
        raw = self.weights * self.samples_per_epoch
        counts = np.floor(raw).astype(np.int64)
        remainder = self.samples_per_epoch - int(counts.sum())
        counts[np.argsort(-(raw - counts), kind="stable")[:remainder]] += 1
        self.counts = counts
        self._cache: tuple[tuple[int, int], np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.samples_per_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        for ds in self.datasets:
            if hasattr(ds, "set_epoch"):
                ds.set_epoch(epoch)

    def assignment(self, epoch: int, block: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(part, index within the part) of every item of ``epoch``; ``block`` k > 0 is the
        assignment of indices ``k * len .. (k + 1) * len - 1`` (padding of a distributed sampler)."""
        if self._cache is None or self._cache[0] != (epoch, block):
            parts = np.repeat(np.arange(len(self.datasets)), self.counts)
            parts = parts[item_rng(self.seed, epoch, block, _TAG_MIX).permutation(len(parts))]
            within = np.zeros(len(parts), dtype=np.int64)
            for d in range(len(self.datasets)):
                where = np.flatnonzero(parts == d)
                within[where] = np.arange(len(where))
            self._cache = ((epoch, block), parts, within)
        return self._cache[1], self._cache[2]

    def __getitem__(self, key) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        return self.sample(int(epoch), int(index))

    def sample(self, epoch: int, index: int) -> dict[str, Any]:
        if epoch < 0 or index < 0:
            raise IndexError(f"epoch and index must be non-negative, got ({epoch}, {index})")
        block, slot = divmod(index, self.samples_per_epoch)
        parts, within = self.assignment(epoch, block)
        d = int(parts[slot])
        j = int(within[slot]) + block * int(self.counts[d])
        ds = self.datasets[d]
        item = ds.sample(epoch, j) if hasattr(ds, "sample") else ds[j % len(ds)]
        item = dict(item)
        item["source"] = torch.tensor(d, dtype=torch.int64)
        item.setdefault("dataset", str(d))
        return item


class ClipSampler(Sampler):
    """Yields ``(epoch, index)`` keys, so the epoch reaches persistent workers, and shards for DDP.

    Rank ``r`` of ``world_size`` gets indices ``r, r + world_size, ...`` (padded past the end so that
    every rank has the same count; clips past the end are extra random clips). ``set_epoch(e, start=k)``
    skips this rank's first ``k`` items, to resume in the middle of an epoch.
    """

    def __init__(self, dataset_or_length, rank: int = 0, world_size: int = 1, epoch: int = 0, start: int = 0):
        self.length = dataset_or_length if isinstance(dataset_or_length, int) else len(dataset_or_length)
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad rank {rank} of world size {world_size}")
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = int(epoch), int(start)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start)

    def __len__(self) -> int:
        return max(0, math.ceil(self.length / self.world_size) - self.start)

    def __iter__(self):
        per_rank = math.ceil(self.length / self.world_size)
        for k in range(self.start, per_rank):
            yield (self.epoch, self.rank + k * self.world_size)


def collate_clips(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack clip items; clips of different lengths are padded at the end (``frame_valid`` False,
    ``labelled`` False, masks 0, ``frame_indices`` -1). Strings become lists."""
    if not batch:
        raise ValueError("empty batch")
    T = max(int(item["frames"].shape[0]) for item in batch)
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [item[key] for item in batch]
        if isinstance(values[0], torch.Tensor):
            if key in _TIME_KEYS:
                fill = -1 if key == "frame_indices" else 0
                values = [_pad_time(v, T, fill) for v in values]
            out[key] = torch.stack(values)
        else:
            out[key] = list(values)
    return out


def _pad_time(x: torch.Tensor, length: int, fill) -> torch.Tensor:
    if x.shape[0] == length:
        return x
    pad = torch.full((length - x.shape[0], *x.shape[1:]), fill, dtype=x.dtype)
    return torch.cat([x, pad])


__all__ = [
    "OBJECT_MODES",
    "ClipDataset",
    "ClipSampler",
    "ConcatClipDataset",
    "collate_clips",
    "item_rng",
]
