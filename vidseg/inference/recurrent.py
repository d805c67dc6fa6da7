"""Running an S2S / S2S++ / HS2S network inside an :class:`~vidseg.inference.session.InferenceSession`.

All tracked objects of a video run as one batch through the single-object network; the session merges
them (soft aggregation, then argmax with background). The per-video state is the network's state dict
with one row per track plus the committed probabilities of the last frame, so memory does not grow with
the video's length. HS2S's first-frame reference features are computed once per object, at the frame
the object is given.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vidseg.constants import DTYPE_NAMES
from vidseg.inference.flow import DISFlow, warp_with_flow
from vidseg.inference.session import FrameUpdate, Prediction, Propagator
from vidseg.models.checkpoint import model_from_checkpoint, working_side
from vidseg.models.optimize import optimize_for_inference
from vidseg.models.quantize import QParams, calibrate_convs, check_int8_network, quantize_convs, resume_int8


# Steps of the per-video int8 calibration. Chosen on 8 DAVIS-2016 training videos (bundled S2S++, J&F against
# float32 0.573: 1 step 0.659, 4 steps 0.610, 8 steps 0.588, 16 steps 0.576).
CALIBRATION_STEPS = 16


@dataclass
class RecurrentState:
    tracks: list[int] = field(default_factory=list)  # the track of each row
    network: dict[str, Tensor] | None = None  # network state, one row per track
    previous: Tensor | None = None  # (K, 1, h, w) committed probabilities of the last frame
    pending: dict[str, Tensor] | None = None  # state after propagate(), before commit()
    model: nn.Module | None = field(default=None, repr=False)  # per-video copy (online learning, int8)
    int8: QParams | None = None  # int8: the quantisation parameters calibrated on this video's first frame
    previous_frame: np.ndarray | None = None  # (h, w, 3) uint8 last frame, for networks with a flow prior


def frame_tensor(frame: np.ndarray, device: torch.device, dtype: torch.dtype, channels_last: bool) -> Tensor:
    """An (h, w, 3) uint8 RGB frame as a (1, 3, h, w) tensor in [0, 1] for a network."""
    x = torch.from_numpy(np.array(frame)).to(device).permute(2, 0, 1)[None]  # a copy: frames may be read-only
    x = x.to(dtype) / 255.0
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def working_size_multiple_of_32(height: int, width: int, max_side: int) -> tuple[int, int]:
    """Scale so the longer side is ``max_side``, then round both sides to multiples of 32 (at least 32)."""
    scale = max_side / max(height, width)
    return max(32, round(height * scale / 32) * 32), max(32, round(width * scale / 32) * 32)


class RecurrentPropagator(Propagator):
    """A trained recurrent network as a session method.

    Args:
        model: a :class:`~vidseg.models.s2s.RecurrentVOS` (e.g. from :func:`~vidseg.models.checkpoint.load_model`).
        device: where to run it.
        max_side: the working resolution's longer side (the training size 256x448 has 448).
        dtype: ``float32``, ``bfloat16`` (half the memory; fast on CPUs with AVX512-BF16 and on GPUs),
            ``float16`` (GPU) or ``int8`` (CPU: the large convolutions in int8, calibrated on each video's
            first annotated frame, :data:`CALIBRATION_STEPS` steps onto it; see :mod:`vidseg.models.quantize`). A network that is int8 already (an int8
            export, calibrated once) runs as it is and needs ``int8``.
        optimize: fold BatchNorm and use channels-last (same function, faster).
        online_steps: S2S-OL fine-tuning steps on the first frame's objects (0 = off); each video gets
            its own fine-tuned copy, so the shared network is not changed.
        online_lr, online_batch: learning rate and pairs per step of the fine-tuning.
        inplace: optimise ``model`` itself instead of a copy (saves memory when the caller drops it; not with
            online learning, which fine-tunes copies of the original).
    """

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device = "cpu",
        max_side: int = 448,
        dtype: str = "float32",
        optimize: bool = True,
        online_steps: int = 0,
        online_lr: float = 1e-5,
        online_batch: int = 4,
        seed: int = 0,
        inplace: bool = False,
    ):
        if dtype not in (*DTYPE_NAMES, "int8"):
            raise ValueError(f"dtype must be one of {', '.join(DTYPE_NAMES)} or int8, got {dtype!r}")
        if dtype == "int8" and online_steps:
            raise ValueError("int8 does not combine with online learning (online_steps)")
        self.calibrated = check_int8_network(model, dtype)  # an int8 export: no per-video calibration, no float32 copy
        self.device = torch.device(device)
        self.int8 = dtype == "int8"
        self.dtype = torch.float32 if self.int8 else getattr(torch, dtype)
        self.optimize = optimize
        self.name = model.cfg.method
        self.max_side = int(max_side)
        self.online_steps = int(online_steps)
        self.online_lr = float(online_lr)
        self.online_batch = int(online_batch)
        self.seed = int(seed)
        self.inplace = (inplace and not self.online_steps) or self.calibrated
        self.flow = DISFlow() if model.cfg.flow_prior else None
        model = model.to(self.device)
        # Keep the trainable network only for online learning; otherwise only the optimized copy stays alive.
        self.trainable = model if self.online_steps else None
        self.model = None if self.online_steps else self._prepare(model)

    def _prepare(self, model: nn.Module) -> nn.Module:
        fast = optimize_for_inference(model, fold_bn=self.optimize, channels_last=self.optimize, dtype=self.dtype,
                                      inplace=self.inplace)
        fast.decoder.border_head = None  # it only feeds the training loss: a full-size 42-channel map per object
        return fast

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        return working_size_multiple_of_32(height, width, self.max_side)

    def new_state(self) -> RecurrentState:
        return RecurrentState(model=self.model)

    def _frame_tensor(self, frame: np.ndarray) -> Tensor:
        return frame_tensor(frame, self.device, self.dtype, self.optimize)

    def propagate(self, state: RecurrentState, frame: np.ndarray) -> Prediction:
        if not state.tracks:
            return Prediction.empty(*frame.shape[:2])
        with torch.inference_mode():
            prior = None
            if self.flow is not None:  # the same DIS warp as in training (warp_to_frame)
                backward = torch.from_numpy(self.flow(frame, state.previous_frame))[None]
                prior = warp_with_flow(state.previous.float(), backward).to(self.dtype)
            out, state.pending = state.model.step(self._frame_tensor(frame), state.previous, state.network, prior)
            return Prediction(list(state.tracks), torch.sigmoid(out.logits[:, 0].float()))

    def commit(self, state: RecurrentState, frame: np.ndarray, update: FrameUpdate) -> None:
        given = [update.tracks.index(t) for t in update.given]
        if state.model is None:  # online learning: fine-tune on the first frame's objects
            from vidseg.inference.online import online_finetune

            labels = np.zeros(frame.shape[:2], np.uint8)
            for k in given:
                labels[update.probabilities[k].cpu().numpy() > 0.5] = k + 1
            tuned = online_finetune(self.trainable, frame, labels, self.online_steps, self.online_lr,
                                    self.online_batch, self.seed)
            state.model = self._prepare(tuned)
        with torch.inference_mode():
            x = self._frame_tensor(frame)
            previous = update.probabilities.to(self.device, self.dtype)[:, None]
            if self.int8 and not self.calibrated and state.int8 is None and given:
                state.int8 = self._calibrate(state.model, x, previous[given])
                state.model = quantize_convs(self.model, state.int8)
            network = _rows_for(state, update.tracks)
            if given:
                fresh = state.model.init_state(x, previous[given])
                network = _put_rows(network, fresh, given, len(update.tracks))
            state.tracks, state.network, state.previous, state.pending = list(update.tracks), network, previous, None
            state.previous_frame = np.array(frame) if self.flow is not None else None

    def _calibrate(self, model: nn.Module, x: Tensor, masks: Tensor) -> QParams:
        """int8 parameters observed while the float network starts on the annotated frame and steps onto it
        :data:`CALIBRATION_STEPS` times, each step given the last one's masks: the recurrent state grows over the
        first steps, and ranges observed on one step clip what later frames produce."""
        def run() -> None:
            state, previous = model.init_state(x, masks), masks
            for _ in range(CALIBRATION_STEPS):
                prior = previous if self.flow is not None else None  # the frame itself: the warp is the identity
                out, state = model.step(x, previous, state, prior)
                previous = torch.sigmoid(out.logits)

        return calibrate_convs(model, run)

    def state_dict(self, state: RecurrentState) -> dict[str, Any]:
        tuned = state.model is not None and state.model is not self.model and state.int8 is None
        return {
            "tracks": list(state.tracks),
            "network": dict(state.network or {}),
            "previous": state.previous,
            "previous_frame": state.previous_frame,
            "model": state.model.state_dict() if tuned else None,  # the per-video fine-tuned copy (S2S-OL)
            "int8": state.int8,
        }

    def load_state_dict(self, saved: dict[str, Any]) -> RecurrentState:
        state = self.new_state()
        state.tracks = [int(t) for t in saved["tracks"]]
        state.network = {key: value.to(self.device) for key, value in saved["network"].items()} or None
        state.previous = saved["previous"].to(self.device)
        if saved.get("previous_frame") is not None:
            state.previous_frame = np.asarray(saved["previous_frame"], np.uint8)
        if saved["model"] is not None:
            if self.trainable is None:
                raise ValueError("the saved state holds a fine-tuned network; resume with the same --online-steps")
            state.model = self._prepare(copy.deepcopy(self.trainable))
            state.model.load_state_dict(saved["model"])
        elif self.model is None:
            raise ValueError("the saved state has no fine-tuned network; resume with the same --online-steps")
        state.int8, int8_model = resume_int8(self.model, saved.get("int8"), self.int8, self.calibrated,
                                             bool(state.tracks))
        if int8_model is not None:
            state.model = int8_model
        return state


def _rows_for(state: RecurrentState, tracks: list[int]) -> dict[str, Tensor] | None:
    """The propagated network state (``pending``) with its rows in the order of ``tracks``; tracks the
    network does not carry yet are left out (they are appended by :func:`_put_rows`)."""
    if state.network is None:
        return None
    kept = [state.tracks.index(t) for t in tracks if t in state.tracks]
    if kept == list(range(len(state.tracks))):
        return state.pending
    if not kept:
        return None
    index = torch.tensor(kept, device=state.previous.device)
    return {key: value.index_select(0, index) for key, value in state.pending.items()}


def _put_rows(network: dict[str, Tensor] | None, fresh: dict[str, Tensor], rows: list[int], total: int) -> dict[str, Tensor]:
    """Write ``fresh`` (one row per entry of ``rows``) into ``network``, growing it to ``total`` rows."""
    if network is None:
        return {key: value.clone() for key, value in fresh.items()}
    out: dict[str, Tensor] = {}
    for key, value in network.items():
        new = fresh[key]
        if value.shape[0] < total:
            pad = new.new_zeros((total - value.shape[0], *value.shape[1:]))
            value = torch.cat([value, pad])
        else:
            value = value.clone()
        value[rows] = new.to(value.dtype)
        out[key] = value
    return out


def propagator_from_checkpoint(
    propagator: type[Propagator], content: dict[str, Any], source: str | os.PathLike, **options: Any
) -> Propagator:
    """``propagator(model, device=..., **options)`` for the network of checked checkpoint ``content``; ``max_side``
    (when not given or None) is the one the checkpoint was trained for."""
    if options.get("max_side") is None:
        options["max_side"] = working_side(content)
    device = options.pop("device", "cpu")
    return propagator(model_from_checkpoint(content, source).to(device), device=device, **options)


def build_recurrent_propagator(
    content: dict[str, Any], source: str | os.PathLike, **options: Any
) -> RecurrentPropagator:
    """The registry's builder (see :func:`propagator_from_checkpoint`); the freshly loaded network is optimised in
    place."""
    return propagator_from_checkpoint(RecurrentPropagator, content, source, inplace=True, **options)


__all__ = ["CALIBRATION_STEPS", "RecurrentPropagator", "RecurrentState", "build_recurrent_propagator", "frame_tensor",
           "propagator_from_checkpoint", "working_size_multiple_of_32"]
