"""OVSNet's training loss on detector images (SPEC §2.5 / §2.5a): ``L = L_mask + L_loc + L_cls + L_rpn +
reid_weight * L_reid + lambda * L_refine`` (``reid_weight`` 1 in the paper's full-network phase). Used by training
(:mod:`vidseg.training.ovsnet`) and by the first-frame fine-tuning of inference (:mod:`vidseg.inference.ovsnet`).

* Detector: torchvision's Mask R-CNN losses (RPN objectness and box, box classifier and regression, mask).
* Re-ID: per image and object, ``REID_PER_OBJECT`` RPN proposals with IoU >= 0.5 to its box (drawn at random;
  the box itself where there are fewer), embedded and scored with the batch-hard triplet loss on the objects'
  identities (images of the same video give the positives).
* MGA refiner: per image and object, ``REFINE_PER_OBJECT`` boxes, the object's box jittered by up to ``JITTER``
  of its size; the attention over the box is the detector's mask probability (the paper) for half of them and,
  for the other half, the object's true mask seen through another jittered box — a misaligned template like
  the warped mask the cascade's flow path refines. Target: the object's mask over the enlarged box (void pixels
  ignored); pixel-wise cross-entropy with weight ``refine_weight``. At most ``REFINE_CROPS`` of these boxes,
  drawn at random, enter a batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_iou, roi_align

from vidseg.models.losses import batch_hard_triplet_loss
from vidseg.models.ovsnet import MASK_SIDE, OVSNet, mask_boxes

MIN_PIXELS = 16  # smaller objects are not detector targets
REID_PER_OBJECT = 2
REFINE_PER_OBJECT = 2
REFINE_CROPS = 16  # the refiner is the costly part of a training step
JITTER = 0.1
_IGNORE = 255
DETECTOR_PARTS = {"loss_classifier": "classifier", "loss_box_reg": "box", "loss_mask": "mask",
                  "loss_objectness": "rpn_objectness", "loss_rpn_box_reg": "rpn_box"}
PART_KEYS = (*DETECTOR_PARTS.values(), "reid", "refine")


def object_target(objects: list[Tensor], identities: list[int], like: Tensor) -> dict[str, Tensor]:
    """The detector target of one image from its objects' (H, W) bool masks and identities (``like``: any tensor
    on the image's device)."""
    masks = torch.stack(objects) if objects else torch.zeros((0, *like.shape[-2:]), dtype=torch.bool, device=like.device)
    return {"boxes": mask_boxes(masks), "labels": torch.ones(len(objects), dtype=torch.int64, device=like.device),
            "masks": masks.to(torch.uint8), "identity": torch.tensor(identities, dtype=torch.int64, device=like.device)}


