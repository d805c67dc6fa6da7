"""OVSNet's one-pass cascade inside an :class:`~vidseg.inference.session.InferenceSession` (SPEC §2.5 / §2.5a).

Per frame the network detects class-agnostic candidates (masks + re-ID embeddings). Every tracked object's
mask of the previous frame is warped to this frame by optical flow (DIS by default; torchvision RAFT with
weights) into a template, then, for all objects jointly:

1. **IoU path**: the Hungarian matching on the IoU of templates and candidates; an object whose matched
   candidate overlaps its template by more than ``rho_iou`` takes that candidate, and the candidate's
   embedding joins the object's collection (the last ``collection`` embeddings are kept);
2. **re-ID path**: each object still waiting, with a collection, may take a candidate left over: one whose
   Euclidean distance is below ``rho_reid`` to at least ``reid_fraction`` of the collection; among those, the
   Hungarian matching on the mean distance decides (the embedding is not added, as in the paper);
3. **flow path**: otherwise the template, refined by the MGA module (or used as it is with ``refine=False``);
   an empty template means the object is absent (only the re-ID path can bring it back).

With ``refine_candidates`` the MGA module also redraws the candidate an object takes on the IoU or re-ID path: the
paper's MGA section makes it the network's mask head ("we use the MGA module to predict a class-agnostic
foreground/background mask", with Mask R-CNN's 28 x 28 probability as its attention), so that every path's mask
comes out of it. The decisions are still made on Mask R-CNN's masks, and only the candidates taken are redrawn
(one MGA pass per detection and frame would cost more and hardly change a decision). Off by default: the CPU-size
network's MGA draws worse masks than its Mask R-CNN head (docs/ovsnet.md), so only the flow path uses it.

Each candidate is used once. The collection starts with the embedding of the given mask's box. The state is
the previous frame, the objects' last masks and their bounded collections, so memory does not depend on the
video's length; ``paths`` counts how often each path decided.

With ``online_steps`` > 0 a copy of the network is first fine-tuned on augmented copies of the frame where the
objects are given (the paper's per-dataset fine-tuning on first frames, per video): pairs of random affine
versions of the frame and its masks, each pair two images of the same objects, trained with the training loss.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from torch import nn

from vidseg.constants import VOID_ID
from vidseg.data.transforms import first_frame_affine_pairs
from vidseg.inference.flow import FLOW_NAMES, build_flow, warp_maps
from vidseg.inference.network import NetworkPropagator, NetworkState
from vidseg.inference.session import FrameUpdate, Prediction
from vidseg.models.ovsnet import FrameDetections, OVSNet
from vidseg.models.ovsnet_loss import MIN_PIXELS, object_target, ovsnet_losses

PATHS = ("iou", "reid", "flow", "absent")


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(K, N) IoU of boolean masks ``a`` (K, h, w) and ``b`` (N, h, w) (0 where both are empty)."""
    x = a.reshape(len(a), -1).astype(np.float32)
    y = b.reshape(len(b), -1).astype(np.float32)
    inter = x @ y.T
    union = x.sum(1)[:, None] + y.sum(1)[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def cascade(
    templates: np.ndarray,
    candidates: np.ndarray,
    embeddings: np.ndarray,
    collections: list[np.ndarray],
    rho_iou: float = 0.3,
    rho_reid: float = 2.3,
    reid_fraction: float = 0.3,
    reid: bool = True,
) -> list[tuple[str, int]]:
    """The path and candidate of each object: ``("iou", j)``, ``("reid", j)``, ``("flow", -1)`` or ``("absent", -1)``.

    Args:
        templates: (K, h, w) bool, the objects' warped masks.
        candidates: (N, h, w) bool, the detections' masks; ``embeddings`` (N, D) their re-ID embeddings.
        collections: per object, its (n_k, D) embeddings (n_k may be 0).
        reid: False leaves the re-ID path out (the paper's ablation).
    """
    decisions: list[tuple[str, int] | None] = [None] * len(templates)
    free = set(range(len(candidates)))
    if len(templates) and len(candidates):
        overlap = mask_iou(templates, candidates)
        for k, j in zip(*linear_sum_assignment(-overlap)):
            if overlap[k, j] > rho_iou:
                decisions[k] = ("iou", int(j))
                free.discard(int(j))
    waiting = [k for k, d in enumerate(decisions) if d is None and len(collections[k])]
    left = sorted(free)
    if reid and waiting and left:
        cost = np.full((len(waiting), len(left)), np.inf)
        for row, k in enumerate(waiting):
            distance = cdist(collections[k], embeddings[left])  # (n_k, N')
            qualifies = (distance < rho_reid).mean(0) >= reid_fraction
            cost[row, qualifies] = distance.mean(0)[qualifies]
        finite = np.isfinite(cost)
        if finite.any():
            rows, cols = linear_sum_assignment(np.where(finite, cost, cost[finite].max() + 1e6))
            for row, col in zip(rows, cols):
                if finite[row, col]:
                    decisions[waiting[row]] = ("reid", left[col])
    return [d if d is not None else (("flow", -1) if templates[k].any() else ("absent", -1))
            for k, d in enumerate(decisions)]


def first_frame_finetune(model: OVSNet, frame: np.ndarray, labels: np.ndarray, steps: int, lr: float = 1e-5,
                         pairs_per_step: int = 1, seed: int = 0) -> OVSNet:
    """A copy of ``model`` fine-tuned ``steps`` Adam steps on augmented copies of ``frame`` ((H, W, 3) uint8) and
    its object ids ``labels`` (H, W); the original is not touched. Returns it in eval mode."""
    tuned = copy.deepcopy(model)
    frozen = {id(p) for m in tuned.frozen_norms() for p in m.parameters()}
    params = [p for p in tuned.parameters() if id(p) not in frozen]
    for p in params:
        p.requires_grad_(True)
    ids = [int(i) for i in np.unique(labels) if i not in (0, VOID_ID)]
    if steps <= 0 or not ids:
        return tuned.eval()
    tuned.train()
    optimizer = torch.optim.Adam(params, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    frame_t = torch.from_numpy(np.array(frame)).permute(2, 0, 1)
    labels_t = torch.from_numpy(np.ascontiguousarray(labels))
    device = params[0].device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # torchvision draws training sizes and RoI samples from the global generator
        for _ in range(steps):
            pairs = first_frame_affine_pairs(frame_t, labels_t, pairs_per_step, generator)
            images = torch.cat([pairs.x0, pairs.x1]).to(device)
            labelled = torch.cat([pairs.y0, pairs.y1]).to(device)
            targets = []
            for x, y in zip(images, labelled):
                kept = [k for k in ids if int((y == k).sum()) >= MIN_PIXELS]
                targets.append(object_target([y == k for k in kept], kept, x))
            loss, _ = ovsnet_losses(tuned, list(images), targets, list(labelled == VOID_ID), generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    for p in params:
        p.requires_grad_(False)
    return tuned.eval()


@dataclass
class OVSNetState(NetworkState):
    """``model`` is this video's fine-tuned (online) or int8 copy of the network, if any."""

    tracks: list[int] = field(default_factory=list)
    previous: np.ndarray | None = None  # (h, w, 3) uint8, the last frame
    probabilities: np.ndarray | None = None  # (K, h, w) the tracks' final maps of the last frame
    collections: dict[int, np.ndarray] = field(default_factory=dict)  # track -> (n, D) embeddings
    paths: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PATHS, 0))
    pending: dict[str, Any] | None = field(default=None, repr=False)  # propagate() -> commit()


class OVSNetPropagator(NetworkPropagator):
    """A trained :class:`~vidseg.models.ovsnet.OVSNet` running the one-pass cascade (module docstring).

    Args:
        model: the network (e.g. from :func:`~vidseg.models.checkpoint.load_model`).
        device: where it runs.
        max_side: frames are scaled down so their longer side is at most this (the working size).
        test_size: the detector's shorter side (default: the network's ``test_size``; the paper's 800). The longer
            side may then reach twice that.
        flow: ``dis`` (OpenCV, default) or ``raft`` (torchvision RAFT-small; needs ``flow_weights`` or its file in
            the torch hub cache).
        rho_iou, rho_reid, reid_fraction, collection: the cascade's settings (default: the network config's).
        reid, refine: False leaves the re-ID path / the MGA module out (the ablation).
        refine_candidates: True redraws the IoU and re-ID paths' candidates with MGA too (the paper's reading;
            default False: MGA refines the flow path's template only).
        online_steps, online_lr: fine-tuning on the first given frame (0: off; see the module docstring).
        dtype: ``float32``, or ``int8`` (CPU: the large convolutions of the backbone, FPN, RPN and mask head in int8,
            calibrated on the video's first given frame; a network that is int8 already, an int8 export, runs as
            it is and needs ``int8``).
        inplace: use ``model`` itself instead of a copy.
    """

    name = "ovsnet"
    dtypes = ("float32", "int8")
    size_multiple, upscale = 1, False  # frames are only scaled down, to any size: the detector resizes them

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device = "cpu",
        max_side: int = 480,
        test_size: int | None = None,
        flow: str = "dis",
        flow_weights: str | os.PathLike | None = None,
        rho_iou: float | None = None,
        rho_reid: float | None = None,
        reid_fraction: float | None = None,
        collection: int | None = None,
        reid: bool = True,
        refine: bool = True,
        refine_candidates: bool = False,
        online_steps: int = 0,
        online_lr: float = 1e-5,
        dtype: str = "float32",
        inplace: bool = False,
    ):
        if flow not in FLOW_NAMES:
            raise ValueError(f"flow must be one of {', '.join(FLOW_NAMES)}, got {flow!r}")
        # optimize=False: BatchNorm is not folded, as torchvision's detection backbones freeze theirs
        super().__init__(model, device, max_side, dtype, optimize=False, online_steps=online_steps)
        cfg = model.cfg
        cascade_settings = {"rho_iou": rho_iou, "rho_reid": rho_reid, "reid_fraction": reid_fraction,
                            "collection": collection}
        changes = {k: v for k, v in cascade_settings.items() if v is not None}
        if test_size is not None:
            changes.update(test_size=int(test_size), max_size=max(cfg.max_size, 2 * int(test_size)))
        self.cfg = dataclasses.replace(cfg, **changes)  # validates the values
        self.model = self.prepare(model, inplace)
        self.model.cfg = self.cfg
        self.model.detector.transform.min_size = (self.cfg.test_size,)
        self.model.detector.transform.max_size = self.cfg.max_size
        self.reid, self.refine = bool(reid), bool(refine)
        self.refine_candidates = self.refine and bool(refine_candidates)
        self.online_lr = float(online_lr)
        self.flow = build_flow(flow, flow_weights, self.device)

    def new_state(self) -> OVSNetState:
        return OVSNetState()

    def _detect(self, model: OVSNet, frame: np.ndarray) -> FrameDetections:
        return model.detect([self.frame_tensor(frame)[0]])[0]

    def propagate(self, state: OVSNetState, frame: np.ndarray) -> Prediction:
        if not state.tracks:
            return Prediction.empty(*frame.shape[:2])
        model = self.network(state)
        detections = self._detect(model, frame)
        templates, _ = warp_maps(state.probabilities, self.flow(frame, state.previous))
        candidates = detections.masks.float().cpu().numpy()
        embeddings = detections.embeddings.float().cpu().numpy()
        collections = [state.collections[t] for t in state.tracks]
        decisions = cascade(templates > 0.5, candidates > 0.5, embeddings, collections, self.cfg.rho_iou,
                            self.cfg.rho_reid, self.cfg.reid_fraction, self.reid)
        maps = np.zeros_like(templates)
        for k, (path, j) in enumerate(decisions):
            if path in ("iou", "reid"):
                maps[k] = candidates[j]
            elif path == "flow":
                maps[k] = templates[k]
        redrawn = [k for k, (path, _) in enumerate(decisions)
                   if (path == "flow" and self.refine) or (path in ("iou", "reid") and self.refine_candidates)]
        if redrawn:  # one MGA batch: each mask's box is its extent, its attention the mask itself
            masks = torch.from_numpy(maps[redrawn]).to(self.device)
            maps[redrawn] = model.refine_masks(detections, masks).cpu().numpy()
        joining = {t: embeddings[j] for t, (path, j) in zip(state.tracks, decisions) if path == "iou"}
        counts = [path for path, _ in decisions]
        state.pending = {"detections": detections, "joining": joining, "counts": counts}
        return Prediction(list(state.tracks), maps.astype(np.float32))

    def commit(self, state: OVSNetState, frame: np.ndarray, update: FrameUpdate) -> None:
        pending = state.pending or {}
        maps = update.probabilities.cpu().numpy()
        keep = self.cfg.collection
        collections = {t: c for t, c in state.collections.items() if t in update.tracks and t not in update.given}
        for track, embedding in pending.get("joining", {}).items():
            if track in collections:
                collections[track] = np.concatenate([collections[track], embedding[None]])[-keep:]
        if update.given:
            rows = [update.tracks.index(t) for t in update.given]
            if self.online_steps and state.model is None:
                labels = np.zeros(frame.shape[:2], np.uint8)
                for k in rows:
                    labels[maps[k] > 0.5] = k + 1
                state.model = first_frame_finetune(self.model, frame, labels, self.online_steps, self.online_lr)
                pending = {**pending, "detections": None}  # detections of the network before fine-tuning
            if self.calibrate_video(state, lambda: self._detect(self.model, frame)):
                pending = {**pending, "detections": None}  # detections of the float network
            model = self.network(state)
            detections = pending.get("detections") or self._detect(model, frame)
            given = self._embed_masks(model, detections, maps[rows])
            collections.update(zip(update.given, given))
        for track in update.tracks:
            collections.setdefault(track, np.zeros((0, self.cfg.reid_dim), np.float32))
        paths = dict(state.paths)
        for path in pending.get("counts", []):
            paths[path] += 1
        state.tracks = list(update.tracks)
        state.previous = np.array(frame, dtype=np.uint8)
        state.probabilities = maps.astype(np.float32)
        state.collections, state.paths, state.pending = collections, paths, None

    def _embed_masks(self, model: OVSNet, detections: FrameDetections, masks: np.ndarray) -> list[np.ndarray]:
        """One collection per mask: the (1, D) embedding of its box, or (0, D) for an empty mask."""
        present = (masks > 0.5).reshape(len(masks), -1).any(1)
        out = [np.zeros((0, self.cfg.reid_dim), np.float32) for _ in masks]
        if present.any():
            embedded = model.embed_masks(detections, torch.from_numpy(masks[present] > 0.5)).float().cpu().numpy()
            for k, embedding in zip(np.flatnonzero(present), embedded):
                out[k] = embedding[None]
        return out

    def state_dict(self, state: OVSNetState) -> dict[str, Any]:
        return {"tracks": list(state.tracks), "previous": state.previous, "probabilities": state.probabilities,
                "collections": [state.collections[t] for t in state.tracks], "paths": dict(state.paths),
                **self.video_weights(state)}

    def load_state_dict(self, saved: dict[str, Any]) -> OVSNetState:
        tracks = [int(t) for t in saved["tracks"]]
        collections = {t: np.asarray(c, np.float32).reshape(-1, self.cfg.reid_dim)
                       for t, c in zip(tracks, saved["collections"])}
        previous = None if saved["previous"] is None else np.asarray(saved["previous"], np.uint8)
        probabilities = None if saved["probabilities"] is None else np.asarray(saved["probabilities"], np.float32)
        paths = {k: int(v) for k, v in saved["paths"].items()}
        state = OVSNetState(tracks, previous, probabilities, collections, paths)
        self.resume_video_weights(state, saved, started=bool(tracks))
        return state


build_ovsnet_propagator = OVSNetPropagator.from_checkpoint  # the registry's builder


__all__ = ["PATHS", "OVSNetPropagator", "OVSNetState", "build_ovsnet_propagator", "cascade", "mask_iou"]
