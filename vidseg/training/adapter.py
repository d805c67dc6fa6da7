"""What the training engine needs to know about a method: the training-adapter contract.

The engine (:mod:`vidseg.training.engine`) owns everything generic — data streams, optimiser, schedule,
AMP, checkpoints, exact resume, DDP, logs and validation. An adapter owns what is specific to one method:
its network, which objects a training clip carries, the loss over a clip (with named parts for the logs),
the parameter groups (e.g. separate learning rates) and the method that runs validation videos.
:mod:`vidseg.registry` names each method's adapter class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor, nn

from vidseg.config.schema import RunConfig
from vidseg.inference.session import Propagator

OBJECTS = ("one", "all")
PROTOCOLS = ("semi-supervised", "unsupervised")


class TrainingAdapter(ABC):
    """One method's part of training (see the module docstring); built with the run's config.

    Attributes:
        objects: what a training clip carries: ``"one"`` random object (mask ids 0/1) or ``"all"`` objects.
        protocol: how validation videos are scored: ``"semi-supervised"`` (first-frame masks given) or
            ``"unsupervised"`` (no mask; the method discovers objects).
        part_keys: names of the loss parts :meth:`loss` may report (columns of ``log.csv``).
    """

    objects: str = "one"
    protocol: str = "semi-supervised"
    part_keys: tuple[str, ...] = ()

    def __init__(self, config: RunConfig):
        self.config = config

    @abstractmethod
    def build_model(self) -> nn.Module:
        """The network to train, from ``config.model``."""

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Optimiser parameter groups (a group without ``lr`` uses ``train.lr``)."""
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]

    @abstractmethod
    def loss(
        self, model: nn.Module, batch: dict[str, Any], sampling_probability: float, generator: torch.Generator
    ) -> tuple[Tensor, dict[str, float]]:
        """The loss of one batch of clips and its named parts (empty when no frame had labels).
        ``sampling_probability`` is the curriculum's chance of feeding the model its own previous prediction;
        ``generator`` makes those draws reproducible."""

    @abstractmethod
    def propagator(self, model: nn.Module, max_side: int, device: torch.device) -> Propagator:
        """The method that runs validation videos with ``model`` (which it must not change)."""


__all__ = ["OBJECTS", "PROTOCOLS", "TrainingAdapter"]
