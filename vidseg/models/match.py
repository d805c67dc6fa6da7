"""Frozen ImageNet features for label propagation by matching (the ``match`` method) and space-time
correspondence: an EfficientNet-Lite's stride-16 and stride-8 features brought to one grid (``stride`` 16: the
stride-8 ones average-pooled; 8: the stride-16 ones up-sampled), each L2-normalised, then the whole vector
L2-normalised (so a dot product is a cosine)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidseg.models.backbones import build_backbone
from vidseg.models.ops import first_argmax
from vidseg.models.optimize import FrozenForward


class MatchFeatures(nn.Module):
    """``forward(frames)``: (B, 3, H, W) RGB in [0, 1] -> (B, C, H/stride, W/stride) unit-length features."""

    def __init__(self, backbone: str = "efficientnet_lite0", weights: str | None = "imagenet", stride: int = 16):
        super().__init__()
        if stride not in (8, 16):
            raise ValueError(f"stride must be 8 or 16, got {stride}")
        self.stride = stride
        self.backbone = build_backbone(backbone, 3, weights).eval()
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(self.backbone.input_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.backbone.input_std).view(1, 3, 1, 1), persistent=False)
        self.channels = self.backbone.channels[2] + self.backbone.channels[3]

    def train(self, mode: bool = True) -> MatchFeatures:
        return super().train(False)  # frozen: BatchNorm keeps its ImageNet statistics

    def forward(self, frames: Tensor) -> Tensor:
        return self.encode(frames)[0]

    def encode(self, frames: Tensor, frozen_forward: FrozenForward | None = None) -> tuple[Tensor, list[Tensor]]:
        """The matching features and the backbone's levels (strides 2..32) they were made from; with
        ``frozen_forward`` (a trainer's), the backbone runs through it."""
        x = (frames - self.mean) / self.std
        feats = self.backbone(x) if frozen_forward is None else frozen_forward(self.backbone, x)
        return match_keys(feats, self.stride), feats


def match_keys(levels: list[Tensor], stride: int = 8) -> Tensor:
    """Unit-length matching features at ``stride`` (8 or 16) from a backbone's levels (strides 2..32): its stride-8
    and stride-16 features, each normalised, side by side."""
    coarse, fine = levels[3], levels[2]
    if stride == 16:
        fine = F.adaptive_avg_pool2d(fine, coarse.shape[-2:])
    else:
        coarse = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
    joined = torch.cat([F.normalize(coarse, dim=1), F.normalize(fine, dim=1)], dim=1)
    return F.normalize(joined, dim=1)


def read_labels(
    sims: Tensor, labels: Tensor, top_k: int, temperature: float, local_labels: Tensor | None = None
) -> Tensor:
    """Label propagation: each query takes the softmax-weighted (``temperature``) labels of its ``top_k`` most similar
    memory cells. ``sims`` (B, N, M + L): query-to-memory cosines, the first M columns for cells every query sees,
    with ``labels`` (B, M, K); the last L (optional) for cells of each query's own window, with ``local_labels``
    (B, N, L, K). Returns (B, N, K). The ``match`` method and HS2S's ``merge: match`` share it."""
    top = sims.topk(min(top_k, sims.shape[-1]), dim=-1)
    weights = torch.softmax(top.values / temperature, dim=-1)
    batch, queries, k = top.indices.shape
    shared = labels.shape[1]
    index = top.indices.clamp(max=max(shared - 1, 0))
    picked = labels.gather(1, index.reshape(batch, -1, 1).expand(-1, -1, labels.shape[-1]))
    picked = picked.reshape(batch, queries, k, -1)
    if local_labels is not None:
        local = (top.indices - shared).clamp(min=0)
        from_window = local_labels.gather(2, local[..., None].expand(-1, -1, -1, local_labels.shape[-1]))
        picked = torch.where((top.indices < shared)[..., None], picked, from_window)
    return (weights[..., None] * picked).sum(-2)


def memory_labels(probabilities: Tensor, stride: int) -> Tensor:
    """(K, H, W) final maps -> (K, H/stride, W/stride) labels to store in memory: each pixel's decision
    (the object of highest probability, or background), not the soft maps (fed back, they shrink objects),
    average-pooled to the feature grid."""
    if not len(probabilities):
        return probabilities.new_zeros((0, probabilities.shape[-2] // stride, probabilities.shape[-1] // stride))
    background = 1 - probabilities.sum(0, keepdim=True)
    winner = first_argmax(torch.cat([background, probabilities]))
    decisions = torch.stack([(winner == k + 1).to(probabilities.dtype) for k in range(len(probabilities))])
    return F.avg_pool2d(decisions[None], stride)[0]


__all__ = ["MatchFeatures", "match_keys", "memory_labels", "read_labels"]
