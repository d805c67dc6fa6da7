"""Training the match refiner: match runs over each clip as it does at inference, the refiner learns to draw
the masks from its labels.

Per clip, frame 0's ground truth is the memory's anchor; for t = 1..T-1 the frozen features of frame t are matched
against the memory, the refiner predicts every object's mask, and the decisions of the aggregated prediction (as
the inference session commits them; with ``feedback: match``, match's own labels) become a recent memory frame
and, with ``previous: true``, the previous masks the refiner reads at frame t + 1 (frame 0's ground truth at t = 1).
Gradients reach the refiner and, where the model has one (``key_width > 0``), the key head: its keys are read
through :func:`~vidseg.models.match_memory.read_memory_differentiable`, so the refiner's loss teaches the keys which
memory cells a cell should match (otherwise the matching is frozen and its labels are not differentiated). Loss per
(frame, object): ``(1 - w) BCE + w (1 - soft IoU)`` with ``w = train.loss.iou_weight``, void pixels left out,
averaged over the labelled frames.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidseg.config.schema import LossConfig
from vidseg.inference.match import RefinedMatchPropagator
from vidseg.models.match import memory_labels
from vidseg.models.match_memory import Memory, read_memory, read_memory_differentiable
from vidseg.models.match_refine import (
    MatchRefiner,
    build_model,
    object_labels,
    one_hot,
    previous_masks,
    refiner_loss,
)
from vidseg.training.adapter import TrainingAdapter


class MatchRefineAdapter(TrainingAdapter):
    """The match refiner: clips carry all their objects; validated semi-supervised."""

    objects = "all"
    part_keys = ("bce", "soft_iou")

    def build_model(self) -> MatchRefiner:
        return build_model(self.config.model)

    def loss(
        self, model: nn.Module, batch: dict[str, Any], sampling_probability: float, generator: torch.Generator
    ) -> tuple[Tensor, dict[str, float]]:
        return unroll_match_refine(model, batch, self.config.train.loss)

    def propagator(self, model: nn.Module, max_side: int, device: torch.device) -> RefinedMatchPropagator:
        return RefinedMatchPropagator(model, max_side=max_side, device=device)


def _decisions(logits: Tensor) -> Tensor:
    """(K, H, W) independent logits -> (K, H, W) one-hot of each pixel's winner after soft aggregation
    (background = prod(1 - p_k)), the maps the session commits."""
    p = torch.sigmoid(logits)
    winner = torch.cat([torch.prod(1 - p, 0, keepdim=True), p]).argmax(0)
    return one_hot(winner, len(p))


def unroll_match_refine(
    model: MatchRefiner, batch: dict[str, Any], loss_cfg: LossConfig | None = None
) -> tuple[Tensor, dict[str, float]]:
    """The loss of a batch of all-object clips (:class:`~vidseg.data.clips.ClipDataset`, ``objects="all"``) and
    its parts for logging (see the module docstring)."""
    weight = (loss_cfg or LossConfig()).iou_weight
    cfg = model.cfg
    frames, masks, void = batch["frames"], batch["masks"], batch["void"]
    labelled = batch["labelled"] & batch["frame_valid"]
    batch_size, length = frames.shape[:2]
    keys, levels = model.encode(frames.flatten(0, 1))
    keys = keys.unflatten(0, (batch_size, length))
    stride = model.features.stride
    read = read_memory if model.key_head is None else read_memory_differentiable  # the first is faster, no gradient
    counts = [int(n) for n in batch["object_valid"].sum(1)]
    anchors: list[Memory] = [[(keys[b, 0], memory_labels(one_hot(masks[b, 0], counts[b]), stride))]
                             for b in range(batch_size)]
    recent: list[Memory] = [[] for _ in range(batch_size)]
    previous = [previous_masks(one_hot(masks[b, 0], counts[b])) if cfg.previous else None for b in range(batch_size)]
    total, sums, counted = frames.new_zeros(()), {"bce": 0.0, "soft_iou": 0.0, "total": 0.0}, 0
    for t in range(1, length):
        clips = [b for b in range(batch_size) if counts[b] and bool(batch["frame_valid"][b, t])]
        if not clips:
            continue
        labels = [object_labels(read(keys[b, t], anchors[b], recent[b][-cfg.memory:] if cfg.memory else [],
                                     cfg.top_k, cfg.temperature, cfg.radius)) for b in clips]
        rows = torch.cat([torch.full((counts[b],), b * length + t, device=frames.device) for b in clips])
        before = torch.cat([previous[b] for b in clips]) if cfg.previous else None
        logits = model.refine(levels, rows, torch.cat(labels), tuple(frames.shape[-2:]), before)[:, 0]
        per_clip = logits.split([counts[b] for b in clips])
        for b, clip_logits, clip_labels in zip(clips, per_clip, labels):
            decided = _decisions(clip_logits.detach()) if cfg.feedback == "refined" or cfg.previous else None
            kept = decided if cfg.feedback == "refined" else F.interpolate(
                clip_labels[None, :, 0], size=frames.shape[-2:], mode="bilinear", align_corners=False)[0]
            recent[b].append((keys[b, t], memory_labels(kept, stride)))
            if cfg.previous:
                previous[b] = previous_masks(decided)
        scored = [i for i, b in enumerate(clips) if bool(labelled[b, t])]
        if not scored:
            continue
        logits = torch.cat([per_clip[i] for i in scored])
        target = torch.cat([one_hot(masks[clips[i], t], counts[clips[i]]) for i in scored])
        ignore = torch.cat([void[clips[i], t][None].expand(counts[clips[i]], -1, -1) for i in scored])
        loss, bce, iou = refiner_loss(logits, target, ignore, weight)
        total = total + loss
        sums["total"] += float(loss.detach())
        sums["bce"] += float(bce.detach())
        sums["soft_iou"] += float(iou.detach())
        counted += 1
    if counted == 0:
        return frames.sum() * 0.0, {}
    return total / counted, {key: value / counted for key, value in sums.items()}


__all__ = ["MatchRefineAdapter", "unroll_match_refine"]
