"""Training RVOS (SPEC §2.4 / §2.4a): soft-IoU loss over clips carrying all their objects.

Zero-shot models: the slots are matched to the clip's objects by the Hungarian algorithm on the soft-IoU
cost of the clip's *first* frame, and the matching is kept for the whole clip; unmatched slots get no mask
loss. One-shot models: slot k-1 follows object k (no matching); its previous mask is the ground truth of the
previous frame (teacher forcing) or, with the curriculum's probability per clip, the model's own soft,
detached output ("+" models); frame 0 always gets its own ground truth. The loss is the mean soft IoU over
the valid (clip, slot) pairs of a frame, summed over the frames (as the official code). With the objectness
head, a BCE (weight ``OBJECTNESS_WEIGHT``, target 1 for the matched slots) teaches which slots hold an object.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidseg.inference.rvos import RVOSPropagator
from vidseg.models.losses import hungarian_soft_iou, soft_iou_loss
from vidseg.models.rvos import RVOS, build_model
from vidseg.training.adapter import TrainingAdapter

ENCODER_LR_FACTOR = 1e-3  # the paper: 1e-6 for the encoder, 1e-3 for the rest
OBJECTNESS_WEIGHT = 0.5  # RSIS's stop-loss weight


class RVOSAdapter(TrainingAdapter):
    """RVOS one-shot (scored semi-supervised) or zero-shot (scored with the DAVIS unsupervised protocol)."""

    objects = "all"
    part_keys = ("soft_iou", "objectness", "matched")

    def __init__(self, config):
        super().__init__(config)
        self.protocol = "semi-supervised" if config.model.one_shot else "unsupervised"

    def build_model(self) -> RVOS:
        return build_model(self.config.model)

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        lr = self.config.train.lr
        groups = [{"params": model.encoder_parameters(), "lr": lr * ENCODER_LR_FACTOR},
                  {"params": model.decoder_parameters(), "lr": lr}]
        return [group for group in groups if group["params"]]  # a frozen encoder has none

    def loss(
        self, model: nn.Module, batch: dict[str, Any], sampling_probability: float, generator: torch.Generator
    ) -> tuple[Tensor, dict[str, float]]:
        return unroll_rvos(model, batch, sampling_probability, generator)

    def propagator(self, model: nn.Module, max_side: int, device: torch.device) -> RVOSPropagator:
        return RVOSPropagator(model, device=device, max_side=max_side, optimize=False)


def slot_targets(masks: Tensor, count: int) -> Tensor:
    """(B, T, H, W) ids -> (B, T, count, H, W) float one-hot of objects 1..count (slot k-1 = object k)."""
    ids = torch.arange(1, count + 1, device=masks.device).view(1, 1, count, 1, 1)
    return (masks.unsqueeze(2) == ids).float()


def unroll_rvos(
    model: RVOS, batch: dict[str, Any], sampling_probability: float = 0.0, generator: torch.Generator | None = None
) -> tuple[Tensor, dict[str, float]]:
    """Run ``model`` over a batch of all-object clips (:class:`~vidseg.data.clips.ClipDataset`, ``objects="all"``)
    and return the clip loss (see the module docstring) and its parts for logging."""
    frames, void = batch["frames"], batch["void"]
    labelled = batch["labelled"] & batch["frame_valid"]
    cfg = model.cfg
    batch_size, length = frames.shape[:2]
    valid = batch["object_valid"][:, : cfg.slots]  # ids above the slot count are not followed
    if cfg.one_shot:  # slots after the last object cannot change the others: leave them out
        valid = valid[:, : max(1, int(valid.sum(1).max()))]
    running = valid.shape[1] if cfg.one_shot else cfg.slots
    targets = slot_targets(batch["masks"], valid.shape[1])  # (B, T, K, H, W)
    size = tuple(frames.shape[-2:])
    use_own = torch.rand(batch_size, generator=generator, device="cpu").to(frames.device) < sampling_probability
    temporal, assignment = None, None
    previous = targets[:, 0] if cfg.one_shot else None
    total = frames.new_zeros(())
    sums = {"soft_iou": 0.0, "objectness": 0.0}
    counted = 0
    for t in range(length):
        out = model.decode(model.encode(frames[:, t]), temporal, previous, slots=running, output_size=size)
        temporal = out.temporal
        probabilities = torch.sigmoid(out.logits.float())  # (B, S, H, W)
        if assignment is None:
            assignment = _assign(probabilities, targets[:, 0], valid, void[:, 0], cfg.one_shot)
        has_label = labelled[:, t]
        pairs = valid & has_label[:, None]
        if bool(pairs.any()):
            chosen = probabilities.gather(1, assignment[:, :, None, None].expand(-1, -1, *size))  # (B, K, H, W)
            ignore = void[:, t, None].expand_as(chosen)
            losses = soft_iou_loss(chosen.flatten(0, 1), targets[:, t].flatten(0, 1), ignore.flatten(0, 1),
                                   reduction="none").view_as(pairs)
            frame_loss = losses[pairs].mean()
            total = total + frame_loss
            sums["soft_iou"] += float(frame_loss.detach())
            if out.objectness is not None:
                holds = torch.zeros_like(out.objectness).scatter_(1, assignment, valid.to(out.objectness.dtype))
                objectness = F.binary_cross_entropy_with_logits(out.objectness[has_label].float(), holds[has_label])
                total = total + OBJECTNESS_WEIGHT * objectness
                sums["objectness"] += float(objectness.detach())
            counted += 1
        if cfg.one_shot:  # the next frame's previous masks: ground truth, or the model's own ("+")
            own = probabilities.detach().to(frames.dtype)
            take_own = (use_own | ~has_label)[:, None, None, None]
            previous = torch.where(take_own, own, targets[:, t])
    if counted == 0:
        return total, {}
    parts = {"soft_iou": sums["soft_iou"] / counted, "matched": float(valid.sum()) / batch_size,
             "total": float(total.detach())}
    if cfg.objectness:
        parts["objectness"] = sums["objectness"] / counted
    return total, parts


def _assign(probabilities: Tensor, first: Tensor, valid: Tensor, void: Tensor, one_shot: bool) -> Tensor:
    """(B, K) slot of each object: slot k-1 for object k (one-shot), else the Hungarian matching on the soft-IoU
    cost of the clip's first frame; objects that are not valid get distinct leftover slots (and no loss)."""
    batch, count = valid.shape
    assignment = torch.arange(count).expand(batch, count).clone()
    if not one_shot:
        for b in range(batch):
            objects = valid[b].nonzero().flatten().tolist()
            pairs, _ = hungarian_soft_iou(probabilities[b].detach(), first[b, objects], void[b])
            taken = [slot for slot, _ in pairs]
            free = [slot for slot in range(probabilities.shape[1]) if slot not in taken]
            for (slot, k) in pairs:
                assignment[b, objects[k]] = slot
            for k in (~valid[b]).nonzero().flatten().tolist():
                assignment[b, k] = free.pop(0)
    return assignment.to(probabilities.device)


__all__ = ["RVOSAdapter", "slot_targets", "unroll_rvos"]
