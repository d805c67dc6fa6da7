"""Losses of the recurrent VOS family (SPEC §2.2-§2.4, §5).

Conventions shared by every function here:

* Targets are binary per-object masks: ``> 0`` is foreground, ``0`` background and ``255`` **void**
  (DAVIS). Void pixels never enter a loss.
* ``ignore`` is an optional boolean mask, ``True`` = leave this pixel out. It is either pixel-wise
  (same shape as the target) or one flag per sample, shape ``(B,)`` -- the way to mark an unlabelled
  frame (YouTube-VOS labels every 5th frame only). It is combined with the void pixels.
* Mask logits/probabilities and targets may be ``(B, H, W)`` or ``(B, 1, H, W)``.
* Batch reduction: each sample's loss is normalised by its own number of valid pixels, then samples
  are averaged; samples without any valid pixel are left out of the average. When no sample has a
  valid pixel the loss is an exact zero that is still connected to the graph (finite gradients).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from vidseg.constants import VOID_ID

IGNORE_INDEX = -100
"""Border class given to void pixels; the ``ignore_index`` of :func:`border_loss`."""

ArrayLike = np.ndarray | Tensor

__all__ = [
    "IGNORE_INDEX",
    "balanced_bce",
    "batch_hard_triplet_loss",
    "border_classes",
    "border_loss",
    "hungarian_soft_iou",
    "segmentation_loss",
    "soft_iou_loss",
    "soft_iou_matrix",
]


# ----------------------------------------------------------------------------------------------
# helpers


def _squeeze_channel(x: Tensor) -> Tensor:
    """(B, 1, H, W) -> (B, H, W); anything else unchanged."""
    if x.dim() == 4 and x.shape[1] == 1:
        return x[:, 0]
    return x


def _valid_mask(target: Tensor, ignore: Tensor | None) -> Tensor:
    """Boolean mask of pixels that carry a label: not void and not ignored."""
    valid = target != VOID_ID
    if ignore is not None:
        ignore = _squeeze_channel(torch.as_tensor(ignore, device=target.device)).bool()
        if ignore.dim() == 1:
            if ignore.shape[0] != target.shape[0]:
                raise ValueError(f"per-sample ignore has {ignore.shape[0]} entries for a batch of {target.shape[0]}")
            ignore = ignore.view(-1, *([1] * (target.dim() - 1)))
        elif ignore.shape != target.shape:
            raise ValueError(f"ignore shape {tuple(ignore.shape)} does not match target shape {tuple(target.shape)}")
        valid = valid & ~ignore
    return valid


def _mean_over_samples(per_sample: Tensor, has_pixels: Tensor, anchor: Tensor) -> Tensor:
    """Mean of ``per_sample[has_pixels]``; a graph-connected zero when no sample has pixels."""
    if bool(has_pixels.any()):
        return per_sample[has_pixels].mean()
    return anchor.sum() * 0.0


def _check_same_shape(a: Tensor, b: Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{what}: shapes {tuple(a.shape)} and {tuple(b.shape)} differ")
    if a.dim() < 2:
        raise ValueError(f"{what}: expected a batch (B, H, W), got shape {tuple(a.shape)}")


# ----------------------------------------------------------------------------------------------
# balanced BCE (S2S / HS2S segmentation loss)


def balanced_bce(logits: Tensor, target: Tensor, ignore: Tensor | None = None) -> Tensor:
    r"""Class-balanced binary cross-entropy (HED/OSVOS style), as used by S2S, S2S++ and HS2S.

    Per sample, over its valid pixels ``V`` (not void, not ignored), with ``Y+`` / ``Y-`` the
    foreground / background pixels of ``V`` and ``beta = |Y-| / |V|``::

        L = ( -beta     * sum_{Y+} log sigmoid(x)
              -(1-beta) * sum_{Y-} log (1 - sigmoid(x)) ) / |V|

    so that a target with 10 % foreground weighs each foreground error 9x a background one. The log
    terms are computed as ``logsigmoid(x)`` and ``logsigmoid(-x)`` (numerically stable for any logit).

    Degenerate targets: when a sample's valid pixels are all background (object absent or
    occluded) or all foreground, ``beta`` would make the loss vanish, so ``beta = 0.5`` is used
    (plain BCE, halved -- the largest total weight a balanced target can have). Samples without
    valid pixels are left out of the batch mean.

    Args:
        logits: mask logits, (B, H, W) or (B, 1, H, W).
        target: binary mask of the same shape; ``> 0`` foreground, ``255`` void.
        ignore: optional bool mask, pixel-wise or (B,) per sample; ``True`` = leave out.

    Returns:
        Scalar loss (mean over samples with valid pixels).
    """
    logits = _squeeze_channel(logits)
    target = _squeeze_channel(target)
    _check_same_shape(logits, target, "balanced_bce")
    valid = _valid_mask(target, ignore).flatten(1)
    x = logits.flatten(1)
    fg = (target.flatten(1) > 0) & valid
    bg = ~fg & valid

    n_pos = fg.sum(1).to(x.dtype)
    n_neg = bg.sum(1).to(x.dtype)
    n_valid = n_pos + n_neg
    degenerate = (n_pos == 0) | (n_neg == 0)
    beta = torch.where(degenerate, torch.full_like(n_valid, 0.5), n_neg / n_valid.clamp_min(1))

    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    pos_term = torch.where(fg, F.logsigmoid(x), zero).sum(1)
    neg_term = torch.where(bg, F.logsigmoid(-x), zero).sum(1)
    per_sample = -(beta * pos_term + (1 - beta) * neg_term) / n_valid.clamp_min(1)
    return _mean_over_samples(per_sample, n_valid > 0, logits)


# ----------------------------------------------------------------------------------------------
# border classification (S2S++ / HS2S auxiliary loss)


def _bin_distance(s: np.ndarray, n_bins: int, max_distance: float) -> np.ndarray:
    """Bin index ``0 .. n_bins-1`` of non-negative distances; the last bin holds ``s >= max_distance``."""
    if n_bins == 1:
        return np.zeros(s.shape, np.int64)
    width = max_distance / (n_bins - 1)
    return np.clip(np.floor(s / width), 0, n_bins - 1).astype(np.int64)


def border_classes(
    mask: ArrayLike,
    num_classes: int = 42,
    max_distance: float = 20.0,
    void_value: int | None = VOID_ID,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    r"""Border-distance class of every pixel of a binary mask (S2S++ / HS2S border head targets).

    Distance: for each pixel, ``d`` is the Euclidean distance (``cv2.distanceTransform``, DIST_L2,
    precise mask) from its centre to the centre of the nearest pixel on the other side of the
    object boundary; the boundary itself lies on pixel edges, so the distance to the boundary is
    ``s = d - 0.5`` (0.5 for the pixels that touch it). The signed distance is ``+s`` inside and
    ``-s`` outside; it is truncated at ``±max_distance``.

    Bins: ``n_in = num_classes // 2`` inside bins and ``n_out = num_classes - n_in`` outside bins.
    On each side the bin width is ``w = max_distance / (n - 1)`` and bin ``j = min(floor(s / w), n-1)``
    -- ``n - 1`` bins of width ``w`` covering ``[0, max_distance)`` plus one tail bin for
    ``s >= max_distance``. Class indices run from inside-far to outside-far::

        inside pixel :  class = n_in - 1 - j_in        (0 = inside-far, n_in - 1 = inside-near)
        outside pixel:  class = n_in + j_out           (n_in = outside-near, num_classes - 1 = outside-far)

    With the HS2S setting ``num_classes=42, max_distance=20`` this is 21 inside + 21 outside bins of
    1 px each: an inside pixel touching the boundary (``d = 1``) is class 20, an outside pixel
    touching it is class 21; class 0 is ``s >= 20`` inside (``d >= 20.5``) and class 41 is
    ``s >= 20`` outside. An empty mask gives every pixel the outside-far class
    ``num_classes - 1``, a full mask the inside-far class 0.

    Void pixels (``== void_value``, when the mask is not boolean) get ``ignore_index`` and count as
    background for the distances.

    Args:
        mask: binary mask(s), numpy array or torch tensor, (H, W), (B, H, W) or (B, 1, H, W);
            ``> 0`` is the object.
        num_classes: total number of classes (>= 2).
        max_distance: truncation distance in pixels (> 0).
        void_value: label of void pixels, or None for none.
        ignore_index: class given to void pixels.

    Returns:
        int64 CPU tensor of classes with the mask's shape, without a channel dimension.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if max_distance <= 0:
        raise ValueError(f"max_distance must be > 0, got {max_distance}")
    arr = mask.detach().cpu().numpy() if isinstance(mask, Tensor) else np.asarray(mask)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    squeeze = arr.ndim == 2
    if squeeze:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"border_classes expects (H, W) or (B, H, W), got shape {arr.shape}")

    n_in = num_classes // 2
    n_out = num_classes - n_in
    out = np.empty(arr.shape, np.int64)
    for b, m in enumerate(arr):
        if m.dtype == np.bool_ or void_value is None:
            void = np.zeros(m.shape, bool)
        else:
            void = m == void_value
        fg = (m > 0) & ~void
        if not fg.any():
            cls = np.full(m.shape, num_classes - 1, np.int64)
        elif fg.all():
            cls = np.zeros(m.shape, np.int64)
        else:
            fg_u8 = np.ascontiguousarray(fg, dtype=np.uint8)
            # distanceTransform: distance of every non-zero pixel to the nearest zero pixel.
            d_in = cv2.distanceTransform(fg_u8, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
            d_out = cv2.distanceTransform(1 - fg_u8, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
            cls_in = n_in - 1 - _bin_distance(d_in - 0.5, n_in, max_distance)
            cls_out = n_in + _bin_distance(d_out - 0.5, n_out, max_distance)
            cls = np.where(fg, cls_in, cls_out)
        cls[void] = ignore_index
        out[b] = cls
    result = torch.from_numpy(out)
    return result[0] if squeeze else result


def border_loss(
    border_logits: Tensor,
    classes: Tensor,
    ignore: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    r"""Cross-entropy of the border-classification head.

    Per sample, over its valid pixels ``V`` (class != ``ignore_index`` and not ignored)::

        L = -(1/|V|) * sum_{p in V} log softmax(z_p)[c_p]

    then the mean over samples that have valid pixels (graph-connected zero if none).

    Args:
        border_logits: (B, C, H, W) class scores.
        classes: (B, H, W) int64 classes, e.g. from :func:`border_classes`.
        ignore: optional bool mask (B, H, W) or (B,); ``True`` = leave out.
        ignore_index: class value that is left out.
    """
    if border_logits.dim() != 4:
        raise ValueError(f"border_logits must be (B, C, H, W), got shape {tuple(border_logits.shape)}")
    classes = _squeeze_channel(torch.as_tensor(classes)).to(border_logits.device).long()
    b, _, h, w = border_logits.shape
    if classes.shape != (b, h, w):
        raise ValueError(f"classes shape {tuple(classes.shape)} does not match logits {tuple(border_logits.shape)}")
    valid = classes != ignore_index
    if ignore is not None:
        valid = valid & _valid_mask(torch.zeros_like(classes), ignore)
    targets = torch.where(valid, classes, torch.full_like(classes, ignore_index))
    ce = F.cross_entropy(border_logits, targets, ignore_index=ignore_index, reduction="none")
    ce = torch.where(valid, ce, torch.zeros_like(ce)).flatten(1)
    n_valid = valid.flatten(1).sum(1)
    per_sample = ce.sum(1) / n_valid.clamp_min(1).to(ce.dtype)
    return _mean_over_samples(per_sample, n_valid > 0, border_logits)


# ----------------------------------------------------------------------------------------------
# soft IoU (RVOS; also the -log IoU term of the HS2S code)


def _soft_iou_terms(probs: Tensor, target: Tensor, ignore: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample intersection <p,y>, union |p|+|y|-<p,y>, and whether the sample has valid pixels."""
    probs = _squeeze_channel(probs)
    target = _squeeze_channel(target)
    _check_same_shape(probs, target, "soft IoU")
    valid = _valid_mask(target, ignore).flatten(1)
    zero = torch.zeros((), dtype=probs.dtype, device=probs.device)
    p = torch.where(valid, probs.flatten(1), zero)
    y = torch.where(valid, (target.flatten(1) > 0).to(probs.dtype), zero)
    inter = (p * y).sum(1)
    union = p.sum(1) + y.sum(1) - inter
    return inter, union, valid.any(1)


def soft_iou_loss(
    probs: Tensor,
    target: Tensor,
    ignore: Tensor | None = None,
    reduction: str = "mean",
    eps: float = 1e-6,
) -> Tensor:
    r"""Soft Jaccard loss of RVOS, per sample::

        L = 1 - (<p, y> + eps) / (|p|_1 + |y|_1 - <p, y> + eps)

    over the valid pixels (``eps`` makes an empty prediction of an empty target a perfect 0).

    Args:
        probs: foreground probabilities in [0, 1], (B, H, W) or (B, 1, H, W).
        target: binary mask, same shape; ``> 0`` foreground, ``255`` void.
        ignore: optional bool mask, pixel-wise or (B,); ``True`` = leave out.
        reduction: ``"mean"`` (over samples with valid pixels) or ``"none"`` ((B,) losses; 0 for a
            sample without valid pixels).
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    inter, union, has_pixels = _soft_iou_terms(probs, target, ignore)
    per_sample = 1 - (inter + eps) / (union + eps)
    if reduction == "none":
        return torch.where(has_pixels, per_sample, torch.zeros_like(per_sample))
    return _mean_over_samples(per_sample, has_pixels, probs)


def soft_iou_matrix(pred: Tensor, gt: Tensor, ignore: Tensor | None = None, eps: float = 1e-6) -> Tensor:
    r"""Pairwise soft-IoU cost between N predicted and M ground-truth masks of one frame.

    ``cost[i, j] = 1 - (<p_i, y_j> + eps) / (|p_i|_1 + |y_j|_1 - <p_i, y_j> + eps)``.

    Args:
        pred: (N, H, W) probabilities.
        gt: (M, H, W) binary masks (``> 0`` foreground, ``255`` void).
        ignore: optional (H, W) bool mask of pixels to leave out (void pixels of ``gt`` are left
            out per ground-truth object automatically).

    Returns:
        (N, M) cost matrix, differentiable with respect to ``pred``.
    """
    if pred.dim() != 3 or gt.dim() != 3 or pred.shape[1:] != gt.shape[1:]:
        raise ValueError(f"soft_iou_matrix expects (N, H, W) and (M, H, W), got {tuple(pred.shape)}, {tuple(gt.shape)}")
    valid = gt != VOID_ID  # (M, H, W)
    if ignore is not None:
        ignore = torch.as_tensor(ignore, device=gt.device).bool()
        if ignore.shape != gt.shape[1:]:
            raise ValueError(f"ignore shape {tuple(ignore.shape)} does not match frame {tuple(gt.shape[1:])}")
        valid = valid & ~ignore
    p = pred.flatten(1)  # (N, P)
    v = valid.flatten(1).to(p.dtype)  # (M, P)
    y = ((gt.flatten(1) > 0) & valid.flatten(1)).to(p.dtype)  # (M, P)
    inter = p @ y.T  # (N, M)
    p_sum = p @ v.T  # |p_i| over the pixels valid for gt j
    union = p_sum + y.sum(1)[None, :] - inter
    return 1 - (inter + eps) / (union + eps)


def hungarian_soft_iou(
    pred: Tensor, gt: Tensor, ignore: Tensor | None = None, eps: float = 1e-6
) -> tuple[list[tuple[int, int]], Tensor]:
    """Match predictions to ground-truth objects by the Hungarian algorithm on the soft-IoU cost
    (RVOS), and return the matched pairs and the mean soft-IoU loss over them.

    Every ground-truth object is matched to exactly one prediction; unmatched predictions (extra
    object slots) do not enter the loss.

    Args:
        pred: (N, H, W) probabilities, N >= M.
        gt: (M, H, W) binary masks.
        ignore: optional (H, W) bool mask of pixels to leave out.

    Returns:
        ``(pairs, loss)``: ``pairs`` is a list of ``(pred_index, gt_index)`` sorted by ``gt_index``;
        ``loss`` the mean matched cost (a graph-connected zero when M == 0).
    """
    if pred.dim() != 3 or gt.dim() != 3:
        raise ValueError(f"hungarian_soft_iou expects (N, H, W) and (M, H, W), got {tuple(pred.shape)}, {tuple(gt.shape)}")
    if pred.shape[0] < gt.shape[0]:
        raise ValueError(f"{pred.shape[0]} predictions cannot cover {gt.shape[0]} ground-truth objects")
    if gt.shape[0] == 0:
        return [], pred.sum() * 0.0
    cost = soft_iou_matrix(pred, gt, ignore, eps)
    rows, cols = linear_sum_assignment(cost.detach().cpu().double().numpy())
    order = np.argsort(cols)
    rows, cols = rows[order], cols[order]
    pairs = [(int(r), int(c)) for r, c in zip(rows, cols)]
    idx_r = torch.as_tensor(rows, dtype=torch.long, device=cost.device)
    idx_c = torch.as_tensor(cols, dtype=torch.long, device=cost.device)
    return pairs, cost[idx_r, idx_c].mean()


def batch_hard_triplet_loss(embeddings: Tensor, labels: Tensor, margin: float = 1.0) -> Tensor:
    """Batch-hard triplet loss (OVSNet's re-ID): for every anchor with a positive and a negative in the batch,
    ``relu(d(hardest positive) - d(hardest negative) + margin)`` on Euclidean distances, mean over those anchors
    (a graph-connected zero when there is none).

    Args:
        embeddings: (N, D).
        labels: (N,) identity of each embedding.
    """
    if embeddings.dim() != 2 or labels.shape != embeddings.shape[:1]:
        raise ValueError(f"expected (N, D) embeddings and (N,) labels, got {tuple(embeddings.shape)}, {tuple(labels.shape)}")
    x = embeddings.float()
    squared = (x[:, None] - x[None]).pow(2).sum(-1)
    distance = torch.sqrt(squared.clamp_min(1e-12))  # the clamp keeps the gradient finite at d = 0
    same = labels[:, None] == labels[None]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positive, negative = same & ~eye, ~same
    anchors = positive.any(1) & negative.any(1)
    if not bool(anchors.any()):
        return embeddings.sum() * 0.0
    hardest_positive = distance.masked_fill(~positive, float("-inf")).amax(1)
    hardest_negative = distance.masked_fill(~negative, float("inf")).amin(1)
    return F.relu(hardest_positive - hardest_negative + margin)[anchors].mean()


# ----------------------------------------------------------------------------------------------
# the HS2S / S2S++ combination


def segmentation_loss(
    mask_logits: Tensor,
    target: Tensor,
    border_logits: Tensor | None = None,
    lam: float = 0.8,
    ignore: Tensor | None = None,
    *,
    border_target: Tensor | None = None,
    max_distance: float = 20.0,
    iou_weight: float = 0.0,
    eps: float = 1e-6,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""S2S++ / HS2S training loss::

        L = lam * balanced_bce + (1 - lam) * border_ce          (paper, lam = 0.8)

    With ``border_logits=None`` the border term is dropped and ``L = balanced_bce`` (not scaled by
    ``lam``). With ``iou_weight = w > 0`` a ``-log(soft IoU)`` term is mixed in as in the official
    HS2S code (SPEC §5)::

        L = (1 - w) * (lam * balanced_bce + (1 - lam) * border_ce) + w * (-log sIoU)

    ``w = 0.2, lam = 0.75`` gives that code's ``0.2 (-log IoU) + 0.6 BCE + 0.2 CE``; ``sIoU`` is
    computed from ``sigmoid(mask_logits)`` and averaged over samples with valid pixels.

    Args:
        mask_logits: (B, H, W) or (B, 1, H, W) mask logits.
        target: binary mask of the same shape (``255`` void).
        border_logits: optional (B, C, H, W) border-class scores; C is the number of classes.
        lam: weight of the segmentation term.
        ignore: optional bool mask, pixel-wise or (B,); ``True`` = leave out (applies to all terms).
        border_target: precomputed border classes (B, H, W); computed from ``target`` with
            :func:`border_classes` (``num_classes = C``, ``max_distance``) when omitted.
        max_distance: truncation distance for the computed border classes.
        iou_weight: weight of the ``-log soft IoU`` term (0 = off).

    Returns:
        ``(total, components)``; ``components`` holds detached ``"bce"``, ``"border"`` (if used),
        ``"log_iou"`` (if used) and ``"total"`` for logging.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    if not 0.0 <= iou_weight <= 1.0:
        raise ValueError(f"iou_weight must be in [0, 1], got {iou_weight}")
    mask_logits = _squeeze_channel(mask_logits)
    target = _squeeze_channel(target)
    bce = balanced_bce(mask_logits, target, ignore)
    parts: dict[str, Tensor] = {"bce": bce.detach()}
    if border_logits is None:
        total = bce
    else:
        if border_target is None:
            border_target = border_classes(target, num_classes=border_logits.shape[1], max_distance=max_distance)
        border_ignore = ignore
        if border_logits.shape[-2:] != border_target.shape[-2:]:  # a decoder that stops short of full resolution
            size = border_logits.shape[-2:]
            border_target = F.interpolate(border_target[:, None].float(), size=size, mode="nearest")[:, 0].long()
            if ignore is not None and ignore.dim() > 1:
                border_ignore = F.interpolate(_squeeze_channel(ignore)[:, None].float(), size=size, mode="nearest")[:, 0] > 0
        border = border_loss(border_logits, border_target, border_ignore)
        parts["border"] = border.detach()
        total = lam * bce + (1 - lam) * border
    if iou_weight > 0:
        inter, union, has_pixels = _soft_iou_terms(torch.sigmoid(mask_logits), target, ignore)
        neg_log = -torch.log((inter + eps) / (union + eps))
        log_iou = _mean_over_samples(neg_log, has_pixels, mask_logits)
        parts["log_iou"] = log_iou.detach()
        total = (1 - iou_weight) * total + iou_weight * log_iou
    parts["total"] = total.detach()
    return total, parts
