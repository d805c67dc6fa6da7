"""HS2S on match's memory (``merge: readout``, the CPU-size hybrid) inside an inference session.

The memory is ``match``'s (:class:`~vidseg.inference.match.MatchPropagator`: the frames with given masks, the recent
predicted ones and, opt-in, confident older ones), built on the network's own frozen features
(:meth:`~vidseg.models.s2s.RecurrentVOS.encode`) with the matching settings it was trained with. Per frame the memory
is read once for all objects; the network then takes each object's labels (the readout), its ConvLSTM state and its
previous mask, and predicts the object's mask (independent maps, merged by the session). The committed masks enter
the memory and become the next frame's previous masks. The state holds the memory and one network row per track,
so it is bounded and resumes exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vidseg.constants import DTYPE_NAMES
from vidseg.errors import VidsegError
from vidseg.inference.match import LONG_TERM_EVERY, MatchPropagator, MatchState
from vidseg.inference.network import NetworkPropagator, put_rows, reorder_rows
from vidseg.inference.session import FrameUpdate, Prediction
from vidseg.models.match_memory import MatchMemory
from vidseg.models.s2s import MATCH_STRIDE, RecurrentVOS


@dataclass
class HybridState(MatchState):
    network: dict[str, Tensor] | None = None  # the network's state, one row per track
    previous: Tensor | None = None  # (K, 1, h, w) committed probabilities of the last frame
    pending_network: dict[str, Tensor] | None = None  # the network's state after propagate(), before commit()


class HybridMatchPropagator(MatchPropagator):
    """A trained ``merge: readout`` HS2S network as a session method (see the module docstring).

    Args:
        model: the :class:`~vidseg.models.s2s.RecurrentVOS` (``merge: readout``).
        device, max_side, dtype (float ones), optimize, inplace: as :class:`~vidseg.inference.recurrent.RecurrentPropagator`.
        long_term, long_term_every: as :class:`~vidseg.inference.match.MatchPropagator` (0: off).
        online_steps: must be 0 (no first-frame fine-tuning for this variant); ``online_lr`` is ignored.
    """

    name = "hs2s"
    dtypes = DTYPE_NAMES
    size_multiple = min_side = 32

    def __init__(self, model: RecurrentVOS, device: str | torch.device = "cpu", max_side: int = 448,
                 dtype: str = "float32", optimize: bool = True, inplace: bool = False, online_steps: int = 0,
                 online_lr: float | None = None, long_term: int = 0, long_term_every: int = LONG_TERM_EVERY):
        if not getattr(model, "reads_memory", False):
            raise ValueError("HybridMatchPropagator runs HS2S networks with merge: readout")
        if online_steps:
            raise VidsegError("HS2S on match's memory (merge: readout) has no online learning",
                              fix="leave out --online-steps, or use --method match_refine --online-steps N")
        NetworkPropagator.__init__(self, model, device, max_side, dtype, optimize)
        cfg = model.cfg
        self._set_matching(cfg.match_memory, cfg.match_top_k, cfg.match_temperature, cfg.match_radius)
        self._set_whole_frame_memory(long_term, long_term_every)
        self.model = self.prepare(model, inplace)
        self.model.decoder.border_head = None  # it only feeds the training loss
        self.stride = MATCH_STRIDE

    def new_state(self) -> HybridState:
        return HybridState(memory=MatchMemory(self.memory, self.radius, self.long_term, self.long_term_every))

    def propagate(self, state: HybridState, frame: np.ndarray) -> Prediction:
        if not state.tracks:
            return Prediction.empty(*frame.shape[:2])
        with torch.inference_mode():
            x = self.frame_tensor(frame)
            keys, levels = self.model.encode(x)
            state.pending = keys[0].contiguous()
            readout = state.memory.read(state.pending, self.top_k, self.temperature)[:, None].to(self.dtype)
            out, state.pending_network = self.model.step(x, state.previous, state.network, readout=readout,
                                                         levels=levels)
            return Prediction(list(state.tracks), torch.sigmoid(out.logits[:, 0].float()))

    def commit(self, state: HybridState, frame: np.ndarray, update: FrameUpdate) -> None:
        given = [update.tracks.index(t) for t in update.given]
        with torch.inference_mode():
            previous = update.probabilities.to(self.device, self.dtype)[:, None]
            network = None
            if state.pending_network is not None and any(t in state.tracks for t in update.tracks):
                network = {key: reorder_rows(value, state.tracks, update.tracks)
                           for key, value in state.pending_network.items()}
            if given:
                fresh = self.model.init_state(self.frame_tensor(frame), previous[given])
                network = put_rows(network, fresh, given)
        super().commit(state, frame, update)  # the memory; sets the tracks
        state.network, state.previous, state.pending_network = network, previous, None

    def state_dict(self, state: HybridState) -> dict[str, Any]:
        return {**super().state_dict(state), "network": dict(state.network or {}), "previous": state.previous}

    def load_state_dict(self, saved: dict[str, Any]) -> HybridState:
        base = super().load_state_dict(saved)
        network = {key: value.to(self.device) for key, value in saved["network"].items()} or None
        previous = saved["previous"].to(self.device, self.dtype) if saved["previous"] is not None else None
        return HybridState(base.tracks, base.memory, network=network, previous=previous)


__all__ = ["HybridMatchPropagator", "HybridState"]
