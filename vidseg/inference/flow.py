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

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from vidseg.errors import VidsegError
from vidseg.inference.session import FrameUpdate, Prediction, Propagator

if TYPE_CHECKING:
    import torch

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


def pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 x and y coordinates of every pixel."""
    return np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))


def warp_maps(
    maps: np.ndarray, backward: np.ndarray, grid: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Backward-warp (K, h, w) ``maps`` of the previous frame along ``backward`` (h, w, 2), the flow from the new
    frame to the previous one; also returns the sampling maps (x, y). ``grid``: the pixel coordinates, if built."""
    height, width = backward.shape[:2]
    grid = pixel_grid(height, width) if grid is None else grid
    map_x, map_y = grid[0] + backward[..., 0], grid[1] + backward[..., 1]
    warped = [cv2.remap(m, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE) for m in maps]
    return np.stack(warped) if warped else np.zeros((0, height, width), np.float32), (map_x, map_y)


class DISFlow:
    """Backward optical flow (new frame -> previous) of RGB frames by OpenCV DIS."""

    def __init__(self, preset: str = "ultrafast"):
        if preset not in DIS_PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r}; use one of {', '.join(DIS_PRESETS)}")
        self.engine = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])

    def __call__(self, frame: np.ndarray, previous: np.ndarray) -> np.ndarray:
        gray, previous_gray = (cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in (frame, previous))
        return self.engine.calc(gray, previous_gray, None)


class RAFTFlow:
    """Backward optical flow by torchvision's RAFT (``small`` or ``large``). Its weights are never downloaded:
    ``weights`` is a torchvision RAFT state-dict file, or None for torchvision's file in the local torch hub cache."""

    def __init__(self, weights: str | os.PathLike | None = None, small: bool = True, device: str = "cpu",
                 updates: int = 12):
        import torch  # the weight-free flow method does not need torch
        from torchvision.models import optical_flow

        builder, known = ((optical_flow.raft_small, optical_flow.Raft_Small_Weights.C_T_V2) if small
                          else (optical_flow.raft_large, optical_flow.Raft_Large_Weights.C_T_SKHT_V2))
        path = Path(weights) if weights else Path(torch.hub.get_dir()) / "checkpoints" / Path(known.url).name
        if not path.is_file():
            raise VidsegError(f"RAFT needs trained weights and {path} does not exist",
                              fix=f"pass torchvision's RAFT file ({Path(known.url).name}) with --flow-weights, or use "
                                  "--flow dis (vidseg never downloads)")
        self.device = torch.device(device)
        self.updates = updates
        self.model = builder(weights=None)
        try:
            self.model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as exc:  # noqa: BLE001 -- torch raises many types for bad files
            raise VidsegError(f"cannot load RAFT weights {path}: {exc}",
                              fix=f"use torchvision's raft_{'small' if small else 'large'} file") from None
        self.model.eval().to(self.device)

    def __call__(self, frame: np.ndarray, previous: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        height, width = frame.shape[:2]
        pad = (0, -width % 8, 0, -height % 8)  # RAFT needs sides divisible by 8

        def prepare(image: np.ndarray) -> torch.Tensor:
            x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float().to(self.device)
            return F.pad(x / 127.5 - 1.0, pad, mode="replicate")

        with torch.no_grad():
            flow = self.model(prepare(frame), prepare(previous), num_flow_updates=self.updates)[-1]
        return flow[0, :, :height, :width].permute(1, 2, 0).cpu().numpy().astype(np.float32)


def warp_with_flow(maps: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
    """Torch twin of :func:`warp_maps`: backward-warp (B, C, h, w) ``maps`` along (B|1, h, w, 2) flows from the new
    frame to the previous one (bilinear, borders replicated, as ``cv2.remap``); differentiable in ``maps``."""
    import torch
    import torch.nn.functional as F

    batch, _, height, width = maps.shape
    ys, xs = torch.meshgrid(torch.arange(height, device=maps.device), torch.arange(width, device=maps.device),
                            indexing="ij")
    backward = backward.to(maps.device, torch.float32).expand(batch, -1, -1, -1)
    grid = torch.stack([(xs + backward[..., 0]) * (2 / max(width - 1, 1)) - 1,
                        (ys + backward[..., 1]) * (2 / max(height - 1, 1)) - 1], dim=-1)
    return F.grid_sample(maps, grid.to(maps.dtype), mode="bilinear", padding_mode="border", align_corners=True)


def warp_to_frame(masks: torch.Tensor, frames: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """The flow prior: (B, 1, h, w) ``masks`` of the ``previous`` frames warped to ``frames`` ((B|1, 3, h, w) RGB in
    [0, 1]) by DIS backward flow, one flow per frame pair. Training, online learning and inference all use it."""
    import torch

    def as_images(x: torch.Tensor) -> np.ndarray:
        return (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    new, old = as_images(frames), as_images(previous)
    dis = DISFlow()
    pairs = max(len(new), len(old))
    backward = np.stack([dis(new[i % len(new)], old[i % len(old)]) for i in range(pairs)])
    return warp_with_flow(masks, torch.from_numpy(backward))


FLOW_NAMES = ("dis", "raft")


def build_flow(name: str = "dis", weights: str | os.PathLike | None = None, device: str = "cpu") -> DISFlow | RAFTFlow:
    """A backward-flow estimator by name: ``dis`` (OpenCV, no weights) or ``raft`` (torchvision RAFT-small)."""
    if name == "dis":
        return DISFlow()
    if name == "raft":
        return RAFTFlow(weights, small=True, device=device)
    raise VidsegError(f"unknown flow {name!r}", fix=f"use one of: {', '.join(FLOW_NAMES)}")


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
        if state.grid is None:
            state.grid = pixel_grid(*gray.shape)
        warped, (map_x, map_y) = warp_maps(state.probabilities, backward, state.grid)
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
        probabilities = update.probabilities.cpu().numpy()
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
