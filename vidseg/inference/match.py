"""``match``: label propagation on frozen ImageNet features (space-time correspondence; no VOS training).

Each frame's features (:class:`~vidseg.models.match.MatchFeatures`, stride 8) are compared with a memory:
every frame where the user gave masks (matched over the whole frame) and the last ``memory`` predicted frames
(matched within ``radius`` cells of each query cell, since objects move little between frames). Each query cell
takes the softmax-weighted (``temperature``) soft labels of its ``top_k`` most similar memory cells; the label
maps are up-sampled to the working size. Labels are per track and sum to at most one with background the rest,
so the maps are exclusive. Memory is bounded: the user's frames plus ``memory`` recent ones.

``match_refine`` (:class:`RefinedMatchPropagator`) reads the same memory and lets a trained refiner draw the masks.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vidseg.inference.session import FrameUpdate, Prediction, Propagator
from vidseg.models.checkpoint import model_from_checkpoint
from vidseg.models.match import MatchFeatures, memory_labels, read_memory
from vidseg.models.match_refine import MatchRefiner, object_labels
from vidseg.models.optimize import optimize_for_inference


@dataclass
class MatchState:
    tracks: list[int] = field(default_factory=list)
    anchors: list[tuple[Tensor, Tensor]] = field(default_factory=list)  # (C, h, w) features, (K, h, w) labels
    recent: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    pending: Tensor | None = None  # features of the frame last propagated, reused by commit
    pending_labels: Tensor | None = None  # match_refine with feedback "match": that frame's match labels


class MatchPropagator(Propagator):
    """Label propagation by feature matching (see the module docstring).

    Args:
        max_side: working resolution's longer side (frames are scaled up or down; sides multiples of 16).
        memory: recent predicted frames kept. top_k: memory cells each query cell reads. temperature: of the
        softmax over their cosine similarities. radius: local window (cells) into recent frames. stride: of the
        feature grid (8 or 16). backbone: ``efficientnet_lite0/1/2``. device: torch device. features: a built
        :class:`~vidseg.models.match.MatchFeatures` to use instead of ``backbone`` / ``stride``.
    """

    name = "match"

    def __init__(self, max_side: int = 640, memory: int = 16, top_k: int = 30, temperature: float = 0.1,
                 radius: int = 4, stride: int = 8, backbone: str = "efficientnet_lite0",
                 device: str | torch.device = "cpu", features: MatchFeatures | None = None):
        if min(max_side, memory + 1, top_k, radius + 1) < 1 or temperature <= 0:
            raise ValueError("max_side and top_k must be positive, memory and radius non-negative, temperature > 0")
        self.max_side, self.memory, self.top_k = int(max_side), int(memory), int(top_k)
        self.temperature, self.radius = float(temperature), int(radius)
        self.device = torch.device(device)
        # a copy with BatchNorm folded (the caller's network, e.g. one in training, keeps its own)
        self.features = optimize_for_inference((features or MatchFeatures(backbone, stride=stride)).to(self.device),
                                               channels_last=False)

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        scale = self.max_side / max(height, width)
        return max(16, round(height * scale / 16) * 16), max(16, round(width * scale / 16) * 16)

    def new_state(self) -> MatchState:
        return MatchState()

    def _encode(self, frame: np.ndarray) -> tuple[Tensor, list[Tensor]]:
        x = torch.from_numpy(np.array(frame)).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        with torch.inference_mode():
            keys, levels = self.features.encode(x)
        return keys[0], levels

    def propagate(self, state: MatchState, frame: np.ndarray) -> Prediction:
        if not state.tracks:
            return Prediction.empty(*frame.shape[:2])
        state.pending, levels = self._encode(frame)
        with torch.inference_mode():
            labels = read_memory(state.pending, state.anchors, state.recent[-self.memory:] if self.memory else [],
                                 self.top_k, self.temperature, self.radius)
            return self._predict(state, labels, levels, frame.shape[:2])

    def _predict(self, state: MatchState, labels: Tensor, levels: list[Tensor], size: tuple[int, int]) -> Prediction:
        maps = F.interpolate(labels[None], size=size, mode="bilinear", align_corners=False)[0]
        return Prediction(list(state.tracks), maps.clamp(0, 1), exclusive=True)

    def commit(self, state: MatchState, frame: np.ndarray, update: FrameUpdate) -> None:
        features = state.pending if state.pending is not None else self._encode(frame)[0]
        with torch.inference_mode():
            remap = _remap(state.tracks, update.tracks)
            state.anchors = [(f, _reorder(labels, remap)) for f, labels in state.anchors]
            state.recent = [(f, _reorder(labels, remap)) for f, labels in state.recent[-self.memory:]]
            probabilities = update.probabilities.to(self.device)
            cells = memory_labels(probabilities, self.features.stride)
            (state.anchors if update.given else state.recent).append((features, cells))
            if self.memory == 0:
                state.recent = []
        state.tracks, state.pending, state.pending_labels = list(update.tracks), None, None

    def state_dict(self, state: MatchState) -> dict:
        return {"tracks": list(state.tracks),
                "anchors": [{"features": f, "labels": labels} for f, labels in state.anchors],
                "recent": [{"features": f, "labels": labels} for f, labels in state.recent]}

    def load_state_dict(self, saved: dict) -> MatchState:
        def entries(items: list[dict]) -> list[tuple[Tensor, Tensor]]:
            return [(e["features"].to(self.device), e["labels"].to(self.device)) for e in items]

        return MatchState([int(t) for t in saved["tracks"]], entries(saved["anchors"]), entries(saved["recent"]))


class RefinedMatchPropagator(MatchPropagator):
    """``match_refine``: match's labels, then a trained :class:`~vidseg.models.match_refine.MatchRefiner` draws each
    object's mask from them and the frame (independent maps, merged by the session). The matching settings are
    the network's; ``max_side`` defaults to the one it was trained for."""

    name = "match_refine"

    def __init__(self, model: MatchRefiner, max_side: int | None = None, device: str | torch.device = "cpu"):
        cfg = model.cfg
        super().__init__(max_side or cfg.max_side, cfg.memory, cfg.top_k, cfg.temperature, cfg.radius, device=device,
                         features=model.features)
        self.model = model.to(self.device).eval()

    def _predict(self, state: MatchState, labels: Tensor, levels: list[Tensor], size: tuple[int, int]) -> Prediction:
        if self.model.cfg.feedback == "match":
            state.pending_labels = labels
        rows = torch.zeros(len(labels), dtype=torch.long, device=labels.device)
        logits = self.model.refine(levels, rows, object_labels(labels), size)
        return Prediction(list(state.tracks), torch.sigmoid(logits[:, 0]).float())

    def commit(self, state: MatchState, frame: np.ndarray, update: FrameUpdate) -> None:
        if state.pending_labels is not None and not update.given:  # feedback "match": memory as match keeps it
            remap = _remap(state.tracks, update.tracks)
            with torch.inference_mode():
                maps = F.interpolate(_reorder(state.pending_labels, remap)[None], size=update.probabilities.shape[1:],
                                     mode="bilinear", align_corners=False)[0].clamp(0, 1)
            update = dataclasses.replace(update, probabilities=maps)
        super().commit(state, frame, update)


def build_match_refine_propagator(
    content: dict[str, Any], source: str | os.PathLike, **options: Any
) -> RefinedMatchPropagator:
    """The registry's builder: the refiner of checked checkpoint ``content`` (``source`` names it in errors)."""
    device = options.pop("device", "cpu")
    return RefinedMatchPropagator(model_from_checkpoint(content, source), device=device, **options)


def _remap(tracks: list[int], new_tracks: list[int]) -> list[int | None]:
    """For each of ``new_tracks``, its index in ``tracks`` (None: a track new to the memory)."""
    return [tracks.index(t) if t in tracks else None for t in new_tracks]


def _reorder(labels: Tensor, remap: list[int | None]) -> Tensor:
    """Label channels in a new track order (None: a track the memory has no label for)."""
    zeros = labels.new_zeros((1, *labels.shape[1:]))
    return torch.cat([labels[i:i + 1] if i is not None else zeros for i in remap]) if remap else labels[:0]


__all__ = ["MatchPropagator", "MatchState", "RefinedMatchPropagator", "build_match_refine_propagator"]
