"""S2S, S2S++ and HS2S: recurrent sequence-to-sequence VOS networks (SPEC §2.1-2.3).

One class, :class:`RecurrentVOS`, covers the family; its :class:`S2SConfig` says which parts exist:

* ``s2s``   — Initializer(x0, y0) -> (h0, c0); Encoder(x_t); ConvLSTM; Decoder (5 up-sampling stages).
* ``s2s++`` — S2S + encoder->decoder skips, a ConvLSTM on the first skip (skip-memory), border head.
* ``hs2s``  — zero initial state; Encoder(x_t, y_{t-1}); RefEncoder(x0, y0) (computed once per video) and
  RefEncoder(x_{t-1}, y_{t-1}); h_t merged with the references by Global Convolution (``merge="gc"``) or
  cosine matching (``merge="cosine"``, HS2S_sim) or the ``match`` method's label propagation on frozen ImageNet
  features (``merge="match"``: each reference's mask read out at frame t by top-k matching, pooled to 1/32);
  ``references`` = both / first (HS2S_0) / previous (HS2S_t-1).
* ``flow_prior`` (any member; beyond the seeds) — the Encoder also sees the previous mask warped to frame t
  by optical flow (OVSNet's template idea); S2S / S2S++ gain a 4th input channel for it, HS2S feeds it
  instead of the unwarped mask (its previous-frame reference keeps the aligned pair x_{t-1}, y_{t-1}).
  The caller warps: :func:`vidseg.inference.flow.warp_to_frame`.
* ``flow_residual`` (S2S / S2S++ with ``flow_prior``; CPU-size variant, beyond the seeds) — the decoder predicts a
  residual on the flow prior's logits, its head started at zero (the untrained network is the warped mask, as the
  ``flow`` method carries it), and each skip (S2S++) sees the prior: the network learns what flow gets wrong instead
  of learning from scratch what flow already gives. Plain S2S, without skips, corrects it from the ConvLSTM's state
  alone (the prior enters its Encoder). The ``merge: readout`` HS2S does the same on match's readout.
* ``freeze_encoder`` (any member; beyond the seeds, for training on a CPU) — the ImageNet backbone is frozen and
  runs without autograd; it sees RGB only (once per frame, shared by the objects), and a mask the paper feeds as a
  4th input channel (the Initializer's y0, HS2S's y_{t-1}, the flow prior) enters beside its 1/32 features instead,
  average- and max-pooled. The Initializer and the RefEncoder then reuse the Encoder's frozen features.
* ``merge="readout"`` (HS2S, CPU-size variant; needs ``freeze_encoder``) — the hybrid on the ``match`` method's
  memory: the caller reads match's memory (the given frames and the recent predicted ones, top-k label propagation
  on :meth:`RecurrentVOS.encode`'s keys) and passes each object's label map, the ``readout``, to :meth:`step`. It
  replaces the references: h_t is merged with the readout pooled to 1/32, each skip sees the readout, and the decoder
  predicts a residual on the readout's logits, its head started at zero (the untrained network is match).
* ``decoder_widths`` with 3 or 4 stages: the decoder stops at 1/4 or 1/2 and its logits are up-sampled bilinearly
  (the full-resolution k x k stages are most of a CPU-size step's cost).

The network holds weights only. Per-video state is a ``dict[str, Tensor]`` whose tensors all have the
objects (batch) first, so a caller can add, drop or re-initialise objects by indexing rows. Frames are
``(B, 3, H, W)`` RGB in [0, 1] (normalised inside), masks ``(B, 1, H, W)`` probabilities; H and W must be
multiples of 32, any size otherwise.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidseg.models.backbones import build_backbone
from vidseg.models.blocks import (
    ConvLSTMCell,
    CosineMatcher,
    GlobalConvBlock,
    UpsampleDecoder,
)
from vidseg.models.config_fields import config_from_dict
from vidseg.models.match import MatchFeatures, match_keys, read_labels
from vidseg.models.match_refine import LABEL_EPS
from vidseg.models.optimize import FrozenForward

FAMILY = ("s2s", "s2s++", "hs2s")  # the members this one network class covers
REFERENCES = ("both", "first", "previous")
MERGES = ("gc", "cosine", "match", "readout")
MATCH_STRIDE = 8  # merge "readout": the stride of the matching keys, as the match method's
State = dict[str, Tensor]


@dataclass
class S2SConfig:
    """Architecture of one member of the family (the ``model:`` section of a config file)."""

    method: str = "hs2s"
    backbone: str = "resnet50"
    backbone_weights: str | None = None  # None, "imagenet" (local torch cache) or a .pth path
    bottleneck: int = 1024  # 1x1 conv after the backbone's 1/32 features
    hidden: int = 1024  # ConvLSTM channels
    lstm_kernel: int = 3
    decoder_widths: tuple[int, ...] = (512, 256, 128, 64, 64)
    decoder_kernel: int = 5
    skips: bool = True
    skip_memory: bool = True
    skip_memory_kernel: int = 5
    skip_memory_channels: int | None = None  # None: the skip's own channels (1024 for ResNet-50)
    border_classes: int = 42
    references: str = "both"
    merge: str = "gc"
    gc_kernel: int = 7
    gc_inner: int = 256
    match_top_k: int = 10  # merge: match — memory cells each query cell reads, softmax temperature
    match_temperature: float = 0.05
    match_radius: int = 4  # merge: readout — the caller's memory: window (cells) into, and number of, recent frames
    match_memory: int = 16
    freeze_bn: bool = True  # backbone BatchNorm in eval mode with frozen affine (small batches)
    flow_prior: bool = False  # the Encoder sees the previous mask warped to the new frame (see the module docstring)
    flow_residual: bool = False  # with flow_prior (S2S / S2S++): a residual on the prior's logits (module docstring)
    freeze_encoder: bool = False  # frozen (ImageNet) backbone without autograd; masks enter at 1/32 (module docstring)

    def __post_init__(self) -> None:
        self.decoder_widths = tuple(int(w) for w in self.decoder_widths)
        checks = [
            (self.method in FAMILY, f"method must be one of {FAMILY}, got {self.method!r}"),
            (self.references in REFERENCES, f"references must be one of {REFERENCES}, got {self.references!r}"),
            (self.merge in MERGES, f"merge must be one of {MERGES}, got {self.merge!r}"),
            (3 <= len(self.decoder_widths) <= 5,
             f"decoder_widths needs 3 to 5 stages (1/32 -> 1/4, 1/2 or 1/1), got {self.decoder_widths}"),
            (self.border_classes >= 0 and self.border_classes != 1, "border_classes must be 0 (off) or >= 2"),
            (min(self.bottleneck, self.hidden) > 0, "bottleneck and hidden must be positive"),
            (not self.skip_memory or self.skips, "skip_memory needs skips: true"),
            (self.merge != "readout" or (self.method == "hs2s" and self.freeze_encoder and self.skips),
             "merge: readout is an HS2S variant on frozen features: set method: hs2s, freeze_encoder: true, skips: true"),
            (not self.flow_residual or (self.flow_prior and self.method != "hs2s"),
             "flow_residual is an S2S / S2S++ variant on the flow prior: set flow_prior: true and method s2s or s2s++"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> S2SConfig:
        return config_from_dict(cls, values)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["decoder_widths"] = list(self.decoder_widths)
        return out


def preset(name: str, **overrides: Any) -> S2SConfig:
    """The paper configurations: ``s2s`` (VGG-16), ``s2s++``, ``hs2s``, ``hs2s_0``, ``hs2s_t-1``, ``hs2s_sim``
    and ``hs2s_match`` (HS2S_sim's matching done by the ``match`` method's label propagation; beyond the seeds)."""
    base: dict[str, dict[str, Any]] = {
        "s2s": {"method": "s2s", "backbone": "vgg16", "bottleneck": 512, "hidden": 512, "skips": False, "skip_memory": False,
                    "border_classes": 0, "lstm_kernel": 3, "decoder_kernel": 5},
        "s2s++": {"method": "s2s++", "backbone": "resnet50"},
        "hs2s": {"method": "hs2s"},
        "hs2s_0": {"method": "hs2s", "references": "first"},
        "hs2s_t-1": {"method": "hs2s", "references": "previous"},
        "hs2s_sim": {"method": "hs2s", "merge": "cosine"},
        "hs2s_match": {"method": "hs2s", "merge": "match"},
    }
    if name not in base:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(base)}")
    return S2SConfig(**{**base[name], **overrides})


class StepOutput(NamedTuple):
    logits: Tensor  # (B, 1, H, W) mask logits
    border_logits: Tensor | None  # (B, C, H, W) border-class scores, or None


def _expand(x: Tensor, batch: int) -> Tensor:
    """``x`` with its one row repeated (as a view) for ``batch`` objects; as it is otherwise."""
    return x.expand(batch, *x.shape[1:]) if x.shape[0] == 1 and batch > 1 else x


def _beside(top: Tensor, mask: Tensor) -> Tensor:
    """The 1/32 features with ``mask`` (B, 1, H, W) average- and max-pooled to their grid beside them."""
    size = top.shape[-2:]
    return torch.cat([top, F.adaptive_avg_pool2d(mask, size), F.adaptive_max_pool2d(mask, size)], dim=1)


class _Encoder(nn.Module):
    """Backbone + 1x1 conv (+ReLU) on the 1/32 features; also returns the finer levels for skips.

    Trained (the papers): the mask, if any, is an input channel. Frozen (``freeze_encoder``): the backbone sees RGB
    without autograd and :meth:`project` puts the mask beside its 1/32 features."""

    def __init__(self, cfg: S2SConfig, mask_channels: int):
        super().__init__()
        self.frozen = cfg.freeze_encoder
        self.backbone = build_backbone(cfg.backbone, 3 + (0 if self.frozen else mask_channels), cfg.backbone_weights)
        self.proj = nn.Conv2d(self.backbone.channels[-1] + (2 * mask_channels if self.frozen else 0), cfg.bottleneck, 1)
        if self.frozen:
            self.backbone.requires_grad_(False)
            self.backbone.to(memory_format=torch.channels_last)  # about 1.3x faster on the CPU, same values
            self.frozen_forward = FrozenForward()  # training's pass: BatchNorm folded, in the autocast precision

    def levels(self, x: Tensor) -> list[Tensor]:
        """The backbone's five levels of (normalised) input ``x``."""
        if not self.frozen:
            return self.backbone(x)
        if self.training:
            return self.frozen_forward(self.backbone, x)
        with torch.no_grad():
            return self.backbone(x.contiguous(memory_format=torch.channels_last))

    def forward(
        self, x: Tensor, batch: int, mask: Tensor | None = None, levels: list[Tensor] | None = None
    ) -> tuple[Tensor, list[Tensor], Tensor]:
        """Encoder(x[, mask]) for ``batch`` objects: the bottleneck, the skip levels and the raw 1/32 features. ``x``
        (B|1, 3, H, W) is normalised, ``mask`` (B, 1, H, W); a frozen encoder may be given the frame's ``levels``.
        Without a mask, or frozen, the backbone runs once per frame and its features are shared by the objects."""
        if mask is not None and not self.frozen:
            feats = self.levels(torch.cat([_expand(x, batch), mask], dim=1))
            return torch.relu(self.proj(feats[-1])), feats[:-1], feats[-1]
        shared = levels if levels is not None else self.levels(x)
        if mask is None:  # the bottleneck too is computed once per frame
            bottleneck = _expand(torch.relu(self.proj(shared[-1])), batch)
        else:
            bottleneck = torch.relu(self.proj(_beside(_expand(shared[-1], batch), mask)))
        feats = [_expand(f, batch) for f in shared]
        return bottleneck, feats[:-1], feats[-1]


