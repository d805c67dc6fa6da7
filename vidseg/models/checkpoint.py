"""Checkpoint files: plain dicts of tensors and config values, written atomically, read with
``torch.load(weights_only=True)`` so an untrusted file cannot run code.

Layout (``format`` = ``"vidseg-checkpoint/1"``)::

    {"format": ..., "model_config": {...S2SConfig fields...}, "model": state_dict, "meta": {...},
     # training checkpoints add: "train_config", "optimizer", "scheduler", "scaler", "rng", "progress"}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidseg.errors import VidsegError
from vidseg.io.atomic import atomic_path

FORMAT = "vidseg-checkpoint/1"


def save_checkpoint(path: str | os.PathLike, content: dict[str, Any]) -> Path:
    """Write ``content`` (must hold ``model_config`` and ``model``) to ``path`` atomically."""
    missing = [key for key in ("model_config", "model") if key not in content]
    if missing:
        raise ValueError(f"a checkpoint needs {missing}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **content}, tmp)
    return path


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint; raises :class:`VidsegError` naming the file on any problem."""
    path = Path(path)
    if not path.is_file():
        raise VidsegError("checkpoint not found", path, "pass the path of a .pt file written by `vidseg train`")
    try:
        content = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or holding pickled code
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise VidsegError(
            f"cannot read checkpoint ({type(exc).__name__}: {reason})",
            path,
            "the file is damaged, incomplete or not a vidseg checkpoint (vidseg only loads plain tensors and "
            "values, never pickled code); use another copy or retrain",
        ) from exc
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        found = content.get("format") if isinstance(content, dict) else type(content).__name__
        raise VidsegError(
            f"not a vidseg checkpoint (format {found!r}, expected {FORMAT!r})",
            path,
            "pass a file written by `vidseg train` (backbone weights go in the config's backbone_weights)",
        )
    for key in ("model_config", "model"):
        if key not in content:
            raise VidsegError(f"checkpoint has no {key!r} entry", path, "the file is incomplete; use another copy")
    return content


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Build the network a checkpoint describes and load its weights (in eval mode)."""
    from vidseg.models.s2s import build_model

    content = read_checkpoint(path)
    config = dict(content["model_config"])
    config["backbone_weights"] = None  # the checkpoint holds the trained weights already
    try:
        model = build_model(config)
        model.load_state_dict(content["model"])
    except (ValueError, RuntimeError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[0][:200]
        raise VidsegError(f"checkpoint does not match its model config ({reason})", path, "use another copy or retrain") from exc
    return model.to(device).eval()


__all__ = ["FORMAT", "load_model", "read_checkpoint", "save_checkpoint"]
