"""``match``: label propagation on frozen ImageNet features (space-time correspondence; no VOS training).

Each frame's features (:class:`~vidseg.models.match.MatchFeatures`, stride 8) are compared with a memory:
every frame where the user gave masks (matched over the whole frame) and the last ``memory`` predicted frames
(matched within ``radius`` cells of each query cell, since objects move little between frames). Each query cell
takes the softmax-weighted (``temperature``) soft labels of its ``top_k`` most similar memory cells; the label
maps are up-sampled to the working size. Labels are per track and sum to at most one with background the rest,
so the maps are exclusive. Memory is bounded: the user's frames plus ``memory`` recent ones, plus (opt-in,
``long_term``) that many confident older frames, matched over the whole frame (:class:`MatchMemory`).

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

from vidseg.constants import DTYPE_NAMES
from vidseg.inference.network import NetworkPropagator, NetworkState, reorder_rows
from vidseg.inference.session import FrameUpdate, Prediction
from vidseg.models.checkpoint import model_from_checkpoint
from vidseg.models.match import MatchFeatures, memory_labels
from vidseg.models.match_memory import MatchMemory
from vidseg.models.match_refine import LABEL_EPS, ONLINE_LR, MatchRefiner, object_labels, previous_masks

LONG_TERM_EVERY = 10  # frames leaving the recent memory between two long-term ones
SURE = 0.8  # the least mean winning probability over an object's pixels of a frame kept as long-term memory


def confident(probabilities: Tensor) -> bool:
    """Whether a frame's (K, H, W) final maps are sure enough to keep as a long-term memory frame: some object is
    there (pixels it claims with probability above 0.5), and over those pixels the winning probability averages at
    least :data:`SURE` (a mask spread onto a look-alike, shared between two ids, averages lower)."""
    if not len(probabilities):
        return False
    best = probabilities.amax(0)
    claimed = best[best > 0.5]
    return bool(claimed.numel()) and float(claimed.float().mean()) >= SURE


@dataclass
class MatchState(NetworkState):
    """``model`` (from :class:`NetworkState`): ``match_refine``'s copy of the network fine-tuned for this video
    (``online_steps``), if any."""

    tracks: list[int] = field(default_factory=list)
    memory: MatchMemory | None = None
    pending: Tensor | None = None  # features of the frame last propagated, reused by commit
    pending_labels: Tensor | None = None  # match_refine with feedback "match": that frame's match labels
    previous: Tensor | None = None  # match_refine with previous masks: the last frame's (K, 2, h/4, w/4) of tracks


class MatchPropagator(NetworkPropagator):
    """Label propagation by feature matching (see the module docstring). Its ``model`` is the frozen feature network.

    Args:
        max_side: working resolution's longer side (frames are scaled up or down; sides multiples of 16).
        memory: recent predicted frames kept. long_term: older predicted frames kept (0: none), one every
        ``long_term_every`` frames that leave the recent ones, if its masks were confident (:func:`confident`).
        background_stride: of the frames matched over the whole frame, far background cells kept 1 in stride^2
        (1: all; :class:`~vidseg.models.match_memory.MatchMemory`).
        top_k: memory cells each query cell reads. temperature: of the
        softmax over their cosine similarities. radius: local window (cells) into recent frames. stride: of the
        feature grid (8 or 16). backbone: ``efficientnet_lite0/1/2``. device: torch device. features: a built
        :class:`~vidseg.models.match.MatchFeatures` to use instead of ``backbone`` / ``stride`` (a copy is run; the
        caller's, e.g. one in training, is left as it is). dtype: the precision of the features and of the matching
        products (``float32``; ``bfloat16``: about 2x faster where the device runs it natively; docs/experiments.md
        has what it changes).
    """

    name = "match"
    dtypes = DTYPE_NAMES
    size_multiple = min_side = 16

    def __init__(self, max_side: int = 640, memory: int = 16, top_k: int = 30, temperature: float = 0.1,
                 radius: int = 4, stride: int = 8, backbone: str = "efficientnet_lite0",
                 device: str | torch.device = "cpu", features: MatchFeatures | None = None, dtype: str = "float32",
                 long_term: int = 0, long_term_every: int = LONG_TERM_EVERY, background_stride: int = 1):
        features = features or MatchFeatures(backbone, stride=stride)
        super().__init__(features, device, max_side, dtype)
        self._set_matching(memory, top_k, temperature, radius)
        self._set_whole_frame_memory(long_term, long_term_every, background_stride)
        self.model = self.features = self.prepare(features)
        self.stride = features.stride

    def _set_matching(self, memory: int, top_k: int, temperature: float, radius: int) -> None:
        if min(self.max_side, memory + 1, top_k, radius + 1) < 1 or temperature <= 0:
            raise ValueError("max_side and top_k must be positive, memory and radius non-negative, temperature > 0")
        self.memory, self.top_k, self.radius = int(memory), int(top_k), int(radius)
        self.temperature = float(temperature)

    def _set_whole_frame_memory(self, long_term: int, every: int, background_stride: int = 1) -> None:
        if long_term < 0 or every < 1 or background_stride < 1:
            raise ValueError("long_term must be non-negative, long_term_every and background_stride positive")
        self.long_term, self.long_term_every = int(long_term), int(every)
        self.background_stride = int(background_stride)

    def new_state(self) -> MatchState:
        return MatchState(memory=MatchMemory(self.memory, self.radius, self.long_term, self.long_term_every,
                                             self.background_stride))

    def _encode(self, frame: np.ndarray) -> tuple[Tensor, list[Tensor]]:
        with torch.inference_mode():  # the model's keys: match_refine's pass through its trained key head, if any
            keys, levels = self.model.encode(self.frame_tensor(frame))
        return keys[0].contiguous(), levels

    def propagate(self, state: MatchState, frame: np.ndarray) -> Prediction:
        if not state.tracks:
            return Prediction.empty(*frame.shape[:2])
        state.pending, levels = self._encode(frame)
        with torch.inference_mode():
            labels = state.memory.read(state.pending, self.top_k, self.temperature)
            return self._predict(state, labels, levels, frame.shape[:2])

    def _predict(self, state: MatchState, labels: Tensor, levels: list[Tensor], size: tuple[int, int]) -> Prediction:
        maps = F.interpolate(labels[None], size=size, mode="bilinear", align_corners=False)[0]
        return Prediction(list(state.tracks), maps.clamp(0, 1), exclusive=True)

    def commit(self, state: MatchState, frame: np.ndarray, update: FrameUpdate) -> None:
        features = state.pending if state.pending is not None else self._encode(frame)[0]
        with torch.inference_mode():
            if update.tracks != state.tracks:
                state.memory.relabel([reorder_rows(labels, state.tracks, update.tracks)
                                      for labels in state.memory.entry_labels()])
            cells = memory_labels(update.probabilities.to(self.device), self.stride)
            state.memory.add(features, cells, anchor=bool(update.given),
                             confident=bool(self.long_term) and confident(update.probabilities))
        state.tracks, state.pending, state.pending_labels = list(update.tracks), None, None

    def state_dict(self, state: MatchState) -> dict:
        memory = state.memory
        return {"tracks": list(state.tracks), "written": memory.written,
                "anchors": [{"features": f, "labels": labels} for f, labels in memory.anchors],
                "recent": [{"features": f, "labels": labels} for f, labels in memory.recent],
                "long_term": [{"features": f, "labels": labels} for f, labels in memory.long_term],
                "confident": list(memory.confident), "since_long_term": memory.since_long_term}

    def load_state_dict(self, saved: dict) -> MatchState:
        def entries(items: list[dict]) -> list[tuple[Tensor, Tensor]]:
            return [(e["features"].to(self.device, self.dtype), e["labels"].to(self.device)) for e in items]

        recent = entries(saved["recent"])
        memory = MatchMemory.rebuilt(self.memory, self.radius, entries(saved["anchors"]), recent,
                                     int(saved.get("written", len(recent))), entries(saved.get("long_term", [])),
                                     self.long_term, self.long_term_every, int(saved.get("since_long_term", 0)),
                                     saved.get("confident"), self.background_stride)
        return MatchState([int(t) for t in saved["tracks"]], memory)


class RefinedMatchPropagator(MatchPropagator):
    """``match_refine``: match's labels, then a trained :class:`~vidseg.models.match_refine.MatchRefiner` draws each
    object's mask from them and the frame (independent maps, merged by the session). The matching settings are
    the network's; ``max_side``, ``long_term`` and ``background_stride`` default to its own.

    The refiner runs, per object, on the part of the frame where match's labels can change the mask: the cells with
    a label above :data:`REFINE_LABEL` and :data:`REFINE_MARGIN` cells around them (the refiner's reach). Elsewhere
    the mask is match's labels as the refiner's residual base has them (probability <= ``REFINE_LABEL``)."""

    name = "match_refine"

    def __init__(self, model: MatchRefiner, max_side: int | None = None, device: str | torch.device = "cpu",
                 dtype: str = "float32", inplace: bool = False, online_steps: int = 0, online_lr: float = ONLINE_LR,
                 long_term: int | None = None, long_term_every: int = LONG_TERM_EVERY,
                 background_stride: int | None = None):
        cfg = model.cfg
        NetworkPropagator.__init__(self, model, device, max_side or cfg.max_side, dtype, online_steps=online_steps)
        self._set_matching(cfg.memory, cfg.top_k, cfg.temperature, cfg.radius)
        self._set_whole_frame_memory(cfg.long_term if long_term is None else long_term, long_term_every,
                                     cfg.background_stride if background_stride is None else background_stride)
        self.model = self.prepare(model, inplace)
        self.features = self.model.features
        self.stride = self.features.stride
        self.online_lr = float(online_lr)

    def _predict(self, state: MatchState, labels: Tensor, levels: list[Tensor], size: tuple[int, int]) -> Prediction:
        if self.model.cfg.feedback == "match":
            state.pending_labels = labels
        refiner = self.network(state)
        return Prediction(list(state.tracks),
                          torch.sigmoid(refine_in_regions(refiner, levels, labels, size, state.previous)))

    def commit(self, state: MatchState, frame: np.ndarray, update: FrameUpdate) -> None:
        if update.given and self.online_steps and state.model is None:  # the first given masks: adapt to this video
            state.model = self._adapted(frame, update)
        if self.model.cfg.previous:  # the session's final maps, user masks applied, in the order of update.tracks
            with torch.inference_mode():
                state.previous = previous_masks(update.probabilities.to(self.device))
        if state.pending_labels is not None and not update.given:  # feedback "match": memory as match keeps it
            with torch.inference_mode():
                labels = reorder_rows(state.pending_labels, state.tracks, update.tracks)
                maps = F.interpolate(labels[None].float(),
                                     size=update.probabilities.shape[1:], mode="bilinear", align_corners=False)[0]
            update = dataclasses.replace(update, probabilities=maps.clamp(0, 1))
        super().commit(state, frame, update)

    def _adapted(self, frame: np.ndarray, update: FrameUpdate) -> MatchRefiner:
        """This video's copy of the network, its refiner fine-tuned on ``frame`` and the given masks
        (:mod:`vidseg.inference.match_online`)."""
        from vidseg.inference.match_online import finetune_refiner  # imports torchvision's transforms: only when used

        maps = update.probabilities
        labels = torch.where(maps.amax(0) > 0.5, maps.argmax(0) + 1, 0).to(torch.uint8).cpu().numpy()
        with torch.inference_mode(False):
            tuned = finetune_refiner(self.model, frame, labels, self.online_steps, self.online_lr)
        return tuned.to(self.dtype)

    def state_dict(self, state: MatchState) -> dict:
        return {**super().state_dict(state), **self.video_weights(state), "previous": state.previous}

    def load_state_dict(self, saved: dict) -> MatchState:
        state = super().load_state_dict(saved)
        self.resume_video_weights(state, saved, started=bool(saved["anchors"]))
        previous = saved.get("previous") if self.model.cfg.previous else None  # a refiner without them ignores them
        state.previous = None if previous is None else previous.to(self.device)
        if self.model.cfg.previous and state.tracks and state.previous is None:
            raise ValueError("the saved state has no previous masks, which this refiner reads: it was saved by "
                             "another model")
        return state


REFINE_LABEL = 0.01  # match labels at or below this are background the refiner is not asked about
REFINE_MARGIN = 4  # cells (of 8 pixels) around the labelled region: the refiner's receptive field is about 3
REFINE_PREVIOUS = 0.5  # with previous masks: cells where the object was (above this) are in its region too


def refine_in_regions(model: MatchRefiner, levels: list[Tensor], labels: Tensor, size: tuple[int, int],
                      previous: Tensor | None = None) -> Tensor:
    """(K, H, W) float32 mask logits of one frame's K objects: the refiner's on each object's region (see
    :class:`RefinedMatchPropagator`; with ``previous`` masks, (K, 2, H/4, W/4), the region also covers where the
    object was), the residual base (the logit of match's labels) elsewhere."""
    dtype = next(model.parameters()).dtype
    pairs = object_labels(labels).to(dtype)  # (K, 2, h, w)
    stride = size[0] // labels.shape[-2]
    base = F.interpolate(labels[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    logits = torch.logit(base.clamp(LABEL_EPS, 1 - LABEL_EPS))
    rows = torch.zeros(1, dtype=torch.long, device=labels.device)
    if previous is not None:
        was_there = F.max_pool2d(previous[None, :, 0], stride // 4)[0] > REFINE_PREVIOUS  # stored in float32
        previous = previous.to(dtype)
    for k in range(len(labels)):
        inside = labels[k] > REFINE_LABEL
        box = _region(inside if previous is None else inside | was_there[k], REFINE_MARGIN)
        if box is None:
            continue
        top, bottom, left, right = box
        cropped = [level[..., top * stride // s:bottom * stride // s, left * stride // s:right * stride // s]
                   for level, s in zip(levels[:4], (2, 4, 8, 16))]
        crop_size = ((bottom - top) * stride, (right - left) * stride)
        before = None if previous is None else \
            previous[k:k + 1, :, top * stride // 4:bottom * stride // 4, left * stride // 4:right * stride // 4]
        refined = model.refine(cropped, rows, pairs[k:k + 1, :, top:bottom, left:right], crop_size, before)
        logits[k, top * stride:bottom * stride, left * stride:right * stride] = refined[0, 0].float()
    return logits


def _region(inside: Tensor, margin: int) -> tuple[int, int, int, int] | None:
    """The cells' bounding box (top, bottom, left, right; ends exclusive) grown by ``margin``, then to sides that are
    multiples of :data:`REFINE_STEP` cells (or the whole grid), or None when no cell is inside. Few distinct sizes
    keep oneDNN's cache of convolution kernels (one per input shape) small and warm: with boxes of any size it grew
    by about 80 MB over 1,000 frames and compiled kernels as it went."""
    rows, cols = inside.any(1).nonzero(), inside.any(0).nonzero()
    if not len(rows):
        return None
    height, width = inside.shape
    top, bottom = _span(int(rows[0]) - margin, int(rows[-1]) + 1 + margin, height)
    left, right = _span(int(cols[0]) - margin, int(cols[-1]) + 1 + margin, width)
    return top, bottom, left, right


REFINE_STEP = 8  # cells: region sides are multiples of it (even: whole cells of the stride-16 level too)


def _span(start: int, stop: int, cells: int) -> tuple[int, int]:
    """[start, stop) clipped to [0, cells) and grown to a multiple of REFINE_STEP cells (at most ``cells``, an even
    number: working sizes are multiples of 16 pixels)."""
    start, stop = max(0, start) // 2 * 2, min(cells, -(-stop // 2) * 2)
    size = min(cells, -(-(stop - start) // REFINE_STEP) * REFINE_STEP)
    start = min(start, cells - size)
    return start, start + size


def build_match_refine_propagator(
    content: dict[str, Any], source: str | os.PathLike, **options: Any
) -> RefinedMatchPropagator:
    """The registry's builder: the refiner of checked checkpoint ``content`` (``source`` names it in errors)."""
    return RefinedMatchPropagator(model_from_checkpoint(content, source), inplace=True, **options)


__all__ = ["MatchPropagator", "MatchState", "RefinedMatchPropagator", "build_match_refine_propagator", "confident"]
