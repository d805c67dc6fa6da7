"""The per-video inference session.

A :class:`Propagator` is a method: it holds weights and settings but no per-video state. An
:class:`InferenceSession` holds the state of one video and is driven frame by frame with
:meth:`InferenceSession.step`. The session keeps only the state of the last frame, so memory does not
grow with the length of the video.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import cv2
import numpy as np

from vidseg.constants import VOID_ID
from vidseg.io.masks import object_ids

_EPS = 1e-6


class Propagator(ABC):
    """A VOS method as the session sees it.

    Probabilities are (K, h, w) float32 arrays, one map per tracked object, in the order the
    session added them, at the working resolution chosen by :meth:`working_size`.
    """

    name: str = "propagator"

    @abstractmethod
    def working_size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) at which this method processes frames of the given size."""

    @abstractmethod
    def new_state(self) -> Any:
        """Fresh per-video state (held by the session, passed back in every call)."""

    @abstractmethod
    def propagate(self, state: Any, frame: np.ndarray) -> np.ndarray:
        """Predict the (K, h, w) probabilities of the tracked objects in ``frame`` (h, w, 3 uint8 RGB)."""

    @abstractmethod
    def commit(self, state: Any, frame: np.ndarray, probabilities: np.ndarray, new_objects: list[int]) -> None:
        """Store the final probabilities of ``frame`` (after overlaps were resolved and user masks applied).

        ``new_objects`` lists the positions (in the K axis) of objects that were added or
        re-initialised from a user mask at this frame.
        """

    def state_dict(self, state: Any) -> dict[str, Any]:
        """The per-video state as plain tensors and values (for resuming an interrupted run). It may share
        memory with ``state``: propagators replace their state's entries on commit, never write into them."""
        raise NotImplementedError(f"method {self.name!r} cannot save its state")

    def load_state_dict(self, saved: dict[str, Any]) -> Any:
        """Per-video state rebuilt from :meth:`state_dict`."""
        raise NotImplementedError(f"method {self.name!r} cannot restore its state")


def aggregate(probabilities: np.ndarray) -> np.ndarray:
    """Soft aggregation of K independent object probabilities into K+1 exclusive ones.

    Background probability is prod(1 - p_k); the K+1 odds are normalised with a softmax over logits,
    so overlapping objects compete and every pixel's probabilities sum to 1. Returns (K+1, h, w).
    """
    p = np.clip(probabilities, _EPS, 1 - _EPS)
    background = np.clip(np.prod(1 - p, axis=0, keepdims=True), _EPS, 1 - _EPS)
    stacked = np.concatenate([background, p], axis=0)
    logits = np.log(stacked) - np.log1p(-stacked)
    logits -= logits.max(axis=0, keepdims=True)
    odds = np.exp(logits)
    return (odds / odds.sum(axis=0, keepdims=True)).astype(np.float32)


def _resize_channels(maps: np.ndarray, size: tuple[int, int], interpolation: int) -> np.ndarray:
    """Resize (C, h, w) maps to (C, H, W)."""
    height, width = size
    if maps.shape[1:] == (height, width):
        return maps
    return np.stack([cv2.resize(m, (width, height), interpolation=interpolation) for m in maps])


