"""A toy method that discovers objects by itself: connected components of bright pixels, each following the
track it overlaps most in the previous frame. It exercises the session contract of discovering methods
(tracks started by the method, exclusive maps, scores, pickle-free resume) and the ``vidseg.methods`` entry
points: the ``bright_spots-0.1.dist-info`` folder beside it registers it when this folder is on the path.
``BRIGHT_SPOTS_KILL_AT=N`` makes the process SIGKILL itself at the N-th frame (for resume tests)."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field

import cv2
import numpy as np

from vidseg.inference.session import FrameUpdate, Prediction, Propagator
from vidseg.registry import MethodSpec

SPEC = MethodSpec("bright-spots", "toy: bright connected components, discovered and tracked by overlap",
                  propagator="bright_spots:BrightSpots", one_shot=False, zero_shot=True, options=())


@dataclass
class SpotsState:
    labels: np.ndarray | None = None  # (h, w) int32 track of each pixel in the last frame, 0 = none
    highest: int = 0  # the highest track id seen
    frames: int = field(default=0)


class BrightSpots(Propagator):
    name = "bright-spots"
    discovers_objects = True

    def __init__(self, threshold: int = 200, min_area: int = 12):
        self.threshold, self.min_area = threshold, min_area

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        return height, width

    def new_state(self) -> SpotsState:
        return SpotsState()

    def foreground(self, frame: np.ndarray) -> np.ndarray:
        """(h, w) foreground strength in [0, 1]; components are the pixels above 0.5."""
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)
        return np.clip(0.5 + (gray - self.threshold) / 255.0, 0.0, 1.0)

    def propagate(self, state: SpotsState, frame: np.ndarray) -> Prediction:
        state.frames += 1
        if state.frames == int(os.environ.get("BRIGHT_SPOTS_KILL_AT", "0")):
            os.kill(os.getpid(), signal.SIGKILL)
        strength = self.foreground(frame)
        count, components, stats, _ = cv2.connectedComponentsWithStats((strength > 0.5).astype(np.uint8))
        order = sorted((c for c in range(1, count) if stats[c, cv2.CC_STAT_AREA] >= self.min_area),
                       key=lambda c: -stats[c, cv2.CC_STAT_AREA])
        tracks, maps, scores, taken = [], [], [], set()
        for component in order:
            region = components == component
            previous = state.labels[region] if state.labels is not None else np.zeros(0, np.int32)
            ids, votes = np.unique(previous[previous > 0], return_counts=True)
            candidates = [t for _, t in sorted(zip(-votes, ids)) if t not in taken]
            if candidates:
                track = int(candidates[0])
            else:
                state.highest += 1
                track = state.highest
            taken.add(track)
            tracks.append(track)
            maps.append(region.astype(np.float32))
            scores.append(float(strength[region].mean()))
        probabilities = np.stack(maps) if maps else np.zeros((0, *strength.shape), np.float32)
        return Prediction(tracks, probabilities, np.array(scores, np.float32), exclusive=True)

    def commit(self, state: SpotsState, frame: np.ndarray, update: FrameUpdate) -> None:
        labels = np.zeros(frame.shape[:2], np.int32)
        for track, probability in zip(update.tracks, update.probabilities):
            labels[probability > 0.5] = track
        state.labels = labels
        state.highest = max([state.highest, *update.tracks])

    def state_dict(self, state: SpotsState) -> dict:
        return {"labels": state.labels, "highest": state.highest, "frames": state.frames}

    def load_state_dict(self, saved: dict) -> SpotsState:
        return SpotsState(np.asarray(saved["labels"], np.int32), int(saved["highest"]), int(saved["frames"]))
