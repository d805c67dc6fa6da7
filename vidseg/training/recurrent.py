"""Training the S2S family: the adapter, and unrolling a network over a clip with teacher forcing /
scheduled sampling."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from vidseg.config.schema import LossConfig
from vidseg.inference.flow import warp_to_frame
from vidseg.inference.hybrid import HybridMatchPropagator
from vidseg.inference.network import NetworkPropagator
from vidseg.inference.recurrent import RecurrentPropagator
from vidseg.models.losses import segmentation_loss
from vidseg.models.match import memory_labels
from vidseg.models.match_memory import Memory, read_memory
from vidseg.models.s2s import MATCH_STRIDE, RecurrentVOS, build_model
from vidseg.training.adapter import TrainingAdapter


class RecurrentAdapter(TrainingAdapter):
    """S2S / S2S++ / HS2S: one random object per clip, the balanced BCE + border (+ -log IoU) loss of
    :func:`unroll_clip`, validation from first-frame masks."""

    objects = "one"
    protocol = "semi-supervised"
    part_keys = ("bce", "border", "log_iou")

    def build_model(self) -> RecurrentVOS:
        return build_model(self.config.model)

    def loss(
        self, model: nn.Module, batch: dict[str, Any], sampling_probability: float, generator: torch.Generator
    ) -> tuple[Tensor, dict[str, float]]:
        return unroll_clip(model, batch, self.config.train.loss, sampling_probability, generator)

    def propagator(self, model: nn.Module, max_side: int, device: torch.device) -> NetworkPropagator:
        if model.reads_memory:
            return HybridMatchPropagator(model, device=device, max_side=max_side, optimize=False)
        return RecurrentPropagator(model, device=device, max_side=max_side, optimize=False)


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
    when frame t-1 is unlabelled — the model's own (detached) prediction; a ``flow_prior`` network also gets
    that mask warped to frame t. ``generator`` makes the draws reproducible. Returns ``(loss, parts)``; ``parts`` holds floats for logging.
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
    memory = _ClipMemory(model, frames, previous) if model.reads_memory else None
    total = frames.new_zeros(())
    sums: dict[str, float] = {}
    counted = 0
    for t in range(1, frames.shape[1]):
        prior = warp_to_frame(previous, frames[:, t], frames[:, t - 1]) if model.cfg.flow_prior else None
        readout, levels = memory.read(t) if memory is not None else (None, None)
        out, state = model.step(frames[:, t], previous, state, prior, readout, levels)
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
        if memory is not None:
            memory.add(t, previous)
    if counted == 0:
        return total, {}
    return total / counted, {key: value / counted for key, value in sums.items()}


class _ClipMemory:
    """``merge: readout``: match's memory over a batch of clips, as the inference session keeps it — frame 0 with its
    ground truth as the anchor, then each frame with the mask the network is given next (the recent frames) — and
    the frozen features of every frame, computed once."""

    def __init__(self, model: RecurrentVOS, frames: Tensor, first: Tensor):
        batch, length = frames.shape[:2]
        keys, levels = model.encode(frames.flatten(0, 1))
        self.keys = keys.unflatten(0, (batch, length))
        self.levels = [level.unflatten(0, (batch, length)) for level in levels]
        cfg = model.cfg
        self.top_k, self.temperature, self.radius, self.size = (cfg.match_top_k, cfg.match_temperature,
                                                                cfg.match_radius, cfg.match_memory)
        self.anchors: list[Memory] = [[(self.keys[b, 0], memory_labels(first[b], MATCH_STRIDE))] for b in range(batch)]
        self.recent: list[Memory] = [[] for _ in range(batch)]

    def read(self, t: int) -> tuple[Tensor, list[Tensor]]:
        """Each clip's readout (B, 1, h, w) of frame ``t`` and the frame's backbone levels."""
        labels = [read_memory(self.keys[b, t], self.anchors[b], self.recent[b][-self.size:] if self.size else [],
                              self.top_k, self.temperature, self.radius) for b in range(len(self.anchors))]
        return torch.stack(labels), [level[:, t] for level in self.levels]

    def add(self, t: int, masks: Tensor) -> None:
        for b, mask in enumerate(masks):
            self.recent[b].append((self.keys[b, t], memory_labels(mask, MATCH_STRIDE)))


__all__ = ["RecurrentAdapter", "unroll_clip"]