class InferenceSession:
    """Per-video state of one method; call :meth:`step` once per frame, in order.

    Args:
        propagator: the method (see :func:`vidseg.inference.build_propagator`).

    ``step(frame, new_masks)`` takes an (H, W, 3) uint8 RGB frame and, optionally, an (H, W) id mask
    that adds objects (or re-initialises the ids it contains) at this frame, and returns the
    (H, W) uint8 id mask of the frame. Object ids are those of the user's masks (1..254).
    """

    def __init__(self, propagator: Propagator):
        self.propagator = propagator
        self.state = propagator.new_state()
        self.object_ids: list[int] = []
        self.frame_index = -1
        self.frame_size: tuple[int, int] | None = None
        self._working_size: tuple[int, int] | None = None

    def step(self, frame: np.ndarray, new_masks: np.ndarray | None = None) -> np.ndarray:
        frame = self._check_frame(frame)
        self.frame_index += 1
        working_frame = self._to_working(frame)
        height, width = self._working_size
        if self.object_ids:
            probabilities = self.propagator.propagate(self.state, working_frame)
        else:
            probabilities = np.zeros((0, height, width), np.float32)
        exclusive = aggregate(probabilities)

        new_objects: list[int] = []
        given_ids: list[int] = []
        if new_masks is not None:
            if new_masks.shape != self.frame_size:
                raise ValueError(f"mask size {new_masks.shape} differs from frame size {self.frame_size}")
            given_ids = object_ids(new_masks)
            exclusive, new_objects = self._apply_masks(exclusive, new_masks, given_ids)

        if self.object_ids:
            self.propagator.commit(self.state, working_frame, exclusive[1:], new_objects)
        return self._to_output(exclusive, new_masks, given_ids)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this video after the last :meth:`step` (see
        :meth:`load_state_dict`); cheap, it shares memory with the live state."""
        return {
            "method": self.propagator.name,
            "frame_index": self.frame_index,
            "object_ids": list(self.object_ids),
            "frame_size": None if self.frame_size is None else list(self.frame_size),
            "working_size": None if self._working_size is None else list(self._working_size),
            "propagator": self.propagator.state_dict(self.state) if self.object_ids else None,
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict` of the same method; the next :meth:`step` is frame
        ``frame_index + 1``."""
        if saved["method"] != self.propagator.name:
            raise ValueError(f"the saved state is of method {saved['method']!r}, not {self.propagator.name!r}")
        self.frame_index = int(saved["frame_index"])
        self.object_ids = [int(i) for i in saved["object_ids"]]
        self.frame_size = None if saved["frame_size"] is None else tuple(saved["frame_size"])
        self._working_size = None if saved["working_size"] is None else tuple(saved["working_size"])
        if self.frame_size is not None and self._working_size != self.propagator.working_size(*self.frame_size):
            raise ValueError(f"the saved state was made at working size {self._working_size}, this method works at "
                             f"{self.propagator.working_size(*self.frame_size)}")
        saved_state = saved["propagator"]
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
        self, exclusive: np.ndarray, masks: np.ndarray, given_ids: list[int]
    ) -> tuple[np.ndarray, list[int]]:
        """Put the user's objects into the (K+1) probabilities: they own their pixels outright."""
        height, width = self._working_size
        small = cv2.resize(masks, (width, height), interpolation=cv2.INTER_NEAREST)
        new_objects = []
        for object_id in given_ids:
            if object_id not in self.object_ids:
                self.object_ids.append(object_id)
                exclusive = np.concatenate([exclusive, np.zeros((1, height, width), np.float32)])
            new_objects.append(self.object_ids.index(object_id))
        given_region = (small > 0) & (small != VOID_ID)
        exclusive[:, given_region] = 0.0
        for position in new_objects:
            channel = position + 1
            exclusive[channel] = 0.0
            exclusive[channel][small == self.object_ids[position]] = 1.0
        # Pixels a re-initialised object no longer covers go to background.
        exclusive[0] = np.clip(1.0 - exclusive[1:].sum(axis=0), 0.0, 1.0)
        return exclusive, new_objects

    def _to_output(self, exclusive: np.ndarray, masks: np.ndarray | None, given_ids: list[int]) -> np.ndarray:
        full = _resize_channels(exclusive, self.frame_size, cv2.INTER_LINEAR)
        lookup = np.array([0, *self.object_ids], dtype=np.uint8)
        output = lookup[np.argmax(full, axis=0)]
        if masks is not None and given_ids:
            # The user's masks are exact at their own resolution.
            output[np.isin(output, given_ids)] = 0
            given = np.isin(masks, given_ids)
            output[given] = masks[given]
        return output
