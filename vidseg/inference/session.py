"""The per-video inference session and the contract every method fulfils.

A :class:`Propagator` is a method: it holds weights and settings but no per-video state. It owns
*tracks* (positive integer ids unique within a video): per frame it returns the maps of the tracks it
follows, optionally with scores, and it may start tracks by itself (methods that discover objects) or
drop and later re-find them. An :class:`InferenceSession` holds one video's state: the propagator's
state and an :class:`ObjectManager` that maps tracks to output object ids (the user's ids for objects
given as masks, free ids for discovered ones). It is driven frame by frame with
:meth:`InferenceSession.step` and keeps only the last frame's state, so memory does not grow with the
video's length.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vidseg.constants import MAX_OBJECT_ID, VOID_ID
from vidseg.io.masks import object_ids
from vidseg.models.ops import first_argmax

_EPS = 1e-6


@dataclass
class Prediction:
    """What a propagator predicts for one frame, at its working size.

    ``probabilities`` (K, h, w) holds one map per entry of ``tracks``: a tensor (kept on the method's device: the
    session merges, resizes and decides there, and copies to the host once per frame, for the mask) or a float32
    array (methods that work in NumPy); ``scores`` (K,) are optional confidences; ``exclusive`` says the maps
    already compete (each pixel sums to at most 1), so the session does not need to merge independent maps.
    """

    tracks: list[int]
    probabilities: Tensor | np.ndarray
    scores: Tensor | np.ndarray | None = None
    exclusive: bool = False

    @classmethod
    def empty(cls, height: int, width: int) -> Prediction:
        return cls([], np.zeros((0, height, width), np.float32))


@dataclass
class FrameUpdate:
    """The session's final decision for one frame, handed back to the propagator in ``commit``.

    ``probabilities`` (K, h, w) float32 tensor: the exclusive final maps of ``tracks`` (user masks applied), on the
    device of the frame's prediction (the CPU for methods that predict in NumPy, and before any prediction);
    ``given`` lists the tracks started or restarted from a user mask at this frame; ``removed`` the tracks
    the user removed since the last frame (absent from ``tracks``).
    """

    tracks: list[int]
    probabilities: Tensor
    given: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.probabilities = torch.as_tensor(self.probabilities, dtype=torch.float32)


class Propagator(ABC):
    """A VOS method as the session sees it (see the module docstring)."""

    name: str = "propagator"
    discovers_objects: bool = False  # True: propagate() is called even before any object is given
    precision: tuple[str, str] | None = None  # (network dtype, why), set by build_propagator for methods with one

    @abstractmethod
    def working_size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) at which this method processes frames of the given size."""

    @abstractmethod
    def new_state(self) -> Any:
        """Fresh per-video state (held by the session, passed back in every call)."""

    @abstractmethod
    def propagate(self, state: Any, frame: np.ndarray) -> Prediction:
        """Predict the tracks in ``frame`` ((h, w, 3) uint8 RGB at the working size). A track id this
        method starts must be higher than every id it has seen in earlier predictions and updates."""

    def masks_coming(self, state: Any) -> None:
        """Called before :meth:`propagate` on a frame where the user gives masks: a method that discovers
        objects may then stop reporting the ones it found (default: nothing changes)."""

    @abstractmethod
    def commit(self, state: Any, frame: np.ndarray, update: FrameUpdate) -> None:
        """Store the final result of ``frame``; the next :meth:`propagate` continues from it."""

    def state_dict(self, state: Any) -> dict[str, Any]:
        """The per-video state as plain tensors, arrays and values (for resuming an interrupted run). It may
        share memory with ``state``: propagators replace their state's entries on commit, never write into them."""
        raise NotImplementedError(f"method {self.name!r} cannot save its state")

    def load_state_dict(self, saved: dict[str, Any]) -> Any:
        """Per-video state rebuilt from :meth:`state_dict`."""
        raise NotImplementedError(f"method {self.name!r} cannot restore its state")


