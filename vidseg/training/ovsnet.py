"""Training OVSNet (SPEC §2.5 / §2.5a): every labelled frame of a batch of all-object clips is one detector image;
its objects (at least ``MIN_PIXELS`` pixels) are class-agnostic targets. A clip holds several frames of one
video, so the re-ID triplets have positives: the identity of an object is (dataset, video, object id). The loss
itself is :func:`vidseg.models.ovsnet_loss.ovsnet_losses`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from vidseg.inference.ovsnet import OVSNetPropagator
from vidseg.models.ovsnet import OVSNet, build_model
from vidseg.models.ovsnet_loss import (
    MIN_PIXELS,
    PART_KEYS,
    object_target,
    ovsnet_losses,
)
from vidseg.training.adapter import TrainingAdapter


class OVSNetAdapter(TrainingAdapter):
    """OVSNet: detector + re-ID + MGA losses on all-object clips; validated semi-supervised."""

    objects = "all"
    part_keys = PART_KEYS

    def build_model(self) -> OVSNet:
        return build_model(self.config.model)

    def loss(
        self, model: nn.Module, batch: dict[str, Any], sampling_probability: float, generator: torch.Generator
    ) -> tuple[Tensor, dict[str, float]]:
        return ovsnet_loss(model, batch, generator)

    def propagator(self, model: nn.Module, max_side: int, device: torch.device) -> OVSNetPropagator:
        return OVSNetPropagator(model, device=device, max_side=max_side)


def frame_targets(batch: dict[str, Any]) -> tuple[list[Tensor], list[dict[str, Tensor]], list[Tensor]]:
    """The labelled frames of ``batch`` as detector images and targets (``boxes``, ``labels``, ``masks``,
    ``identity``), and each frame's void map."""
    keys: dict[tuple[str, str, int], int] = {}
    images, targets, voids = [], [], []
    labelled = batch["labelled"] & batch["frame_valid"]
    for b, t in labelled.nonzero().tolist():
        ids = batch["masks"][b, t]
        objects, identities = [], []
        for k in range(int(batch["object_valid"][b].sum())):
            mask = ids == k + 1
            if int(mask.sum()) >= MIN_PIXELS:
                key = (batch["dataset"][b], batch["sequence"][b], int(batch["object_ids"][b, k]))
                objects.append(mask)
                identities.append(keys.setdefault(key, len(keys)))
        targets.append(object_target(objects, identities, ids))
        images.append(batch["frames"][b, t])
        voids.append(batch["void"][b, t])
    return images, targets, voids


def ovsnet_loss(model: OVSNet, batch: dict[str, Any], generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
    """The loss of one batch of all-object clips and its parts for logging."""
    images, targets, voids = frame_targets(batch)
    if not images:
        return batch["frames"].sum() * 0.0, {}
    return ovsnet_losses(model, images, targets, voids, generator)


__all__ = ["OVSNetAdapter", "frame_targets", "ovsnet_loss"]
