"""Running an RVOS network inside an :class:`~vidseg.inference.session.InferenceSession`.

Each object lives in one of the network's slots. The per-video state is the slots' temporal state, their
previous masks (one-shot) and which track each slot carries, so memory does not depend on the video's length.

* **One-shot** networks follow the objects given as masks: a new object takes the lowest free slot and, as in
  the official code, the frame where it is given is run again with its mask as the slot's previous mask;
  the next frame gets that mask too, later frames the slot's own soft output. Only the slots up to the last
  occupied one run (the later slots cannot change them).
* **Zero-shot** networks discover objects: every slot runs; a slot becomes a track the first time its mask
  (probability >= 0.5) covers ``min_area`` pixels of the working frame (and, with the objectness head, its
  score is >= 0.5) and keeps that track id for the rest of the video; the slots are fused by a per-pixel
  argmax where the winning probability is >= 0.5. Given masks (``vidseg segment --mask``) instead pick, by
  the Hungarian algorithm on IoU, the slot that follows each given object (the paper's first-frame matching);
  from that frame on only those slots are reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from vidseg.inference.network import NetworkPropagator, NetworkState
from vidseg.inference.session import FrameUpdate, Prediction

FREE = 0  # a slot without a track
REMOVED = -1  # a zero-shot slot whose track the user removed: never reported again


@dataclass
class RVOSState(NetworkState):
    """``model`` is this video's int8 copy of the network (int8 only)."""

    slot_tracks: list[int]  # the track of each slot, FREE or REMOVED
    temporal: dict[str, Tensor] | None = None  # network temporal state, (1, slots, C, h, w) per entry
    previous: Tensor | None = None  # (1, slots, h, w) previous masks (one-shot)
    highest: int = 0  # the highest track id seen
    bound: bool = False  # zero-shot with given masks: only the matched slots are reported
    pending: dict[str, Any] | None = field(default=None, repr=False)  # propagate() -> commit()


