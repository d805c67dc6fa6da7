"""Online learning (S2S-OL): fine-tune a copy of the network on one video's annotated first frame."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from vidseg.config.schema import LossConfig
from vidseg.constants import VOID_ID
from vidseg.data.transforms import first_frame_affine_pairs
from vidseg.inference.flow import warp_to_frame
from vidseg.models.losses import segmentation_loss


def online_finetune(
    model: nn.Module,
    frame: np.ndarray,
    mask: np.ndarray,
    steps: int,
    lr: float = 1e-5,
    batch_size: int = 4,
    seed: int = 0,
    loss_cfg: LossConfig | None = None,
) -> nn.Module:
    """A fine-tuned copy of ``model`` (the original is not touched).

    Each step draws ``batch_size`` pairs (x0, y0) -> (x1, y1) of random affine versions of ``frame``
    ((H, W, 3) uint8 RGB, H and W multiples of 32) and ``mask`` ((H, W) ids); each pair trains one
    random object: the state comes from (x0, y0) and the network predicts y1 on x1. Adam at ``lr``.
    """
    loss_cfg = loss_cfg or LossConfig()
    tuned = copy.deepcopy(model).train()
    ids = [int(i) for i in np.unique(mask) if i not in (0, VOID_ID)]
    if steps <= 0 or not ids:
        return tuned.eval()
    device = next(tuned.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in tuned.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    frame_t = torch.from_numpy(np.array(frame)).permute(2, 0, 1)  # a copy: frames may be read-only
    mask_t = torch.from_numpy(np.ascontiguousarray(mask))
    for _ in range(steps):
        pairs = first_frame_affine_pairs(frame_t, mask_t, batch_size, generator)
        pick = torch.tensor(ids)[torch.randint(len(ids), (batch_size,), generator=generator)].view(-1, 1, 1)
        y0 = (pairs.y0 == pick).float().unsqueeze(1).to(device)
        y1 = (pairs.y1 == pick).float().unsqueeze(1).to(device)
        void = (pairs.y1 == VOID_ID).to(device)
        x0, x1 = pairs.x0.to(device), pairs.x1.to(device)
        state = tuned.init_state(x0, y0)
        out, _ = tuned.step(x1, y0, state, warp_to_frame(y0, x1, x0) if tuned.cfg.flow_prior else None)
        loss, _ = segmentation_loss(out.logits, y1, out.border_logits, loss_cfg.lam, void,
                                    max_distance=loss_cfg.max_distance, iou_weight=loss_cfg.iou_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return tuned.eval()


__all__ = ["online_finetune"]
