"""``match``: label propagation on frozen ImageNet features (space-time correspondence; no VOS training).

Each frame's features (:class:`~vidseg.models.match.MatchFeatures`, stride 16) are compared with a memory:
every frame where the user gave masks (matched over the whole frame) and the last ``memory`` predicted frames
(matched within ``radius`` cells of each query cell, since objects move little between frames). Each query cell
takes the softmax-weighted (``temperature``) soft labels of its ``top_k`` most similar memory cells; the label
maps are up-sampled to the working size. Labels are per track and sum to at most one with background the rest,
so the maps are exclusive. Memory is bounded: the user's frames plus ``memory`` recent ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vidseg.inference.session import FrameUpdate, Prediction, Propagator
from vidseg.models.match import MatchFeatures, read_labels


@dataclass
class MatchState:
    tracks: list[int] = field(default_factory=list)
    anchors: list[tuple[Tensor, Tensor]] = field(default_factory=list)  # (C, h, w) features, (K, h, w) labels
    recent: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    pending: Tensor | None = None  # features of the frame last propagated, reused by commit


class MatchPropagator(Propagator):
    """Label propagation by feature matching (see the module docstring).

    Args:
        max_side: working resolution's longer side (frames are scaled up or down; sides multiples of 16).
        memory: recent predicted frames kept. top_k: memory cells each query cell reads. temperature: of the
        softmax over their cosine similarities. radius: local window (cells) into recent frames. stride: of the
        feature grid (8 or 16). backbone: ``efficientnet_lite0/1/2``. device: torch device.
    """

    name = "match"

    def __init__(self, max_side: int = 640, memory: int = 16, top_k: int = 30, temperature: float = 0.1,
                 radius: int = 4, stride: int = 8, backbone: str = "efficientnet_lite0", device: str = "cpu"):
        if min(max_side, memory + 1, top_k, radius + 1) < 1 or temperature <= 0:
            raise ValueError("max_side and top_k must be positive, memory and radius non-negative, temperature > 0")
        self.max_side, self.memory, self.top_k = int(max_side), int(memory), int(top_k)
        self.temperature, self.radius = float(temperature), int(radius)
        self.device = torch.device(device)
        self.features = MatchFeatures(backbone, stride=stride).to(self.device)

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        scale = self.max_side / max(height, width)
        return max(16, round(height * scale / 16) * 16), max(16, round(width * scale / 16) * 16)

    def new_state(self) -> MatchState:
        return MatchState()

    def _embed(self, frame: np.ndarray) -> Tensor:
        x = torch.from_numpy(np.array(frame)).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        with torch.inference_mode():
            return self.features(x)[0]

    def propagate(self, state: MatchState, frame: np.ndarray) -> Prediction:
        if not state.tracks:
            return Prediction.empty(*frame.shape[:2])
        state.pending = self._embed(frame)
        with torch.inference_mode():
            labels = self._read_memory(state.pending, state)
            maps = F.interpolate(labels[None], size=frame.shape[:2], mode="bilinear", align_corners=False)[0]
        return Prediction(list(state.tracks), maps.clamp(0, 1).cpu().numpy(), exclusive=True)

    def _read_memory(self, query: Tensor, state: MatchState) -> Tensor:
        """(K, h, w) labels of the query frame's cells from the top-k matches in memory."""
        _, height, width = query.shape
        q = query.flatten(1).T  # (N, C)
        sims = [q @ features.flatten(1) for features, _ in state.anchors]  # global: every cell of the user's frames
        shared = torch.cat([labels.flatten(1).T for _, labels in state.anchors])  # (M, K), read by index, not copied
        local = [self._window(query, features, labels) for features, labels in
                 (state.recent[-self.memory:] if self.memory else [])]  # recent frames: a window around each cell
        sims += [window_sims for window_sims, _ in local]
        local_labels = torch.cat([labels for _, labels in local], dim=1)[None] if local else None
        read = read_labels(torch.cat(sims, dim=1)[None], shared[None], self.top_k, self.temperature, local_labels)
        return read[0].T.reshape(-1, height, width)

    def _window(self, query: Tensor, features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Similarities (N, W) and labels (N, W, K) of the W = (2r+1)^2 cells around each query cell."""
        r = self.radius
        _, height, width = query.shape
        padded = F.pad(features, (r, r, r, r))
        padded_labels = F.pad(labels, (r, r, r, r))
        inside = F.pad(torch.ones(height, width, device=query.device), (r, r, r, r)) > 0
        sims, shifted = [], []
        for dy in range(2 * r + 1):
            for dx in range(2 * r + 1):
                rows, cols = slice(dy, dy + height), slice(dx, dx + width)
                sims.append((query * padded[:, rows, cols]).sum(0).masked_fill(~inside[rows, cols], -1e4))
                shifted.append(padded_labels[:, rows, cols])
        return torch.stack(sims).flatten(1).T, torch.stack(shifted).flatten(2).permute(2, 0, 1)

    def commit(self, state: MatchState, frame: np.ndarray, update: FrameUpdate) -> None:
        features = state.pending if state.pending is not None else self._embed(frame)
        with torch.inference_mode():
            remap = [state.tracks.index(t) if t in state.tracks else None for t in update.tracks]
            state.anchors = [(f, _reorder(labels, remap)) for f, labels in state.anchors]
            state.recent = [(f, _reorder(labels, remap)) for f, labels in state.recent[-self.memory:]]
            probabilities = torch.from_numpy(update.probabilities).to(self.device)
            if len(probabilities):  # store decisions, not soft maps: soft labels fed back shrink objects
                background = 1 - probabilities.sum(0, keepdim=True)
                winner = torch.cat([background, probabilities]).argmax(0)
                probabilities = torch.stack([(winner == k + 1).float() for k in range(len(probabilities))])
            cells = F.avg_pool2d(probabilities[None], self.features.stride)[0] if len(probabilities) else \
                probabilities.new_zeros((0, *features.shape[1:]))
            (state.anchors if update.given else state.recent).append((features, cells))
            if self.memory == 0:
                state.recent = []
        state.tracks, state.pending = list(update.tracks), None

    def state_dict(self, state: MatchState) -> dict:
        return {"tracks": list(state.tracks),
                "anchors": [{"features": f, "labels": labels} for f, labels in state.anchors],
                "recent": [{"features": f, "labels": labels} for f, labels in state.recent]}

    def load_state_dict(self, saved: dict) -> MatchState:
        def entries(items: list[dict]) -> list[tuple[Tensor, Tensor]]:
            return [(e["features"].to(self.device), e["labels"].to(self.device)) for e in items]

        return MatchState([int(t) for t in saved["tracks"]], entries(saved["anchors"]), entries(saved["recent"]))


def _reorder(labels: Tensor, remap: list[int | None]) -> Tensor:
    """Label channels in a new track order (None: a track the memory has no label for)."""
    zeros = labels.new_zeros((1, *labels.shape[1:]))
    return torch.cat([labels[i:i + 1] if i is not None else zeros for i in remap]) if remap else labels[:0]


__all__ = ["MatchPropagator", "MatchState"]
