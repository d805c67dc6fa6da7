"""Optical-flow mask propagation: a weight-free VOS method.

For each new frame, dense optical flow (OpenCV DIS) from the new frame back to the previous one tells
where every pixel came from; each object's soft mask of the previous frame is backward-warped along
it. Pixels that fail the forward-backward consistency check (disoccluded background next to a moving
object, whose flow is smeared from the object) are not trusted: their object probability is damped,
otherwise masks grow into the area an object uncovers. The session then resolves overlaps between
objects. Masks are sharpened before they are stored so that repeated bilinear warping does not blur
them away over long videos.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from vidseg.inference.session import FrameUpdate, Prediction, Propagator

DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


@dataclass
class FlowState:
    previous_gray: np.ndarray | None = None
    tracks: list[int] = field(default_factory=list)
    probabilities: np.ndarray | None = None
    flow: cv2.DISOpticalFlow | None = field(default=None, repr=False)
    grid: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)  # pixel coordinates, built once


class FlowPropagator(Propagator):
    """Propagate masks with dense optical flow.

    Args:
        preset: DIS preset (``ultrafast``, ``fast``, ``medium``).
        max_side: frames whose longer side exceeds this are processed at a reduced size.
        sharpness: gain of the logistic re-sharpening of stored masks (0 disables it).
        occlusion_damping: factor on the warped probability of pixels that fail the forward-backward
            check (1 disables the check and its second flow computation).
    """

    name = "flow"

    def __init__(
        self, preset: str = "ultrafast", max_side: int = 640, sharpness: float = 4.0, occlusion_damping: float = 1.0
    ):
        if preset not in DIS_PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r}; use one of {', '.join(DIS_PRESETS)}")
        self.preset = preset
        self.max_side = max_side
        self.sharpness = sharpness
        self.occlusion_damping = occlusion_damping

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        scale = min(1.0, self.max_side / max(height, width))
        return max(8, round(height * scale)), max(8, round(width * scale))

    def new_state(self) -> FlowState:
        return FlowState(flow=cv2.DISOpticalFlow_create(DIS_PRESETS[self.preset]))

    def propagate(self, state: FlowState, frame: np.ndarray) -> Prediction:
        if not state.tracks:
            return Prediction.empty(*frame.shape[:2])
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        backward = state.flow.calc(gray, state.previous_gray, None)
        height, width = gray.shape
        if state.grid is None:
            state.grid = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
        grid_x, grid_y = state.grid
        map_x = grid_x + backward[..., 0]
        map_y = grid_y + backward[..., 1]
        warped = np.stack(
            [cv2.remap(p, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE) for p in state.probabilities]
        )
        if self.occlusion_damping < 1:
            forward = state.flow.calc(state.previous_gray, gray, None)
            forward_at_source = cv2.remap(forward, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            round_trip = np.square(backward + forward_at_source).sum(axis=2)
            magnitude = np.square(backward).sum(axis=2) + np.square(forward_at_source).sum(axis=2)
            unreliable = round_trip > 0.01 * magnitude + 0.5
            warped[:, unreliable] *= self.occlusion_damping
        return Prediction(list(state.tracks), warped.astype(np.float32))

    def commit(self, state: FlowState, frame: np.ndarray, update: FrameUpdate) -> None:
        state.previous_gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        state.tracks = list(update.tracks)
        probabilities = update.probabilities
        if self.sharpness > 0:
            probabilities = 1.0 / (1.0 + np.exp(-self.sharpness * (probabilities - 0.5)))
        state.probabilities = probabilities.astype(np.float32)

    def state_dict(self, state: FlowState) -> dict:
        return {"previous_gray": state.previous_gray, "tracks": state.tracks, "probabilities": state.probabilities}

    def load_state_dict(self, saved: dict) -> FlowState:
        state = self.new_state()
        state.previous_gray = np.asarray(saved["previous_gray"], np.uint8)
        state.tracks = [int(t) for t in saved["tracks"]]
        state.probabilities = np.asarray(saved["probabilities"], np.float32)
        return state