class ObjectManager:
    """Which track carries which output object id.

    User objects keep the id of their mask; a track the method discovers gets the lowest id never used in
    this video. A user mask with the id of a discovered object restarts that object's track.
    """

    def __init__(self) -> None:
        self.track_to_object: dict[int, int] = {}
        self.highest_track = 0
        self.used_ids: set[int] = set()

    def object_of(self, track: int) -> int:
        return self.track_to_object[track]

    def track_of(self, object_id: int) -> int | None:
        return next((t for t, o in self.track_to_object.items() if o == object_id), None)

    def see(self, tracks: list[int]) -> None:
        self.highest_track = max([self.highest_track, *tracks])

    def add_user_object(self, object_id: int) -> int:
        """The track of user object ``object_id`` (a new one unless the id is tracked already)."""
        track = self.track_of(object_id)
        if track is None:
            self.highest_track += 1
            track = self.highest_track
            self.track_to_object[track] = object_id
            self.used_ids.add(object_id)
        return track

    def adopt(self, track: int) -> int | None:
        """The object id of a track the method reported; None when every id is taken."""
        if track not in self.track_to_object:
            free = next((i for i in range(1, MAX_OBJECT_ID + 1) if i not in self.used_ids), None)
            if free is None:
                return None
            self.track_to_object[track] = free
            self.used_ids.add(free)
            self.see([track])
        return self.track_to_object[track]

    def remove(self, object_id: int) -> int:
        track = self.track_of(object_id)
        if track is None:
            raise ValueError(f"object {object_id} is not tracked")
        del self.track_to_object[track]
        return track

    def state_dict(self) -> dict[str, Any]:
        return {"tracks": [[t, o] for t, o in self.track_to_object.items()], "highest_track": self.highest_track,
                "used_ids": sorted(self.used_ids)}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.track_to_object = {int(t): int(o) for t, o in saved["tracks"]}
        self.highest_track = int(saved["highest_track"])
        self.used_ids = {int(i) for i in saved["used_ids"]}


def aggregate(probabilities: Tensor) -> Tensor:
    """Soft aggregation of K independent object probabilities into K+1 exclusive ones.

    Background probability is prod(1 - p_k); the K+1 odds are normalised with a softmax over logits,
    so overlapping objects compete and every pixel's probabilities sum to 1. Returns (K+1, h, w).
    """
    p = probabilities.float().clamp(_EPS, 1 - _EPS)
    background = torch.prod(1 - p, dim=0, keepdim=True).clamp(_EPS, 1 - _EPS)
    stacked = torch.cat([background, p])
    return torch.softmax(torch.logit(stacked), dim=0)


def with_background(probabilities: Tensor) -> Tensor:
    """Exclusive K maps -> K+1 with background = what the objects leave."""
    probabilities = probabilities.float()
    background = (1.0 - probabilities.sum(0, keepdim=True)).clamp(0.0, 1.0)
    return torch.cat([background, probabilities])


