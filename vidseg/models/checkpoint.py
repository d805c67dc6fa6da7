"""Checkpoint files: plain dicts of tensors and config values, written atomically, read with
``torch.load(weights_only=True)`` so an untrusted file cannot run code.

Layout (``format`` = ``"vidseg-checkpoint/1"``)::

    {"format": ..., "method": name, "model_config": {...that method's config fields...}, "model": state_dict,
     "meta": {...},
     # training checkpoints add: "train_config", "optimizer", "scheduler", "scaler", "rng", "progress"
     # int8 exports add: "inference": {"dtype": "int8", "fold_bn": bool, "dropped": [module names]}, and their
     # "model" is the state dict of the optimized network (BatchNorm folded, int8 convolutions as plain tensors)}

A file may be gzip-compressed (``vidseg export --compress``; the bundled weights are): it is read the same way.
The method's config type and model builder come from :mod:`vidseg.registry`. Files written before the
``method`` entry existed carry the method in ``model_config`` only; they are read the same way.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidseg import __version__
from vidseg.errors import VidsegError
from vidseg.io.atomic import atomic_path
from vidseg.registry import get_method, method_names

_FORMAT_PREFIX = "vidseg-checkpoint/"
FORMAT = _FORMAT_PREFIX + "1"
_TRAINING_ENTRIES = ("optimizer", "scheduler", "scaler", "rng", "progress")


def save_checkpoint(path: str | os.PathLike, content: dict[str, Any], compress: bool = False) -> Path:
    """Write ``content`` (must hold ``model_config`` and ``model``; ``method`` defaults to the config's) to
    ``path`` atomically; ``compress``: gzip it (deterministic bytes: no time stamp)."""
    missing = [key for key in ("model_config", "model") if key not in content]
    if missing:
        raise ValueError(f"a checkpoint needs {missing}")
    content = {"method": content["model_config"].get("method"), **content}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        if compress:
            buffer = io.BytesIO()
            torch.save({"format": FORMAT, **content}, buffer)
            tmp.write_bytes(gzip.compress(buffer.getvalue(), compresslevel=9, mtime=0))
        else:
            torch.save({"format": FORMAT, **content}, tmp)
    return path


def _unreadable(exc: Exception) -> tuple[str, str]:
    """(message, fix) for a file ``torch.load(weights_only=True)`` refused, in our words (never torch's advice)."""
    text = str(exc)
    if "Unsupported global" in text:
        message = ("cannot read checkpoint: it holds Python objects besides tensors and plain values, and vidseg "
                   "never runs pickled code from a file")
        return message, "use a file written by `vidseg train` / `vidseg export`, or re-save only the state dict and config"
    if isinstance(exc, EOFError) or "failed finding central directory" in text or "unexpected EOF" in text:
        return "cannot read checkpoint: the file is truncated", "copy it again, or use last.pt / best.pt of the run"
    return ("cannot read checkpoint: not a PyTorch checkpoint file",
            "pass a .pt file written by `vidseg train` or `vidseg export`")


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint; raises :class:`VidsegError` naming the file on any problem."""
    path = Path(path)
    if not path.is_file():
        raise VidsegError("checkpoint not found", path, "pass the path of a .pt file written by `vidseg train`")
    try:
        with path.open("rb") as file:
            gzipped = file.read(2) == b"\x1f\x8b"
        source = io.BytesIO(gzip.decompress(path.read_bytes())) if gzipped else path
        content = torch.load(source, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or holding pickled code
        message, fix = _unreadable(exc)
        raise VidsegError(message, path, fix) from exc
    found = content.get("format") if isinstance(content, dict) else None
    if isinstance(found, str) and found.startswith(_FORMAT_PREFIX) and found != FORMAT:
        raise VidsegError(
            f"checkpoint format {found!r} is not the one this vidseg {__version__} reads ({FORMAT!r})",
            path,
            "use the vidseg version that wrote it, or retrain / re-export it with this version",
        )
    if found != FORMAT:
        found = found if isinstance(content, dict) else type(content).__name__
        raise VidsegError(
            f"not a vidseg checkpoint (format {found!r}, expected {FORMAT!r})",
            path,
            "pass a file written by `vidseg train` (backbone weights go in the config's backbone_weights)",
        )
    for key in ("model_config", "model"):
        if key not in content:
            raise VidsegError(f"checkpoint has no {key!r} entry", path, "the file is incomplete; use another copy")
    method = content.get("method")
    if method is None and isinstance(content["model_config"], dict):
        method = content["model_config"].get("method")
    networks = [name for name in method_names() if get_method(name).needs_checkpoint]
    if method not in networks:
        raise VidsegError(
            f"checkpoint holds an unknown method {method!r}",
            path,
            f"this vidseg {__version__} runs {', '.join(networks)}; use the version that wrote the file",
        )
    return {**content, "method": method}


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Build the network a checkpoint describes and load its weights (in eval mode)."""
    return model_from_checkpoint(read_checkpoint(path), path).to(device).eval()


def model_from_checkpoint(content: dict[str, Any], source: str | os.PathLike) -> nn.Module:
    """The float32 network of checked checkpoint ``content`` (from :func:`read_checkpoint`; ``source`` names
    the file in errors). Half-precision weights are converted on loading. An int8 export (:func:`is_int8_checkpoint`)
    gives its optimized network: BatchNorm folded as stored, the large convolutions in int8; its weights are moved
    out of ``content["model"]`` (so they are held once), and the same ``content`` cannot build a second network."""
    spec = get_method(content["method"])
    config = dict(content["model_config"])
    if "backbone_weights" in config:
        config["backbone_weights"] = None  # the checkpoint holds the trained weights already
    try:
        config = spec.load("config").from_dict(config)
        inference = content.get("inference")
        if inference is not None:  # an optimized (int8) export: built as stored, without float32 weights
            from vidseg.models.optimize import load_for_inference

            weights = content["model"]  # taken over: its int8 weights are removed as they are packed
            for name, value in weights.items():
                if value.dtype in (torch.float16, torch.bfloat16):
                    weights[name] = value.float()
            return load_for_inference(config, weights, fold_bn=bool(inference["fold_bn"]), channels_last=False,
                                      dropped=tuple(inference.get("dropped", ())))
        model = spec.load("model")(config)
        model.load_state_dict(content["model"])
    except (ValueError, RuntimeError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[0][:200]
        raise VidsegError(f"checkpoint does not match its model config ({reason})", source, "use another copy or retrain") from exc
    return model.eval()


def is_int8_checkpoint(content: dict[str, Any]) -> bool:
    """Whether checked checkpoint ``content`` is an int8 export (``vidseg export --dtype int8``)."""
    return content.get("inference", {}).get("dtype") == "int8"


def working_side(content: dict[str, Any], fallback: int = 448) -> int:
    """The longer side a checkpoint's network should run at: its ``meta`` ``max_side`` when set, else the
    longer side of its training frames, else ``fallback``."""
    side = content.get("meta", {}).get("max_side")
    if side is None:
        size = content.get("train_config", {}).get("data", {}).get("size")
        side = max(size) if size else fallback
    return int(side)


def export_weights(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    dtype: torch.dtype = torch.float16,
    meta: dict[str, Any] | None = None,
    compress: bool = False,
) -> Path:
    """Write an inference-only copy of a checkpoint: the weights (floating tensors cast to ``dtype``), the
    model and training configs, and ``meta`` merged into the source's meta (``max_side`` defaults to the
    training frames' longer side); optimizer state and training progress are dropped. The merged meta (the
    model card) is also written beside it as JSON (``destination`` with the suffix ``.json``). ``compress``:
    gzip the file (float16 weights shrink by about a tenth)."""
    content = read_checkpoint(source)
    weights = {
        name: tensor.to(dtype) if tensor.is_floating_point() else tensor for name, tensor in content["model"].items()
    }
    merged = {**content.get("meta", {}), "vidseg_version": __version__, "max_side": working_side(content), **(meta or {})}
    if "progress" in content:
        merged.setdefault("trained_steps", int(content["progress"].get("step", 0)))
    kept = {key: value for key, value in content.items() if key not in (*_TRAINING_ENTRIES, "format", "meta")}
    path = save_checkpoint(destination, {**kept, "model": weights, "meta": merged}, compress=compress)
    with atomic_path(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    return path


__all__ = ["FORMAT", "export_weights", "is_int8_checkpoint", "load_model", "model_from_checkpoint", "read_checkpoint",
           "save_checkpoint", "working_side"]
