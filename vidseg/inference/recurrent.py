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

from vidseg.inference.flow import DISFlow, warp_with_flow
from vidseg.inference.network import NetworkPropagator, NetworkState, put_rows, reorder_rows
from vidseg.inference.session import FrameUpdate, Prediction

# Steps of the per-video int8 calibration. Chosen on 8 DAVIS-2016 training videos (bundled S2S++, J&F against
# float32 0.573: 1 step 0.659, 4 steps 0.610, 8 steps 0.588, 16 steps 0.576).
CALIBRATION_STEPS = 16


@dataclass
class RecurrentState(NetworkState):
    """``model`` is the network the video runs (the shared one, its fine-tuned copy, or its int8 copy); None until
    online learning has tuned one."""

    tracks: list[int] = field(default_factory=list)  # the track of each row
    network: dict[str, Tensor] | None = None  # network state, one row per track
    previous: Tensor | None = None  # (K, 1, h, w) committed probabilities of the last frame
    pending: dict[str, Tensor] | None = None  # state after propagate(), before commit()
    previous_frame: np.ndarray | None = None  # (h, w, 3) uint8 last frame, for networks with a flow prior


class RecurrentPropagator(NetworkPropagator):
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
        super().__init__(model, device, max_side, dtype, optimize, online_steps)
        self.name = model.cfg.method
        self.online_lr = float(online_lr)
        self.online_batch = int(online_batch)
        self.seed = int(seed)
        self.inplace = (inplace and not self.online_steps) or self.calibrated  # an int8 export: no float32 copy
        self.flow = DISFlow() if model.cfg.flow_prior else None
        model = model.to(self.device)
        # Keep the trainable network only for online learning; otherwise only the optimized copy stays alive.
        self.trainable = model if self.online_steps else None
        self.model = None if self.online_steps else self.prepare(model, self.inplace)

    def prepare(self, model: nn.Module, inplace: bool = False) -> nn.Module:
        fast = super().prepare(model, inplace)
        fast.decoder.border_head = None  # it only feeds the training loss: a full-size 42-channel map per object
        return fast

    def tuned_copy(self) -> nn.Module:
        return self.prepare(copy.deepcopy(self.trainable))

    def new_state(self) -> RecurrentState:
        return RecurrentState(model=self.model)

    def propagate(self, state: RecurrentState, frame: np.ndarray) -> Prediction:
        if not state.tracks:
            return Prediction.empty(*frame.shape[:2])
        with torch.inference_mode():
            prior = None
            if self.flow is not None:  # the same DIS warp as in training (warp_to_frame)
                backward = torch.from_numpy(self.flow(frame, state.previous_frame))[None]
                prior = warp_with_flow(state.previous.float(), backward).to(self.dtype)
            out, state.pending = state.model.step(self.frame_tensor(frame), state.previous, state.network, prior)
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
            state.model = self.prepare(tuned)
        with torch.inference_mode():
            x = self.frame_tensor(frame)
            previous = update.probabilities.to(self.device, self.dtype)[:, None]
            if given:
                self.calibrate_video(state, lambda: self._calibration_run(x, previous[given]))
            network = self._rows(state, update.tracks)
            if given:
                fresh = state.model.init_state(x, previous[given])
                network = put_rows(network, fresh, given)
            state.tracks, state.network, state.previous, state.pending = list(update.tracks), network, previous, None
            state.previous_frame = np.array(frame) if self.flow is not None else None

    def _calibration_run(self, x: Tensor, masks: Tensor) -> None:
        """What int8 calibration observes: the float network starts on the annotated frame and steps onto it
        :data:`CALIBRATION_STEPS` times, each step given the last one's masks: the recurrent state grows over the
        first steps, and ranges observed on one step clip what later frames produce."""
        state, previous = self.model.init_state(x, masks), masks
        for _ in range(CALIBRATION_STEPS):
            prior = previous if self.flow is not None else None  # the frame itself: the warp is the identity
            out, state = self.model.step(x, previous, state, prior)
            previous = torch.sigmoid(out.logits)

    @staticmethod
    def _rows(state: RecurrentState, tracks: list[int]) -> dict[str, Tensor] | None:
        """The propagated network state (``pending``) with one row per entry of ``tracks`` (zeros for tracks the
        network does not carry yet); None when it carries none of them."""
        if state.network is None or not any(t in state.tracks for t in tracks):
            return None
        return {key: reorder_rows(value, state.tracks, tracks) for key, value in state.pending.items()}

    def state_dict(self, state: RecurrentState) -> dict[str, Any]:
        return {
            "tracks": list(state.tracks),
            "network": dict(state.network or {}),
            "previous": state.previous,
            "previous_frame": state.previous_frame,
            **self.video_weights(state),  # the per-video fine-tuned copy (S2S-OL) or int8 calibration
        }

    def load_state_dict(self, saved: dict[str, Any]) -> RecurrentState:
        state = self.new_state()
        state.tracks = [int(t) for t in saved["tracks"]]
        state.network = {key: value.to(self.device) for key, value in saved["network"].items()} or None
        state.previous = saved["previous"].to(self.device)
        if saved.get("previous_frame") is not None:
            state.previous_frame = np.asarray(saved["previous_frame"], np.uint8)
        self.resume_video_weights(state, saved, started=bool(state.tracks))
        return state


def build_recurrent_propagator(content: dict[str, Any], source: str | os.PathLike, **options: Any) -> NetworkPropagator:
    """The registry's builder: HS2S on match's memory (``merge: readout``) runs in
    :class:`~vidseg.inference.hybrid.HybridMatchPropagator`, every other member of the family here."""
    if content["model_config"].get("merge") == "readout":
        from vidseg.inference.hybrid import HybridMatchPropagator

        return HybridMatchPropagator.from_checkpoint(content, source, **options)
    return RecurrentPropagator.from_checkpoint(content, source, **options)


__all__ = ["CALIBRATION_STEPS", "RecurrentPropagator", "RecurrentState", "build_recurrent_propagator"]