class _Merge(nn.Module):
    """HS2S merge of h_t with the reference features: one GC (or cosine matcher) per reference, 1x1 fuse."""

    def __init__(self, cfg: S2SConfig, n_refs: int):
        super().__init__()
        self.kind = cfg.merge
        if self.kind == "cosine":
            self.query = nn.Conv2d(cfg.hidden, cfg.bottleneck, 1)
            self.branches = nn.ModuleList(CosineMatcher(cfg.bottleneck, cfg.hidden) for _ in range(n_refs))
        elif self.kind == "match":
            self.branches = nn.ModuleList(nn.Conv2d(cfg.hidden + 2, cfg.hidden, 1) for _ in range(n_refs))
            self.top_k, self.temperature = cfg.match_top_k, cfg.match_temperature
        else:
            self.branches = nn.ModuleList(
                GlobalConvBlock(cfg.hidden + cfg.bottleneck, cfg.hidden, cfg.gc_kernel, cfg.gc_inner) for _ in range(n_refs)
            )
        self.fuse = nn.Conv2d(n_refs * cfg.hidden, cfg.hidden, 1)

    def read_mask(self, query: Tensor, key: Tensor, key_mask: Tensor) -> Tensor:
        """(B, 1, h, w) object probability of each ``query`` cell, read from the ``key`` cells' mask by top-k matching."""
        batch, _, height, width = query.shape
        labels = F.adaptive_avg_pool2d(key_mask, key.shape[-2:]).flatten(2).transpose(1, 2)  # (B, M, 1)
        sims = torch.einsum("bcn,bcm->bnm", query.flatten(2), key.flatten(2))
        read = read_labels(sims, labels, self.top_k, self.temperature)
        return read.transpose(1, 2).reshape(batch, 1, height, width)

    def forward(self, h: Tensor, refs: list[tuple[Tensor, Tensor]], query: Tensor | None = None) -> Tensor:
        """``refs``: (features, mask) per reference; ``merge: match`` also needs the frame's match features ``query``."""
        if self.kind == "cosine":
            q = self.query(h)
            outs = [branch(q, feat, mask) for branch, (feat, mask) in zip(self.branches, refs)]
        elif self.kind == "match":
            outs = []
            for branch, (feat, mask) in zip(self.branches, refs):
                read = self.read_mask(query, feat, mask)
                pooled = [F.adaptive_avg_pool2d(read, h.shape[-2:]), F.adaptive_max_pool2d(read, h.shape[-2:])]
                outs.append(branch(torch.cat([h, *pooled], dim=1)))
        else:
            outs = [branch(torch.cat([h, feat], dim=1)) for branch, (feat, _) in zip(self.branches, refs)]
        return torch.relu(self.fuse(torch.relu(torch.cat(outs, dim=1))))


