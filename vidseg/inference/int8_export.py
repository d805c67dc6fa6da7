"""int8 exports: a network's large convolutions calibrated once on real frames and stored in int8.

``vidseg export CHECKPOINT OUT --dtype int8`` runs the float network the way ``vidseg segment`` does, through an
:class:`~vidseg.inference.session.InferenceSession`, over a few calibration clips (the first frames of DAVIS-layout
videos, or generated ones) with ``torch.ao.quantization`` observers on its large convolutions, then writes the
optimized network (BatchNorm folded as inference folds it, those convolutions as int8 weights with per-channel
scales and the observed activation ranges). Loading it builds the network without its float32 weights
(:func:`vidseg.models.optimize.load_for_inference`), so a full HS2S runs in a fraction of the float32 memory, and no
video is calibrated again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidseg import __version__
from vidseg.errors import VidsegError
from vidseg.inference.methods import build_propagator
from vidseg.inference.network import NetworkPropagator
from vidseg.inference.session import InferenceSession
from vidseg.io.atomic import atomic_path
from vidseg.models.checkpoint import is_int8_checkpoint, model_from_checkpoint, read_checkpoint, save_checkpoint
from vidseg.models.quantize import calibrate_convs, quantize_convs
from vidseg.registry import get_method, method_names

Clip = tuple[list[np.ndarray], np.ndarray]  # RGB uint8 frames, the first frame's id mask


def davis_clips(root: str | os.PathLike, sequences: list[str] | None = None, videos: int = 4,
                frames: int = 8) -> tuple[list[Clip], str]:
    """The first ``frames`` frames of ``videos`` DAVIS-layout sequences (those named, else the first of the
    ``train`` split, or of every annotated sequence) with their first masks, and a description."""
    from PIL import Image

    from vidseg.data.davis import DavisIndex

    root = Path(root)
    only_2016 = (root / "ImageSets" / "2016").is_dir() and not (root / "ImageSets" / "2017").is_dir()
    index = DavisIndex(root, year="2016" if only_2016 else "2017", split="train", resolution=None,
                       sequences=sequences)
    clips = []
    for name in index.names[: len(index.names) if sequences else videos]:
        sequence = index.sequence(name)
        first = sequence.annotated_frames[0]
        start = sequence.frame_index(first)
        paths = sequence.frame_paths[start : start + frames]
        if not paths:
            raise VidsegError(f"sequence {name} has no frames", root, "calibrate on a root that holds JPEGImages")
        clip = [np.asarray(Image.open(path).convert("RGB")) for path in paths]
        clips.append((clip, np.asarray(index.load_mask(sequence.mask_paths[first]), np.uint8)))
    names = ", ".join(index.names[: len(clips)])
    return clips, f"first {frames} frames of {len(clips)} videos of {root} ({names})"


def synthetic_clips(videos: int = 4, frames: int = 8, first_seed: int = 0) -> tuple[list[Clip], str]:
    """Generated clips (:mod:`vidseg.data.synth`, seeds ``first_seed`` on, 256x448, two objects), and a description."""
    from vidseg.data.synth import SynthConfig, generate_clip

    clips = []
    seeds = range(first_seed, first_seed + videos)
    for seed in seeds:
        pairs = list(generate_clip(SynthConfig(seed=seed, num_frames=max(frames, 2), num_objects=2)))[:frames]
        clips.append(([frame for frame, _ in pairs], pairs[0][1]))
    return clips, f"{videos} generated clips of {frames} frames (vidseg.data.synth seeds {seeds[0]}..{seeds[-1]}, 256x448)"


def _dropped_modules(full: torch.nn.Module, optimized: torch.nn.Module) -> list[str]:
    """The submodules of ``full`` that ``optimized`` set to None (outermost only)."""
    kept = {name for name, _ in optimized.named_modules()}
    gone = [name for name, _ in full.named_modules() if name and name not in kept]
    return [name for name in gone if name.rpartition(".")[0] not in gone]


def export_int8(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    clips: Iterable[Clip],
    calibration: str,
    meta: dict[str, Any] | None = None,
    compress: bool = False,
) -> Path:
    """Write the int8 export of checkpoint ``source`` (see the module docstring), calibrated on ``clips``
    (described by ``calibration``, kept in the model card); its other floating weights are stored in float16.
    The merged meta (the model card) is also written beside it as JSON."""
    content = read_checkpoint(source)
    spec = get_method(content["method"])
    if not spec.int8:
        int8 = ", ".join(name for name in method_names() if get_method(name).int8)
        raise VidsegError(f"--dtype int8 does not apply to {spec.name}", source, f"export {int8} networks in int8")
    if is_int8_checkpoint(content):
        raise VidsegError("this checkpoint is an int8 export already", source, "export the float checkpoint")
    propagator = build_propagator(checkpoint=source, device="cpu", dtype="float32")
    if not isinstance(propagator, NetworkPropagator):  # the registry's promise for int8 methods
        raise VidsegError(f"{spec.name}'s propagator does not run a network vidseg can calibrate", source,
                          "build it on vidseg.inference.network.NetworkPropagator")
    network = propagator.model

    def run() -> None:  # a network that discovers objects is calibrated as it runs: without masks
        for frames, first in clips:
            session = InferenceSession(propagator)
            for t, frame in enumerate(frames):
                session.step(frame, first if t == 0 and not propagator.discovers_objects else None)

    params = calibrate_convs(network, run)
    if not params:
        raise VidsegError("no convolution is large enough to compute in int8", source, "keep it in float16")
    weights = {name: value.half() if value.dtype == torch.float32 and not name.endswith((".weight_scale", ".activation"))
               else value for name, value in quantize_convs(network, params).state_dict().items()}
    inference = {"dtype": "int8", "fold_bn": bool(propagator.optimize),
                 "dropped": _dropped_modules(model_from_checkpoint(content, source), network)}
    merged = {**content.get("meta", {}), "vidseg_version": __version__, "max_side": propagator.max_side,
              "dtype": "int8", "int8_convolutions": len(params), "calibration": calibration, **(meta or {})}
    kept = {key: value for key, value in content.items()
            if key in ("method", "model_config", "train_config")}
    path = save_checkpoint(destination, {**kept, "model": weights, "meta": merged, "inference": inference},
                           compress=compress)
    with atomic_path(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    return path


__all__ = ["Clip", "davis_clips", "export_int8", "synthetic_clips"]
