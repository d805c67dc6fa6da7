"""The base of the propagators that run a network: one declared place for what they share.

A :class:`NetworkPropagator` holds a shared network (``model``: weights only, never changed by a video) and the
settings every network method has: ``device``, ``dtype`` (a torch dtype; ``int8`` runs the large convolutions in
int8 on float32 activations), ``optimize`` (BatchNorm folded, channels-last where the class says so) and
``max_side`` (the working size's longer side). ``vidseg bench`` and ``vidseg export --dtype int8`` rely on exactly
these attributes, so they are part of the contract rather than conventions.

Per video a method may run its own copy of the network: fine-tuned on the first frame (online learning) or the int8
copy calibrated on the first annotated frame. That copy lives in the per-video state (a :class:`NetworkState`:
``model`` and ``int8``); :meth:`NetworkPropagator.calibrate_video`, :meth:`~NetworkPropagator.video_weights` and
:meth:`~NetworkPropagator.resume_video_weights` make, save and restore it, so resume stays exact in every method.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vidseg.constants import DTYPE_NAMES
from vidseg.inference.session import Propagator
from vidseg.models.checkpoint import model_from_checkpoint, working_side
from vidseg.models.optimize import optimize_for_inference
from vidseg.models.quantize import QParams, calibrate_convs, check_int8_network, quantize_convs, resume_int8


@dataclass(kw_only=True)
class NetworkState:
    """The per-video part of a network method's state that :class:`NetworkPropagator` manages (subclass it; the
    fields are keyword-only so subclasses may add positional ones)."""

    model: nn.Module | None = field(default=None, repr=False)  # this video's own network (fine-tuned, int8), if any
    int8: QParams | None = None  # int8: the quantisation parameters calibrated on this video's first given frame


def frame_tensor(frame: np.ndarray, device: torch.device, dtype: torch.dtype, channels_last: bool) -> Tensor:
    """An (h, w, 3) uint8 RGB frame as a (1, 3, h, w) tensor in [0, 1] for a network."""
    x = torch.from_numpy(np.array(frame)).to(device).permute(2, 0, 1)[None]  # a copy: frames may be read-only
    x = x.to(dtype) / 255.0
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def scaled_size(height: int, width: int, max_side: int, multiple: int = 32, min_side: int = 32,
                upscale: bool = True) -> tuple[int, int]:
    """Scale so the longer side is ``max_side`` (only down unless ``upscale``), then round both sides to multiples
    of ``multiple`` (networks with strided encoders need them), at least ``min_side``."""
    scale = max_side / max(height, width)
    if not upscale:
        scale = min(1.0, scale)
    return (max(min_side, round(height * scale / multiple) * multiple),
            max(min_side, round(width * scale / multiple) * multiple))


def reorder_rows(rows: Tensor, tracks: list[int], new_tracks: list[int]) -> Tensor:
    """Per-track rows (dim 0, one per entry of ``tracks``) in the order of ``new_tracks``: tracks that left are
    dropped, tracks new to ``rows`` get zeros. Returns ``rows`` itself when nothing changes (no copy)."""
    if new_tracks == tracks:
        return rows
    kept = [tracks.index(t) for t in new_tracks if t in tracks]
    if len(kept) == len(new_tracks):
        return rows.index_select(0, torch.tensor(kept, dtype=torch.long, device=rows.device))
    out = rows.new_zeros((len(new_tracks), *rows.shape[1:]))
    for row, track in enumerate(new_tracks):
        if track in tracks:
            out[row] = rows[tracks.index(track)]
    return out


def put_rows(network: dict[str, Tensor] | None, fresh: dict[str, Tensor], rows: list[int]) -> dict[str, Tensor]:
    """``network`` (one row per track, or None: every row is in ``fresh``) with ``fresh`` (one row per entry of
    ``rows``) written into it; new tensors, as saved states may share the old ones."""
    if network is None:
        return {key: value.clone() for key, value in fresh.items()}
    out: dict[str, Tensor] = {}
    for key, value in network.items():
        value = value.clone()
        value[rows] = fresh[key].to(value.dtype)
        out[key] = value
    return out


class NetworkPropagator(Propagator):
    """A :class:`~vidseg.inference.session.Propagator` that runs a network (see the module docstring).

    Subclasses call ``super().__init__(...)``, set ``model`` (usually ``self.prepare(model, inplace)``; None while
    a per-video copy is made first, as with online learning) and keep their per-frame logic. Class attributes say
    how the method works:

    * ``dtypes``: the ``dtype`` names the constructor takes (``int8`` among them: per-video calibration, and int8
      exports run as they are).
    * ``size_multiple``, ``min_side``, ``upscale``: the working-size rule (:func:`scaled_size`): 32 for the
      S2S family and RVOS, 16 for ``match``; OVSNet only scales down, in pixels (1).
    * ``channels_last``: with ``optimize``, the network and :meth:`frame_tensor` use channels-last.

    ``from_checkpoint`` is optional: the weightless ``match`` passes its frozen feature network as ``model`` and sets
    ``size_multiple = min_side = 16`` and ``dtypes`` to the float ones; ``match_refine`` keeps its own builder, since
    its ``max_side`` default is its config's matching size, not the checkpoint's training size.

    Attributes: ``model`` (the shared network, optimised for inference), ``device``, ``dtype`` (torch dtype of
    weights and frames; float32 for int8), ``int8``, ``calibrated`` (the network is an int8 export), ``optimize``,
    ``max_side``, ``online_steps``.

    Args:
        model: the network (only read here: whether it is an int8 export).
        device, max_side, dtype, optimize: see above.
        online_steps: first-frame fine-tuning steps (0: off); int8 does not combine with it.
    """

    dtypes: tuple[str, ...] = (*DTYPE_NAMES, "int8")
    size_multiple: int = 32
    min_side: int = 32
    upscale: bool = True
    channels_last: bool = True

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu", max_side: int = 448,
                 dtype: str = "float32", optimize: bool = True, online_steps: int = 0):
        if dtype not in self.dtypes:
            raise ValueError(f"dtype must be one of {', '.join(self.dtypes)}, got {dtype!r}")
        if dtype == "int8" and online_steps:
            raise ValueError("int8 does not combine with online learning (online_steps)")
        self.calibrated = check_int8_network(model, dtype)  # an int8 export: no per-video calibration
        self.device = torch.device(device)
        self.int8 = dtype == "int8"
        self.dtype = torch.float32 if self.int8 else getattr(torch, dtype)
        self.optimize = bool(optimize)
        self.max_side = int(max_side)
        self.online_steps = int(online_steps)
        self.model: nn.Module | None = None

    @classmethod
    def from_checkpoint(cls, content: dict[str, Any], source: str | os.PathLike, **options: Any) -> NetworkPropagator:
        """The registry's builder: ``cls(network, device=..., inplace=True, **options)`` for the network of checked
        checkpoint ``content`` (``source`` names it in errors), optimised in place since nothing else holds it;
        ``max_side`` (when not given or None) is the one the checkpoint was trained for."""
        if options.get("max_side") is None:
            options["max_side"] = working_side(content)
        device = options.pop("device", "cpu")
        return cls(model_from_checkpoint(content, source).to(device), device=device, inplace=True, **options)

    def prepare(self, model: nn.Module, inplace: bool = False) -> nn.Module:
        """``model`` on this device, optimised for inference (a copy unless ``inplace``) in this dtype."""
        fast = self.optimize and self.channels_last
        return optimize_for_inference(model.to(self.device), fold_bn=self.optimize, channels_last=fast,
                                      dtype=self.dtype, inplace=inplace)

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        return scaled_size(height, width, self.max_side, self.size_multiple, self.min_side, self.upscale)

    def frame_tensor(self, frame: np.ndarray) -> Tensor:
        """A working-size frame as the network's (1, 3, h, w) input."""
        return frame_tensor(frame, self.device, self.dtype, self.optimize and self.channels_last)

    def network(self, state: NetworkState) -> nn.Module | None:
        """The network this video runs: its own copy, else the shared one."""
        return state.model if state.model is not None else self.model

    def calibrate_video(self, state: NetworkState, run: Callable[[], object]) -> bool:
        """int8 (once per video, where the network is not an int8 export): observe the float network while ``run``
        runs it, then this video runs its int8 copy. Returns whether it calibrated (the float outputs of ``run``'s
        frame are then stale)."""
        if not self.int8 or self.calibrated or state.int8 is not None:
            return False
        state.int8 = calibrate_convs(self.model, run)
        state.model = quantize_convs(self.model, state.int8)
        return True

    def tuned_copy(self) -> nn.Module:
        """A fresh per-video copy of the network, ready for fine-tuned weights (see :meth:`resume_video_weights`)."""
        return copy.deepcopy(self.model)

    def video_weights(self, state: NetworkState) -> dict[str, Any]:
        """The ``state_dict`` entries of the video's own network: ``model`` (fine-tuned weights, or None) and
        ``int8`` (the calibration, or None: the int8 copy is rebuilt from it)."""
        tuned = state.model is not None and state.model is not self.model and state.int8 is None
        return {"model": state.model.state_dict() if tuned else None, "int8": state.int8}

    def resume_video_weights(self, state: NetworkState, saved: dict[str, Any], started: bool) -> None:
        """Restore the video's own network from :meth:`video_weights`'s entries of ``saved``; ``started``: the saved
        video had run the network. A state saved with other settings (online learning, precision) is refused."""
        if saved.get("model") is not None:
            if not self.online_steps:
                raise ValueError("the saved state holds a fine-tuned network; resume with the same --online-steps")
            state.model = self.tuned_copy()
            state.model.load_state_dict(saved["model"])
        elif self.online_steps and started:
            raise ValueError("the saved state has no fine-tuned network; resume with the same --online-steps")
        state.int8, int8_model = resume_int8(self.model, saved.get("int8"), self.int8, self.calibrated, started)
        if int8_model is not None:
            state.model = int8_model


__all__ = ["NetworkPropagator", "NetworkState", "frame_tensor", "put_rows", "reorder_rows", "scaled_size"]