class RecurrentVOS(nn.Module):
    """S2S / S2S++ / HS2S network (see the module docstring). Build with :func:`build_model`."""

    def __init__(self, cfg: S2SConfig):
        super().__init__()
        self.cfg = cfg
        self.hybrid = cfg.method == "hs2s"
        self.reads_memory = self.hybrid and cfg.merge == "readout"
        self.residual = self.reads_memory or cfg.flow_residual  # the decoder corrects a guide map's logits
        self.frozen = cfg.freeze_encoder
        self.encoder = _Encoder(cfg, 1 if self.hybrid or cfg.flow_prior else 0)
        backbone = self.encoder.backbone  # its input convention (ImageNet statistics, or [-1, 1])
        self.register_buffer("mean", torch.tensor(backbone.input_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(backbone.input_std).view(1, 3, 1, 1), persistent=False)
        stages = len(cfg.decoder_widths)
        skip_channels = list(reversed(self.encoder.backbone.channels[:-1]))[:stages] if cfg.skips else []
        if self.hybrid:
            self.matching = cfg.merge == "match"
            if self.reads_memory:  # the readout stands for the references
                self.readout_fuse = nn.Conv2d(cfg.hidden + 2, cfg.hidden, 1)
            elif self.matching:  # frozen ImageNet features replace the RefEncoder
                self.match_features = MatchFeatures(cfg.backbone, cfg.backbone_weights, stride=16)
            elif self.frozen:  # the RefEncoder is a projection of the Encoder's frozen features with the mask
                self.ref_proj = nn.Conv2d(self.encoder.backbone.channels[-1] + 2, cfg.bottleneck, 1)
            else:
                self.ref_encoder = _Encoder(cfg, 1)
            self.use_first = cfg.references in ("both", "first")
            self.use_previous = cfg.references in ("both", "previous")
            if not self.reads_memory:
                self.merge = _Merge(cfg, int(self.use_first) + int(self.use_previous))
        elif self.frozen:  # the Initializer reads the Encoder's frozen features of x0 with y0 beside them
            top = self.encoder.backbone.channels[-1] + 2
            self.init_h = nn.Conv2d(top, cfg.hidden, 1)
            self.init_c = nn.Conv2d(top, cfg.hidden, 1)
        else:
            # S2S Initializer: backbone on RGB + first mask, then one conv each for h0 and c0.
            self.initializer = build_backbone(cfg.backbone, 4, cfg.backbone_weights)
            top = self.initializer.channels[-1]
            self.init_h = nn.Conv2d(top, cfg.hidden, 1)
            self.init_c = nn.Conv2d(top, cfg.hidden, 1)
        if self.residual:  # each skip sees the guide (match's readout, or the flow prior)
            skip_channels = [c + 1 for c in skip_channels]
        self.lstm = ConvLSTMCell(cfg.bottleneck, cfg.hidden, cfg.lstm_kernel, state_activation="relu")
        self.decoder = UpsampleDecoder(
            cfg.hidden,
            skip_channels,
            cfg.decoder_widths,
            cfg.decoder_kernel,
            skip_memory=cfg.skip_memory,
            skip_memory_kernel=cfg.skip_memory_kernel,
            skip_memory_channels=cfg.skip_memory_channels,
            n_border_classes=cfg.border_classes,
        )
        if self.residual:  # step 0: the guide's logits unchanged
            nn.init.zeros_(self.decoder.head.weight)
            nn.init.zeros_(self.decoder.head.bias)
        if cfg.freeze_bn:
            for module in self._backbone_norms():
                for p in module.parameters():
                    p.requires_grad_(False)

    # ------------------------------------------------------------------ helpers
    def _backbone_norms(self) -> list[nn.BatchNorm2d]:
        others = ("initializer", "ref_encoder")  # the trained-encoder networks' second backbone, where it exists
        nets = [self.encoder.backbone] + [getattr(self, name) for name in others if hasattr(self, name)]
        return [m for net in nets for m in net.modules() if isinstance(m, nn.BatchNorm2d)]

    def train(self, mode: bool = True) -> RecurrentVOS:
        super().train(mode)
        if mode and self.frozen:
            self.encoder.backbone.eval()
        elif mode and self.cfg.freeze_bn:
            for module in self._backbone_norms():
                module.eval()
        return self

    def _normalize(self, frame: Tensor) -> Tensor:
        if frame.dim() != 4 or frame.shape[1] != 3:
            raise ValueError(f"frames must be (B, 3, H, W) RGB in [0, 1], got {tuple(frame.shape)}")
        h, w = frame.shape[-2:]
        if h % 32 or w % 32:
            raise ValueError(f"frame size {h}x{w} must be a multiple of 32 (resize or pad the input)")
        return (frame - self.mean.to(frame.dtype)) / self.std.to(frame.dtype)

    def _zero_skip_state(self, frame: Tensor, batch: int) -> State:
        if self.decoder.skip_lstm is None:
            return {}
        h, w = frame.shape[-2:]
        ch = self.decoder.skip_lstm.hidden_channels
        zeros = frame.new_zeros(batch, ch, h // 16, w // 16)
        return {"skip_h": zeros, "skip_c": zeros.clone()}

    # ------------------------------------------------------------------ the recurrence
    def init_state(self, frame: Tensor, mask: Tensor) -> State:
        """State after the annotated first frame ``frame`` (B|1, 3, H, W) with ``mask`` (B, 1, H, W)."""
        batch = mask.shape[0]
        x = self._normalize(frame)
        mask = mask.to(x.dtype)
        wants_top = self.frozen and not self.reads_memory
        top = _expand(self.encoder.levels(x)[-1], batch) if wants_top else None  # frozen 1/32 features of x0
        x = _expand(x, batch)
        state: State = self._zero_skip_state(x, batch)
        if self.hybrid:
            zeros = x.new_zeros(batch, self.cfg.hidden, x.shape[-2] // 32, x.shape[-1] // 32)
            state.update(h=zeros, c=zeros.clone())
            if self.reads_memory:
                return state
            if self.matching:
                features = _expand(self.match_features(frame), batch)
                state["prev_match"] = features
                if self.use_first:
                    state["ref0"], state["ref0_mask"] = features, F.adaptive_avg_pool2d(mask, features.shape[-2:])
                return state
            if self.frozen:
                state["prev_top"] = top
            else:
                state["prev_frame"] = x
            if self.use_first:
                state["ref0"] = self._reference(x, top, mask)
                state["ref0_mask"] = F.adaptive_avg_pool2d(mask, state["ref0"].shape[-2:])
        else:
            f32 = _beside(top, mask) if self.frozen else self.initializer(torch.cat([x, mask], dim=1))[-1]
            state.update(h=torch.relu(self.init_h(f32)), c=torch.relu(self.init_c(f32)))
        return state

    def _reference(self, x: Tensor, top: Tensor | None, mask: Tensor) -> Tensor:
        """RefEncoder(x, y): a trained encoder on the frame and its mask, or the frozen features ``top`` with it."""
        if self.frozen:
            return torch.relu(self.ref_proj(_beside(top, mask)))
        return self.ref_encoder(x, x.shape[0], mask)[0]

    def encode(self, frame: Tensor) -> tuple[Tensor, list[Tensor]]:
        """A frozen network's matching keys (B, C, H/8, W/8) of ``frame`` (B, 3, H, W) and the backbone levels
        (strides 2..32) they come from, which :meth:`step` takes back as ``levels``."""
        if not self.frozen:
            raise ValueError("encode needs a network with freeze_encoder: true")
        levels = self.encoder.levels(self._normalize(frame))
        return match_keys(levels, MATCH_STRIDE), levels

    def step(
        self, frame: Tensor, prev_mask: Tensor, state: State, prior: Tensor | None = None,
        readout: Tensor | None = None, levels: list[Tensor] | None = None,
    ) -> tuple[StepOutput, State]:
        """Segment ``frame`` (B|1, 3, H, W) given the previous mask (B, 1, H, W) and the state.

        S2S / S2S++ ignore ``prev_mask`` (the recurrence carries the object); HS2S feeds it to the
        Encoder and, with the previous frame kept in the state, to the RefEncoder. With ``flow_prior``,
        ``prior`` (the previous mask warped to ``frame``, (B, 1, H, W)) is what the Encoder sees. ``merge:
        readout`` needs ``readout``, each object's match labels (B, 1, H/8, W/8). A frozen network takes the
        frame's backbone ``levels`` from :meth:`encode` instead of computing them again.
        """
        if self.cfg.flow_prior and prior is None:
            raise ValueError("this network was built with flow_prior: pass prior=warp_to_frame(prev_mask, ...)")
        if self.reads_memory and readout is None:
            raise ValueError("this network reads match's memory (merge: readout): pass readout=the object's labels")
        batch = state["h"].shape[0]
        x = self._normalize(frame)
        new: State = dict(state)
        prev_mask = prev_mask.to(x.dtype)
        encoder_mask = None
        if self.hybrid or self.cfg.flow_prior:
            encoder_mask = prior.to(x.dtype) if self.cfg.flow_prior else prev_mask
        top, skips, raw_top = self.encoder(x, batch, encoder_mask, levels)
        h, (new["h"], new["c"]) = self.lstm(top, (state["h"], state["c"]))
        used_skips = list(reversed(skips))[: len(self.cfg.decoder_widths)] if self.cfg.skips else []
        guide = None
        if self.residual:
            guide = readout.to(x.dtype) if self.reads_memory else encoder_mask
            used_skips = [torch.cat([s, F.interpolate(guide, size=s.shape[-2:], mode="bilinear",
                                                      align_corners=False)], 1) for s in used_skips]
        if self.reads_memory:
            h = torch.relu(self.readout_fuse(_beside(h, guide)))
        elif self.hybrid:
            refs = [(state["ref0"], state["ref0_mask"])] if self.use_first else []
            if self.matching:
                query = _expand(self.match_features(frame), batch)
                if self.use_previous:
                    refs.append((state["prev_match"], prev_mask))
                h = self.merge(h, refs, query)
                new["prev_match"] = query
            else:
                if self.use_previous:
                    previous = state["prev_top"] if self.frozen else state["prev_frame"]
                    ref_prev = self._reference(previous, previous, prev_mask)
                    refs.append((ref_prev, F.adaptive_avg_pool2d(prev_mask, ref_prev.shape[-2:])))
                h = self.merge(h, refs)
                if self.frozen:
                    new["prev_top"] = raw_top
                else:
                    new["prev_frame"] = _expand(x, batch)
        skip_state = (state["skip_h"], state["skip_c"]) if "skip_h" in state else None
        logits, skip_state, border = self.decoder(h, used_skips, skip_state, output_size=tuple(x.shape[-2:]))
        if guide is not None:
            base = F.interpolate(guide, size=x.shape[-2:], mode="bilinear", align_corners=False)
            logits = logits + torch.logit(base.clamp(LABEL_EPS, 1 - LABEL_EPS))
        if skip_state is not None:
            new["skip_h"], new["skip_c"] = skip_state
        return StepOutput(logits, border), new


def build_model(config: S2SConfig | dict[str, Any]) -> RecurrentVOS:
    """Build a network from an :class:`S2SConfig` or the ``model:`` dict of a config file."""
    cfg = config if isinstance(config, S2SConfig) else S2SConfig.from_dict(dict(config))
    return RecurrentVOS(cfg)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "FAMILY",
    "RecurrentVOS",
    "S2SConfig",
    "State",
    "StepOutput",
    "build_model",
    "count_parameters",
    "preset",
]