class InferenceSession:
    """Per-video state of one method; call :meth:`step` once per frame, in order.

    Args:
        propagator: the method (see :func:`vidseg.inference.build_propagator`).

    ``step(frame, new_masks)`` takes an (H, W, 3) uint8 RGB frame and, optionally, an (H, W) id mask
    that adds objects (or restarts the ids it contains) at this frame, and returns the (H, W) uint8 id
    mask of the frame. :meth:`remove_object` stops following an object; ``scores`` holds the last
    frame's confidences by object id (for methods that give them).
    """

    def __init__(self, propagator: Propagator):
        self.propagator = propagator
        self.state = propagator.new_state()
        self.objects = ObjectManager()
        self.frame_index = -1
        self.frame_size: tuple[int, int] | None = None
        self.scores: dict[int, float] = {}
        self._working_size: tuple[int, int] | None = None
        self._tracks: list[int] = []  # the tracks of the last committed frame, in the propagator's order
        self._removed: list[int] = []  # removed since the last commit
        self._active = False  # the propagator has state (a frame was committed)

    @property
    def object_ids(self) -> list[int]:
        """The ids of the objects in the last frame, in the propagator's order."""
        return [self.objects.object_of(t) for t in self._tracks]

    def remove_object(self, object_id: int) -> None:
        """Stop following ``object_id`` from the next frame on."""
        track = self.objects.remove(object_id)
        if track in self._tracks:
            self._tracks.remove(track)
        self._removed.append(track)

    def step(self, frame: np.ndarray, new_masks: np.ndarray | None = None) -> np.ndarray:
        frame = self._check_frame(frame)
        self.frame_index += 1
        working_frame = self._to_working(frame)
        height, width = self._working_size
        if new_masks is not None:
            self.propagator.masks_coming(self.state)
        if self._tracks or self.propagator.discovers_objects:
            prediction = self.propagator.propagate(self.state, working_frame)
        else:
            prediction = Prediction.empty(height, width)
        tracks, probabilities, scores = self._adopt(prediction)
        exclusive = with_background(probabilities) if prediction.exclusive else aggregate(probabilities)

        given_tracks: list[int] = []
        given_ids: list[int] = []
        if new_masks is not None:
            if new_masks.shape != self.frame_size:
                raise ValueError(f"mask size {new_masks.shape} differs from frame size {self.frame_size}")
            given_ids = object_ids(new_masks)
            exclusive, tracks, given_tracks = self._apply_masks(exclusive, tracks, new_masks, given_ids)

        self.scores = {self.objects.object_of(t): float(s) for t, s in zip(tracks, scores) if not np.isnan(s)}
        if tracks or self._active:
            update = FrameUpdate(list(tracks), exclusive[1:], given_tracks, self._removed)
            self.propagator.commit(self.state, working_frame, update)
            self._active, self._removed = True, []
        self._tracks = list(tracks)
        return self._to_output(exclusive, [self.objects.object_of(t) for t in tracks], new_masks, given_ids)

    def _adopt(self, prediction: Prediction) -> tuple[list[int], Tensor, list[float]]:
        """Map the predicted tracks to objects; drop removed tracks and tracks beyond the id range."""
        self.objects.see(prediction.tracks)
        keep = [i for i, t in enumerate(prediction.tracks)
                if t not in self._removed and self.objects.adopt(t) is not None]
        scores = (np.full(len(prediction.tracks), np.nan) if prediction.scores is None else
                  torch.as_tensor(prediction.scores).float().cpu().numpy())
        tracks = [prediction.tracks[i] for i in keep]
        probabilities = torch.as_tensor(prediction.probabilities)
        if keep != list(range(len(prediction.tracks))):
            probabilities = probabilities[keep]
        return tracks, probabilities, [float(scores[i]) for i in keep]

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this video after the last :meth:`step` (see
        :meth:`load_state_dict`); cheap, it shares memory with the live state."""
        return {
            "method": self.propagator.name,
            "frame_index": self.frame_index,
            "objects": self.objects.state_dict(),
            "tracks": list(self._tracks),
            "removed": list(self._removed),
            "frame_size": None if self.frame_size is None else list(self.frame_size),
            "working_size": None if self._working_size is None else list(self._working_size),
            "propagator": self.propagator.state_dict(self.state) if self._active else None,
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict` of the same method; the next :meth:`step` is frame
        ``frame_index + 1``."""
        if saved["method"] != self.propagator.name:
            raise ValueError(f"the saved state is of method {saved['method']!r}, not {self.propagator.name!r}")
        self.frame_index = int(saved["frame_index"])
        self.objects.load_state_dict(saved["objects"])
        self._tracks = [int(t) for t in saved["tracks"]]
        self._removed = [int(t) for t in saved["removed"]]
        self.frame_size = None if saved["frame_size"] is None else tuple(saved["frame_size"])
        self._working_size = None if saved["working_size"] is None else tuple(saved["working_size"])
        if self.frame_size is not None and self._working_size != self.propagator.working_size(*self.frame_size):
            raise ValueError(f"the saved state was made at working size {self._working_size}, this method works at "
                             f"{self.propagator.working_size(*self.frame_size)}")
        saved_state = saved["propagator"]
        self._active = saved_state is not None
        self.state = self.propagator.new_state() if saved_state is None else self.propagator.load_state_dict(saved_state)

    def _check_frame(self, frame: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"a frame must be an (H, W, 3) uint8 RGB array, got {frame.shape} {frame.dtype}")
        if self.frame_size is None:
            self.frame_size = frame.shape[:2]
            self._working_size = self.propagator.working_size(*self.frame_size)
        elif frame.shape[:2] != self.frame_size:
            raise ValueError(f"frame size {frame.shape[:2]} differs from the first frame's {self.frame_size}")
        return frame

    def _to_working(self, frame: np.ndarray) -> np.ndarray:
        height, width = self._working_size
        if (height, width) == self.frame_size:
            return frame
        return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)

    def _apply_masks(
        self, exclusive: Tensor, tracks: list[int], masks: np.ndarray, given_ids: list[int]
    ) -> tuple[Tensor, list[int], list[int]]:
        """Put the user's objects into the (K+1) probabilities: they own their pixels outright."""
        height, width = self._working_size
        small = torch.from_numpy(cv2.resize(masks, (width, height), interpolation=cv2.INTER_NEAREST))
        small = small.to(exclusive.device)
        tracks = list(tracks)
        given_tracks = []
        for object_id in given_ids:
            track = self.objects.add_user_object(object_id)
            if track not in tracks:
                tracks.append(track)
                exclusive = torch.cat([exclusive, exclusive.new_zeros((1, height, width))])
            given_tracks.append(track)
        given_region = (small > 0) & (small != VOID_ID)
        exclusive[:, given_region] = 0.0
        for track in given_tracks:
            channel = tracks.index(track) + 1
            exclusive[channel] = (small == self.objects.object_of(track)).float()
        # Pixels a restarted object no longer covers go to background.
        exclusive[0] = (1.0 - exclusive[1:].sum(0)).clamp(0.0, 1.0)
        return exclusive, tracks, given_tracks

    def _to_output(
        self, exclusive: Tensor, ids: list[int], masks: np.ndarray | None, given_ids: list[int]
    ) -> np.ndarray:
        height, width = self.frame_size
        if exclusive.shape[1:] != (height, width):
            exclusive = F.interpolate(exclusive[None], size=(height, width), mode="bilinear", align_corners=False)[0]
        lookup = np.array([0, *ids], dtype=np.uint8)
        output = lookup[first_argmax(exclusive).cpu().numpy()]
        if masks is not None and given_ids:
            # The user's masks are exact at their own resolution.
            output[np.isin(output, given_ids)] = 0
            given = np.isin(masks, given_ids)
            output[given] = masks[given]
        return output
