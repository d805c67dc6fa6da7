"""Unrolling a recurrent network over a training clip, with teacher forcing / scheduled sampling."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vidseg.models.s2s import RecurrentVOS
from vidseg.training.losses import segmentation_loss


@dataclass
class LossConfig:
    """``L = lam * balanced BCE + (1 - lam) * border CE`` (paper), optionally mixed with -log soft IoU."""

    lam: float = 0.8
    iou_weight: float = 0.0
    max_distance: float = 20.0


@dataclass
class SamplingSchedule:
    """Curriculum: teacher forcing for ``teacher_steps``, then the probability of feeding the model's own
    previous prediction (per sample and frame) rises linearly to ``max_probability`` over ``ramp_steps``."""

    teacher_steps: int = 0
    ramp_steps: int = 0
    max_probability: float = 0.0

    def probability(self, step: int) -> float:
        if step < self.teacher_steps or self.max_probability <= 0:
            return 0.0
        if self.ramp_steps <= 0:
            return float(self.max_probability)
        return float(self.max_probability * min(1.0, (step - self.teacher_steps + 1) / self.ramp_steps))


def unroll_clip(
    model: RecurrentVOS,
    batch: dict,
    loss_cfg: LossConfig | None = None,
    sampling_probability: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Run ``model`` over a batch of one-object clips (:class:`~vidseg.data.clips.ClipDataset`,
    ``objects="one"``) and return the loss averaged over the predicted frames 1..T-1 that have labels.

    Frame 0's ground truth initialises the state; for frame t the previous mask is the ground truth of
    frame t-1 (teacher forcing) or, with probability ``sampling_probability`` per sample — and always
    when frame t-1 is unlabelled — the model's own (detached) prediction. ``generator`` makes the draws
    reproducible. Returns ``(loss, parts)``; ``parts`` holds floats for logging.
    """
    loss_cfg = loss_cfg or LossConfig()
    frames, masks = batch["frames"], batch["masks"]
    void, labelled, frame_valid = batch["void"], batch["labelled"], batch["frame_valid"]
    object_valid = batch["object_valid"].reshape(frames.shape[0], -1)[:, 0]
    if masks.max() > 1:
        raise ValueError("unroll_clip trains one object per clip: build the ClipDataset with objects='one'")
    device = frames.device
    gt = (masks == 1).to(frames.dtype).unsqueeze(2)  # (B, T, 1, H, W)
    state = model.init_state(frames[:, 0], gt[:, 0])
    previous = gt[:, 0]
    total = frames.new_zeros(())
    sums: dict[str, float] = {}
    counted = 0
    for t in range(1, frames.shape[1]):
        out, state = model.step(frames[:, t], previous, state)
        has_label = labelled[:, t] & frame_valid[:, t] & object_valid
        if bool(has_label.any()):
            ignore = void[:, t] | ~has_label[:, None, None]
            loss, parts = segmentation_loss(
                out.logits.float(),
                gt[:, t].float(),
                None if out.border_logits is None else out.border_logits.float(),
                loss_cfg.lam,
                ignore,
                max_distance=loss_cfg.max_distance,
                iou_weight=loss_cfg.iou_weight,
            )
            total = total + loss
            counted += 1
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + float(value)
        prediction = torch.sigmoid(out.logits.detach()).to(frames.dtype)
        draw = torch.rand(frames.shape[0], generator=generator, device="cpu").to(device)
        use_prediction = (draw < sampling_probability) | ~has_label
        previous = torch.where(use_prediction[:, None, None, None], prediction, gt[:, t])
    if counted == 0:
        return total, {}
    return total / counted, {key: value / counted for key, value in sums.items()}


__all__ = ["LossConfig", "SamplingSchedule", "unroll_clip"]
