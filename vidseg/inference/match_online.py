"""Online adaptation of ``match_refine`` (opt-in ``--online-steps N``): before a video is segmented, a copy of the
refiner is fine-tuned on augmented copies of the frame whose masks are given, as OSVOS fine-tunes on the first frame.

Each step draws pairs (x0, y0) -> (x1, y1) of random affine versions of the frame and its masks
(:func:`~vidseg.data.transforms.first_frame_affine_pairs`, the S2S online-learning pairs): (x0, y0) is the
memory's anchor, x1 is matched against it as a later frame is, and the refiner learns to draw y1 from match's labels
and x1's features. The feature network and the key head are not changed, so the matching stays that of the shared
model; only the refining decoder learns this video's object and background. Deterministic (a seeded generator), so
a resumed run rebuilds nothing: the tuned weights are in the resume state.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import Tensor

from vidseg.constants import VOID_ID
from vidseg.data.transforms import first_frame_affine_pairs
from vidseg.models.match import memory_labels
from vidseg.models.match_memory import read_memory
from vidseg.models.match_refine import ONLINE_LR, MatchRefiner, object_labels, one_hot, previous_masks, refiner_loss

IOU_WEIGHT = 0.5  # the loss of its training (configs/cpu/match_refine.yaml)


def finetune_refiner(model: MatchRefiner, frame: np.ndarray, labels: np.ndarray, steps: int,
                     lr: float = ONLINE_LR, pairs_per_step: int = 2, seed: int = 0) -> MatchRefiner:
    """A copy of ``model`` (float32) whose refiner is fine-tuned ``steps`` Adam steps on ``frame`` ((H, W, 3) uint8
    RGB at the working size) and ``labels`` ((H, W): row k of the memory is id k + 1; 255 void); the original is not
    touched. Returns it in eval mode, with no parameter requiring gradients."""
    tuned = copy.deepcopy(model).float().eval()
    matching = [tuned.features] + ([tuned.key_head] if tuned.key_head is not None else [])
    frozen = {id(p) for part in matching for p in part.parameters()}  # the memory's keys must not change mid-video
    params = [p for p in tuned.parameters() if id(p) not in frozen]
    count = int(labels[labels != VOID_ID].max(initial=0))
    if steps > 0 and count > 0:
        for p in params:
            p.requires_grad_(True)
        optimizer = torch.optim.Adam(params, lr=lr)
        generator = torch.Generator().manual_seed(seed)
        frame_t = torch.from_numpy(np.array(frame)).permute(2, 0, 1)
        labels_t = torch.from_numpy(np.ascontiguousarray(labels))
        for _ in range(steps):
            loss = _pairs_loss(tuned, first_frame_affine_pairs(frame_t, labels_t, pairs_per_step, generator), count)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    for p in tuned.parameters():
        p.requires_grad_(False)
    return tuned


def _pairs_loss(model: MatchRefiner, pairs, count: int) -> Tensor:
    """The training loss of the refiner ((1 - w) BCE + w soft IoU, void left out) on each pair's second frame."""
    device = next(model.parameters()).device
    n = len(pairs.x0)
    cfg, stride = model.cfg, model.features.stride
    frames = torch.cat([pairs.x0, pairs.x1]).to(device)
    y0, y1 = pairs.y0.to(device).long(), pairs.y1.to(device).long()
    keys, levels = model.encode(frames)
    total = frames.new_zeros(())
    for i in range(n):
        with torch.no_grad():
            anchor = [(keys[i], memory_labels(one_hot(y0[i], count), stride))]
            labels = read_memory(keys[n + i], anchor, [], cfg.top_k, cfg.temperature, cfg.radius)
        rows = torch.full((count,), n + i, dtype=torch.long, device=device)
        before = previous_masks(one_hot(y0[i], count)) if cfg.previous else None  # the pair's first frame
        logits = model.refine(levels, rows, object_labels(labels), tuple(frames.shape[-2:]), before)[:, 0]
        ignore = (y1[i] == VOID_ID)[None].expand(count, -1, -1)
        total = total + refiner_loss(logits, one_hot(y1[i], count), ignore, IOU_WEIGHT)[0]
    return total / n


__all__ = ["finetune_refiner"]
