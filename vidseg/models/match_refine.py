"""``match_refine``: the ``match`` method's label propagation, then a learned mask refiner (beyond the seeds).

Matching on frozen ImageNet features finds the object well but draws coarse, blocky boundaries: its labels live
on a stride-8 grid. :class:`MatchRefiner` keeps the frozen EfficientNet-Lite of the match features and adds a small
decoder that reads, per object, the match labels (its own and the other objects' together) with the backbone's
stride-16 / 8 / 4 / 2 features and predicts a residual on the labels' logits at stride 2. Its head starts at
zero, so the untrained refiner reproduces match. The matching settings the refiner was trained with belong to the
model (:class:`MatchRefineConfig`), so inference matches the same way; so does ``feedback``: whether a predicted
frame enters the memory with the refined masks or with match's own labels (then the refiner cannot drift the
matching: it only redraws the output).

With ``key_width > 0`` the matching keys are trained too (:class:`KeyHead`): a small residual head on the frozen
features, trained through the memory read so that a cell's best matches are on its own object and not on a
look-alike (a second copy of the object, another person of a crowd). Its last layer starts at zero, so the untrained
head matches exactly as the frozen features do.

Stage methods (no per-video state here; the memory is the caller's, as in :mod:`vidseg.models.match`):
``encode(frames) -> (keys, levels)`` (as :meth:`MatchFeatures.encode`, the keys through the key head) and
``refine(levels, rows, labels, size, previous=None) -> logits``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidseg.models.config_fields import config_from_dict
from vidseg.models.losses import soft_iou_loss
from vidseg.models.match import MatchFeatures
from vidseg.models.optimize import FrozenForward

FEEDBACK = ("refined", "match")
ONLINE_LR = 1e-4  # first-frame fine-tuning (online_steps): a tenth of the training's 1e-3 moves it without forgetting
LABEL_EPS = 1e-3  # labels are clamped to [eps, 1 - eps] before their logit: a finite residual base


@dataclass
class MatchRefineConfig:
    """The ``model:`` section of a match-refiner config."""

    method: str = "match_refine"
    backbone: str = "efficientnet_lite0"
    backbone_weights: str | None = "imagenet"
    widths: tuple[int, ...] = (64, 48, 32)  # decoder channels at strides 8, 4, 2
    top_k: int = 30  # matching, as the match method's options
    temperature: float = 0.1
    radius: int = 4
    memory: int = 16
    max_side: int = 640  # the working resolution the matching was tuned at
    feedback: str = "refined"  # what a predicted frame leaves in the memory: the refined masks or match's own labels
    key_width: int = 0  # hidden channels of the trained key head; 0: the keys are the frozen features
    long_term: int = 0  # inference: confident older frames kept as memory (vidseg.models.match_memory.MatchMemory)
    background_stride: int = 1  # inference: far background cells of the whole-frame memory kept 1 in stride^2 (same)
    previous: bool = False  # the refiner also reads the objects' masks of the previous frame

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        checks = [
            (self.method == "match_refine", f"method must be 'match_refine', got {self.method!r}"),
            (len(self.widths) == 3 and min(self.widths) > 0, f"widths must be 3 positive ints, got {self.widths}"),
            (self.feedback in FEEDBACK, f"feedback must be one of {FEEDBACK}, got {self.feedback!r}"),
            (min(self.key_width, self.long_term) >= 0, "key_width and long_term must be non-negative"),
            (self.background_stride >= 1, "background_stride must be at least 1 (1: every cell)"),
            (min(self.top_k, self.max_side, self.memory + 1, self.radius + 1) > 0 and self.temperature > 0,
             "top_k and max_side must be positive, memory and radius non-negative, temperature > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MatchRefineConfig:
        return config_from_dict(cls, values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True))


class KeyHead(nn.Module):
    """Trained matching keys: ``normalize(k + head(k))`` on the frozen unit-length keys ``k`` (B, C, h, w), the head
    a 3 x 3 convolution (its context: the cell's neighbours) to ``width`` channels and a 1 x 1 back to C, started at
    zero (the untrained head returns ``k``)."""

    def __init__(self, channels: int, width: int):
        super().__init__()
        self.context = nn.Conv2d(channels, width, 3, padding=1)
        self.out = nn.Conv2d(width, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, keys: Tensor) -> Tensor:
        return F.normalize(keys + self.out(torch.relu(self.context(keys))), dim=1)


class MatchRefiner(nn.Module):
    """Frozen match features + a trainable refining decoder (see the module docstring)."""

    def __init__(self, cfg: MatchRefineConfig):
        super().__init__()
        self.cfg = cfg
        self.features = MatchFeatures(cfg.backbone, cfg.backbone_weights, stride=8)
        c2, c4, c8, c16 = self.features.backbone.channels[:4]
        w8, w4, w2 = cfg.widths
        self.lateral16 = nn.Conv2d(c16, w8, 1)
        self.lateral8 = nn.Conv2d(c8, w8, 1)
        self.stage8 = nn.Sequential(_conv(w8 + 2, w8), _conv(w8, w8))
        self.lateral4 = nn.Conv2d(c4, w4, 1)
        self.stage4 = _conv(w8 + w4 + 1, w4)
        self.lateral2 = nn.Conv2d(c2, w2, 1)
        self.stage2 = _conv(w4 + w2 + 1, w2)
        self.head = _zero_conv(w2, 1)  # step 0: the refiner returns match's labels unchanged
        # the previous masks enter beside the laterals, from zero: a refiner trained without them is unchanged
        self.previous8 = _zero_conv(2, w8) if cfg.previous else None
        self.previous4 = _zero_conv(2, w4) if cfg.previous else None
        self.key_head = KeyHead(self.features.channels, cfg.key_width) if cfg.key_width else None
        self.frozen_forward = FrozenForward()  # training's pass of the frozen backbone: BatchNorm folded

    def encode(self, frames: Tensor) -> tuple[Tensor, list[Tensor]]:
        """(B, 3, H, W) RGB in [0, 1] -> matching keys (B, C, H/8, W/8) and the frozen backbone levels (strides
        2..32) :meth:`refine` reads. Gradients reach the key head only."""
        with torch.no_grad():
            keys, levels = self.features.encode(frames, self.frozen_forward if self.training else None)
        return (keys if self.key_head is None else self.key_head(keys)), levels

    def refine(self, levels: list[Tensor], rows: Tensor, labels: Tensor, size: tuple[int, int],
               previous: Tensor | None = None) -> Tensor:
        """Mask logits (N, 1, H, W) at ``size`` for N objects: ``labels`` (N, 2, h, w) are each object's match
        labels and the sum of the other objects' ones on the stride-8 grid, ``rows`` (N,) the frame (index into
        ``levels``' batch) each object is in; ``previous`` (N, 2, H/4, W/4), with ``cfg.previous`` only: each
        object's mask of the previous frame and the others' sum (:func:`previous_masks`)."""
        if (previous is None) == self.cfg.previous:
            raise ValueError("previous masks are given exactly when the model was built with previous: true")
        f2, f4, f8, f16 = (level[rows] for level in levels[:4])  # stride 32 is not used
        own = labels[:, :1]
        x = self.lateral8(f8) + F.interpolate(self.lateral16(f16), size=f8.shape[-2:], mode="bilinear",
                                              align_corners=False)
        lateral4 = self.lateral4(f4)
        if previous is not None:
            x = x + self.previous8(F.avg_pool2d(previous, 2))
            lateral4 = lateral4 + self.previous4(previous)
        x = self.stage8(torch.cat([torch.relu(x), labels], 1))
        x = self.stage4(torch.cat([_up(x, f4), lateral4, _up(own, f4)], 1))
        x = self.stage2(torch.cat([_up(x, f2), self.lateral2(f2), _up(own, f2)], 1))
        base = F.interpolate(own, size=size, mode="bilinear", align_corners=False).clamp(LABEL_EPS, 1 - LABEL_EPS)
        return F.interpolate(self.head(x), size=size, mode="bilinear", align_corners=False) + torch.logit(base)


def _zero_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def _up(x: Tensor, like: Tensor) -> Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


def object_labels(labels: Tensor) -> Tensor:
    """(K, h, w) match labels of one frame -> (K, 2, h, w): each object's own labels and the others' sum."""
    return torch.stack([labels, labels.sum(0, keepdim=True) - labels], 1)


def previous_masks(maps: Tensor) -> Tensor:
    """(K, H, W) final maps of one frame (H, W multiples of 4) -> (K, 2, H/4, W/4): each object's map and the
    others' sum at stride 4, the ``previous`` input of :meth:`MatchRefiner.refine` for the next frame."""
    return object_labels(F.avg_pool2d(maps[None].float(), 4)[0])


def one_hot(ids: Tensor, count: int) -> Tensor:
    """(H, W) ids -> (count, H, W) float maps of ids 1..count (background, void and other ids are zero everywhere)."""
    return (ids[None] == torch.arange(1, count + 1, device=ids.device).view(-1, 1, 1)).float()


def refiner_loss(logits: Tensor, target: Tensor, ignore: Tensor, iou_weight: float) -> tuple[Tensor, Tensor, Tensor]:
    """The refiner's training loss ``(1 - w) BCE + w (1 - soft IoU)`` of (N, H, W) ``logits`` against ``target``,
    ``ignore`` pixels left out; returns (loss, BCE, soft-IoU loss)."""
    valid = (~ignore).float()
    bce = (F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none") * valid).sum() \
        / valid.sum().clamp(min=1)
    iou = soft_iou_loss(torch.sigmoid(logits.float()), target, ignore)
    return (1 - iou_weight) * bce + iou_weight * iou, bce, iou


def build_model(config: MatchRefineConfig | dict[str, Any]) -> MatchRefiner:
    cfg = config if isinstance(config, MatchRefineConfig) else MatchRefineConfig.from_dict(dict(config))
    return MatchRefiner(cfg)


__all__ = ["KeyHead", "MatchRefineConfig", "MatchRefiner", "build_model", "object_labels", "one_hot", "previous_masks",
           "refiner_loss"]
