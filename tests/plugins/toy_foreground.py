"""A toy trainable method that is nothing like the S2S family: a two-layer per-frame foreground network
trained on clips carrying *all* objects, with two parameter groups, its own loss parts, and validation by
the unsupervised protocol through a discovering propagator (connected components of its foreground, from
:mod:`bright_spots`). It shows that the training engine is method-agnostic."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from bright_spots import BrightSpots
from torch import Tensor, nn

from vidseg.constants import VOID_ID
from vidseg.inference.session import Propagator
from vidseg.registry import MethodSpec
from vidseg.training.adapter import TrainingAdapter

SPEC = MethodSpec("toy-foreground", "toy: per-frame foreground network, objects by connected components",
                  propagator="toy_foreground:build_propagator", config="toy_foreground:ToyConfig",
                  model="toy_foreground:ToyNet", trainer="toy_foreground:ToyAdapter", one_shot=False, zero_shot=True,
                  options=())


@dataclass
class ToyConfig:
    method: str = "toy-foreground"
    width: int = 8

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ToyConfig:
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ToyNet(nn.Module):
    def __init__(self, cfg: ToyConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = nn.Conv2d(3, cfg.width, 3, padding=1)
        self.head = nn.Conv2d(cfg.width, 1, 1)

    def forward(self, frames: Tensor) -> Tensor:
        return self.head(torch.relu(self.encoder(frames)))


class ToyAdapter(TrainingAdapter):
    objects = "all"
    protocol = "unsupervised"
    part_keys = ("bce", "area")

    def build_model(self) -> ToyNet:
        return ToyNet(self.config.model)

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        return [{"params": list(model.encoder.parameters()), "lr": self.config.train.lr * 0.1},
                {"params": list(model.head.parameters())}]

    def loss(self, model: nn.Module, batch: dict[str, Any], sampling_probability: float,
             generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        frames, masks = batch["frames"], batch["masks"]  # (B, T, 3, H, W), (B, T, H, W) ids 0..K
        logits = model(frames.flatten(0, 1))[:, 0]
        target = ((masks > 0) & (masks != VOID_ID)).flatten(0, 1).float()
        valid = (masks != VOID_ID).flatten(0, 1).float()
        loss = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * valid).sum() / valid.sum()
        area = float(torch.sigmoid(logits.detach()).mean())
        return loss, {"bce": float(loss.detach()), "area": area, "total": float(loss.detach())}

    def propagator(self, model: nn.Module, max_side: int, device: torch.device) -> Propagator:
        return NetworkSpots(model, device)


class NetworkSpots(BrightSpots):
    """Objects = connected components of the network's foreground."""

    name = "toy-foreground"

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu"):
        super().__init__(min_area=4)
        self.model, self.device = model, device

    def foreground(self, frame: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.array(frame)).permute(2, 0, 1)[None].float().to(self.device) / 255.0
        with torch.inference_mode():
            return torch.sigmoid(self.model(x))[0, 0].cpu().numpy()


def build_propagator(content: dict[str, Any], source: str, device: str = "cpu") -> NetworkSpots:
    from vidseg.models.checkpoint import model_from_checkpoint

    return NetworkSpots(model_from_checkpoint(content, source).to(device), device)