class RVOSPropagator(NetworkPropagator):
    """A trained :class:`~vidseg.models.rvos.RVOS` network as a session method.

    Args:
        model: the network (e.g. from :func:`~vidseg.models.checkpoint.load_model`).
        device, dtype: where and in which precision it runs (``float32``, ``bfloat16``, ``float16``, or ``int8``:
            on the CPU, the large convolutions in int8, calibrated on each video's first frame that runs the
            network; a network that is int8 already, an int8 export, runs as it is and needs ``int8``).
        max_side: the working resolution's longer side (rounded to multiples of 32).
        optimize: fold BatchNorm and use channels-last (same function, faster).
        min_area: zero-shot: the pixels (at the working size) a slot's mask needs to become a track.
        inplace: optimise ``model`` itself instead of a copy (saves memory when the caller drops it).
    """

    name = "rvos"

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device = "cpu",
        max_side: int = 448,
        dtype: str = "float32",
        optimize: bool = True,
        min_area: int = 32,
        inplace: bool = False,
    ):
        super().__init__(model, device, max_side, dtype, optimize)
        self.min_area = int(min_area)
        self.cfg = model.cfg
        self.one_shot = model.cfg.one_shot
        self.discovers_objects = not self.one_shot
        self.model = self.prepare(model, inplace)

    def new_state(self) -> RVOSState:
        return RVOSState([FREE] * self.cfg.slots)

    # ------------------------------------------------------------------ per frame
    def _encode(self, state: RVOSState, frame: np.ndarray) -> list[Tensor]:
        return self.network(state).encode(self.frame_tensor(frame))

    def _calibrate_int8(self, state: RVOSState, frame: np.ndarray, previous: Tensor | None, running: int) -> None:
        """int8 (once per video): observe the float network on this frame, then run this video's int8 copy."""
        def run() -> None:
            features = self.model.encode(self.frame_tensor(frame))
            self.model.decode(features, state.temporal, previous, slots=running, output_size=frame.shape[:2])

        self.calibrate_video(state, run)

    def _running(self, state: RVOSState) -> int:
        """How many slots run: all (zero-shot), or up to the last occupied one (one-shot)."""
        if not self.one_shot:
            return self.cfg.slots
        occupied = [s for s, track in enumerate(state.slot_tracks) if track > 0]
        return occupied[-1] + 1 if occupied else 0

    def _decode(self, state: RVOSState, features: list[Tensor], previous: Tensor | None, running: int,
                size: tuple[int, int]) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
        """Slot probabilities (running, h, w) float32, the full-width temporal state after this frame, and the
        objectness probabilities (or None)."""
        network = self.network(state)
        out = network.decode(features, state.temporal, previous, slots=running, output_size=size)
        if running == self.cfg.slots:
            merged = out.temporal
        else:  # the slots that did not run keep their state
            temporal = network.zero_temporal(features, self.cfg.slots) if state.temporal is None else state.temporal
            merged = {key: torch.cat([out.temporal[key], value[:, running:].to(out.temporal[key].dtype)], dim=1)
                      for key, value in temporal.items()}
        objectness = None if out.objectness is None else torch.sigmoid(out.objectness[0].float())
        return torch.sigmoid(out.logits[0].float()), merged, objectness

    def propagate(self, state: RVOSState, frame: np.ndarray) -> Prediction:
        size = frame.shape[:2]
        running = self._running(state)
        if running == 0:
            return Prediction.empty(*size)
        with torch.inference_mode():
            previous = state.previous[:, :running] if self.one_shot else None
            self._calibrate_int8(state, frame, previous, running)
            features = self._encode(state, frame)
            probabilities, temporal, objectness = self._decode(state, features, previous, running, size)
        state.pending = {"features": features, "probabilities": probabilities, "temporal": temporal}
        maps = probabilities.cpu().numpy()
        scores = None if objectness is None else objectness.cpu().numpy()
        if self.one_shot or state.bound:
            slots = [s for s in range(running) if state.slot_tracks[s] > 0]
            return Prediction([state.slot_tracks[s] for s in slots], maps[slots],
                              None if scores is None else scores[slots])
        return self._discover(state, maps, scores)

    def _discover(self, state: RVOSState, maps: np.ndarray, scores: np.ndarray | None) -> Prediction:
        """Zero-shot: the slots that hold an object, fused by argmax where the winner is >= 0.5."""
        winner = maps.argmax(axis=0)
        confident = maps.max(axis=0) >= 0.5
        slots, fused = [], []
        for s in range(len(maps)):
            region = confident & (winner == s)
            if state.slot_tracks[s] == REMOVED or (scores is not None and scores[s] < 0.5):
                continue
            if state.slot_tracks[s] == FREE:
                if int(region.sum()) < self.min_area:
                    continue
                state.highest += 1
                state.slot_tracks[s] = state.highest
            slots.append(s)
            fused.append(region.astype(np.float32))
        probabilities = np.stack(fused) if fused else np.zeros((0, *maps.shape[1:]), np.float32)
        return Prediction([state.slot_tracks[s] for s in slots], probabilities,
                          None if scores is None else scores[slots], exclusive=True)

    def commit(self, state: RVOSState, frame: np.ndarray, update: FrameUpdate) -> None:
        state.highest = max([state.highest, *update.tracks])
        for track in update.removed:
            if track in state.slot_tracks:
                state.slot_tracks[state.slot_tracks.index(track)] = FREE if self.one_shot else REMOVED
        pending, state.pending = state.pending, None
        given = {track: update.probabilities[k].cpu().numpy() for k, track in enumerate(update.tracks)
                 if track in update.given}
        with torch.inference_mode():
            if self.one_shot:
                self._commit_one_shot(state, frame, pending, given)
            else:
                if given:
                    self._bind(state, pending["probabilities"].cpu().numpy(), given)
                state.temporal = pending["temporal"]

    def _commit_one_shot(self, state: RVOSState, frame: np.ndarray, pending: dict[str, Any] | None,
                         given: dict[int, np.ndarray]) -> None:
        size = frame.shape[:2]
        if state.previous is None:
            state.previous = torch.zeros((1, self.cfg.slots, *size), dtype=self.dtype, device=self.device)
        previous = state.previous.clone()
        if pending is not None:  # the slots' own soft outputs become their previous masks
            running = pending["probabilities"].shape[0]
            previous[0, :running] = pending["probabilities"].to(self.dtype)
        for s, track in enumerate(state.slot_tracks):
            if track == FREE:
                previous[0, s] = 0
        if given:
            for track, mask in given.items():
                if track in state.slot_tracks:
                    slot = state.slot_tracks.index(track)
                elif FREE in state.slot_tracks:
                    slot = state.slot_tracks.index(FREE)
                    state.slot_tracks[slot] = track
                    state.temporal = _clear_slot(state.temporal, slot)  # it may have held a removed object
                else:
                    raise ValueError(f"this RVOS network follows at most {self.cfg.slots} objects at once")
                previous[0, slot] = torch.from_numpy(mask).to(self.device, self.dtype)
            # Run the frame again with the given masks as the previous masks (the official first frame).
            running = self._running(state)
            self._calibrate_int8(state, frame, previous[:, :running], running)
            features = pending["features"] if pending is not None else self._encode(state, frame)
            probabilities, state.temporal, _ = self._decode(state, features, previous[:, :running], running, size)
            given_slots = [state.slot_tracks.index(track) for track in given]
            own = [s for s in range(running) if s not in given_slots]
            previous[0, own] = probabilities[own].to(self.dtype)
        elif pending is not None:
            state.temporal = pending["temporal"]
        state.previous = previous

    def masks_coming(self, state: RVOSState) -> None:
        """Zero-shot: from a frame with given masks on, follow only the given objects."""
        if not self.one_shot and not state.bound:
            state.slot_tracks = [FREE if track > 0 else track for track in state.slot_tracks]
            state.bound = True

    def _bind(self, state: RVOSState, maps: np.ndarray, given: dict[int, np.ndarray]) -> None:
        """Zero-shot with given masks: the slot of each given object by the Hungarian algorithm on IoU, among the
        slots that follow no other object (objects given on earlier frames keep theirs)."""
        tracks = list(given)
        open_slots = [s for s, track in enumerate(state.slot_tracks) if track <= 0 or track in given]
        slots = maps[open_slots] >= 0.5
        masks = np.stack([given[t] > 0.5 for t in tracks])
        inter = np.einsum("shw,ghw->sg", slots.astype(np.float32), masks.astype(np.float32))
        union = slots.sum((1, 2))[:, None] + masks.sum((1, 2))[None, :] - inter
        if len(tracks) > len(slots):
            raise ValueError(f"this RVOS network follows at most {self.cfg.slots} objects at once")
        rows, cols = linear_sum_assignment(-(inter / np.maximum(union, 1)))
        for row, k in zip(rows, cols):
            if tracks[k] in state.slot_tracks:
                state.slot_tracks[state.slot_tracks.index(tracks[k])] = FREE
            state.slot_tracks[open_slots[row]] = tracks[k]

    # ------------------------------------------------------------------ resume
    def state_dict(self, state: RVOSState) -> dict[str, Any]:
        return {"slot_tracks": list(state.slot_tracks), "temporal": dict(state.temporal or {}),
                "previous": state.previous, "highest": state.highest, "bound": state.bound, **self.video_weights(state)}

    def load_state_dict(self, saved: dict[str, Any]) -> RVOSState:
        if len(saved["slot_tracks"]) != self.cfg.slots:
            raise ValueError(f"the saved state has {len(saved['slot_tracks'])} slots, this network {self.cfg.slots}")
        temporal = {key: value.to(self.device) for key, value in saved["temporal"].items()} or None
        previous = None if saved["previous"] is None else saved["previous"].to(self.device)
        state = RVOSState([int(t) for t in saved["slot_tracks"]], temporal, previous, int(saved["highest"]),
                          bool(saved["bound"]))
        self.resume_video_weights(state, saved, started=temporal is not None)
        return state


def _clear_slot(temporal: dict[str, Tensor] | None, slot: int) -> dict[str, Tensor] | None:
    """``temporal`` with the slot's state zeroed (new tensors: saved states may share the old ones)."""
    if temporal is None:
        return None
    cleared = {key: value.clone() for key, value in temporal.items()}
    for value in cleared.values():
        value[:, slot] = 0
    return cleared


build_rvos_propagator = RVOSPropagator.from_checkpoint  # the registry's builder


__all__ = ["RVOSPropagator", "RVOSState", "build_rvos_propagator"]