def ovsnet_losses(model: OVSNet, images: list[Tensor], targets: list[dict[str, Tensor]], voids: list[Tensor],
                  generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
    """The loss over detector ``images`` ((3, H, W) in [0, 1]) with their ``targets`` (:func:`object_target`) and
    (H, W) void maps, and its parts for logging."""
    originals = [t["masks"] for t in targets]
    image_list, resized, features = model.prepare(images, targets)
    sizes = image_list.image_sizes
    proposals, rpn_losses = model.detector.rpn(image_list, features, resized)
    _, roi_losses = model.detector.roi_heads(features, proposals, sizes, resized)
    detector = {**rpn_losses, **roi_losses}
    total = sum(detector.values())
    parts = {name: float(detector[key].detach()) for key, name in DETECTOR_PARTS.items()}
    reid = _reid_loss(model, features, proposals, resized, sizes, generator)
    refine = _refine_loss(model, features, resized, originals, voids, sizes, generator)
    total = total + model.cfg.reid_weight * reid + model.cfg.refine_weight * refine
    parts.update(reid=float(reid.detach()), refine=float(refine.detach()), total=float(total.detach()))
    return total, parts


def _reid_loss(model: OVSNet, features: dict[str, Tensor], proposals: list[Tensor], targets: list[dict[str, Tensor]],
               sizes: list[tuple[int, int]], generator: torch.Generator) -> Tensor:
    boxes, labels = [], []
    for candidates, target in zip(proposals, targets):
        chosen = []
        overlaps = box_iou(target["boxes"], candidates.detach()) if len(target["boxes"]) else None
        for k, box in enumerate(target["boxes"]):
            good = (overlaps[k] >= 0.5).nonzero().flatten().cpu()
            picks = good[torch.randperm(len(good), generator=generator)[:REID_PER_OBJECT]]
            chosen.append(candidates[picks.to(candidates.device)].detach())
            chosen.append(box[None].expand(REID_PER_OBJECT - len(picks), 4))
            labels.append(target["identity"][k].repeat(REID_PER_OBJECT))
        boxes.append(torch.cat(chosen) if chosen else candidates.new_zeros((0, 4)))
    if not labels:
        return features["0"].sum() * 0.0
    return batch_hard_triplet_loss(model.embed(features, boxes, sizes), torch.cat(labels), model.cfg.reid_margin)


def _jitter(boxes: Tensor, generator: torch.Generator) -> Tensor:
    size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    noise = (torch.rand(boxes.shape, generator=generator) * 2 - 1).to(boxes.device)
    return boxes + noise * JITTER * size


def _refine_loss(model: OVSNet, features: dict[str, Tensor], targets: list[dict[str, Tensor]], originals: list[Tensor],
                 voids: list[Tensor], sizes: list[tuple[int, int]], generator: torch.Generator) -> Tensor:
    boxes, attention_from_truth, truths, voids_in, scales = [], [], [], [], []
    for target, original, void, size in zip(targets, originals, voids, sizes):
        count = len(target["boxes"])
        repeated = target["boxes"].repeat_interleave(REFINE_PER_OBJECT, dim=0)
        boxes.append(_jitter(repeated, generator))
        attention_from_truth.append(torch.arange(len(repeated), device=repeated.device) % 2 == 1)
        truths.append(original.repeat_interleave(REFINE_PER_OBJECT, dim=0))
        voids_in.append(void.expand(count * REFINE_PER_OBJECT, *void.shape))
        scale = (size[0] / original.shape[-2], size[1] / original.shape[-1])
        scales.append(repeated.new_tensor([scale[1], scale[0]] * 2).expand(len(repeated), 4))
    if sum(len(b) for b in boxes) < 2:  # the refiner's BatchNorm needs two crops
        return features["0"].sum() * 0.0
    counts = [len(b) for b in boxes]
    image_of = torch.repeat_interleave(torch.arange(len(boxes)), torch.tensor(counts))
    chosen = torch.randperm(len(image_of), generator=generator)[:REFINE_CROPS].sort().values
    image_of = image_of[chosen]
    boxes = [torch.cat(boxes)[chosen.to(boxes[0].device)][(image_of == i).to(boxes[0].device)] for i in range(len(boxes))]
    pick = chosen.to(boxes[0].device)
    flat_boxes, scale = torch.cat(boxes), torch.cat(scales)[pick]
    from_truth = torch.cat(attention_from_truth)[pick]
    truth = torch.cat(truths)[pick].float()[:, None]
    voids_in = [torch.cat(voids_in)[pick]]
    with torch.no_grad():
        inner = model.mask_probabilities(features, boxes, sizes)
        misaligned = _jitter(flat_boxes, generator) / scale
        rows = torch.arange(len(flat_boxes), device=flat_boxes.device, dtype=flat_boxes.dtype)[:, None]
        seen = roi_align(truth, torch.cat([rows, misaligned], 1), MASK_SIDE, aligned=True)
        inner = torch.where(from_truth[:, None, None, None], seen, inner.float())
    logits, enlarged = model.refine(features, boxes, inner, sizes)
    with torch.no_grad():
        around = torch.cat([rows, torch.cat(enlarged) / scale], 1)
        side = model.cfg.mga_size
        target = (roi_align(truth, around, side, aligned=True)[:, 0] > 0.5).long()
        void = roi_align(torch.cat(voids_in).float()[:, None], around, side, aligned=True)[:, 0] > 0.5
        target[void] = _IGNORE
    return F.cross_entropy(logits.float(), target, ignore_index=_IGNORE)


__all__ = ["DETECTOR_PARTS", "MIN_PIXELS", "PART_KEYS", "object_target", "ovsnet_losses"]
