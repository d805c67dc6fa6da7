"""Losses of vidseg.models.losses against hand-computed values."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from vidseg.models.losses import (
    IGNORE_INDEX,
    balanced_bce,
    border_classes,
    border_loss,
    hungarian_soft_iou,
    segmentation_loss,
    soft_iou_loss,
    soft_iou_matrix,
)


def _np_balanced_bce(x: np.ndarray, y: np.ndarray) -> float:
    """Direct numpy computation for one sample without void pixels."""
    s = 1 / (1 + np.exp(-x))
    pos, neg = y > 0, y == 0
    beta = neg.sum() / y.size
    total = -beta * np.log(s[pos]).sum() - (1 - beta) * np.log(1 - s[neg]).sum()
    return float(total / y.size)


# ---------------------------------------------------------------- balanced BCE


def test_balanced_bce_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 5))
    y = (rng.random((2, 4, 5)) < 0.3).astype(np.int64)
    expected = np.mean([_np_balanced_bce(x[i], y[i]) for i in range(2)])
    got = balanced_bce(torch.tensor(x), torch.tensor(y))
    assert got.item() == pytest.approx(expected, rel=1e-9)
    # (B, 1, H, W) layout gives the same value
    got4 = balanced_bce(torch.tensor(x)[:, None], torch.tensor(y)[:, None])
    assert got4.item() == pytest.approx(expected, rel=1e-9)


def test_balanced_bce_weights_rare_foreground_9x():
    y = torch.zeros(1, 1, 10)
    y[0, 0, 3] = 1  # 10 % foreground -> beta = 0.9
    x = torch.zeros(1, 1, 10, requires_grad=True)
    balanced_bce(x, y).backward()
    g = x.grad.abs()[0, 0]
    assert g[3].item() == pytest.approx(9 * g[0].item())
    assert g[3].item() == pytest.approx(0.9 * 0.5 / 10)


def test_balanced_bce_void_and_ignore():
    x = torch.tensor([[[1.0, -2.0, 0.5, 3.0]]])
    y = torch.tensor([[[1, 0, 255, 0]]])
    expected = _np_balanced_bce(np.array([1.0, -2.0, 3.0]), np.array([1, 0, 0]))
    assert balanced_bce(x, y).item() == pytest.approx(expected)
    ignore = torch.tensor([[[False, False, False, True]]])
    expected = _np_balanced_bce(np.array([1.0, -2.0]), np.array([1, 0]))
    assert balanced_bce(x, y, ignore).item() == pytest.approx(expected)
    # an unlabelled frame (per-sample ignore) leaves the batch mean
    x2 = torch.cat([x, torch.full_like(x, 50.0)])
    y2 = torch.cat([y, torch.zeros_like(y)])
    assert balanced_bce(x2, y2, torch.tensor([False, True])).item() == pytest.approx(balanced_bce(x, y).item())


def test_balanced_bce_degenerate_targets_and_stability():
    x = torch.tensor([[[2.0, -1.0, 0.0]]], requires_grad=True)
    bg = torch.zeros(1, 1, 3)
    # all background: beta falls back to 0.5 -> half of plain BCE, not zero
    plain = torch.nn.functional.binary_cross_entropy_with_logits(x, bg)
    loss = balanced_bce(x, bg)
    assert loss.item() == pytest.approx(0.5 * plain.item())
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    fg = torch.ones(1, 1, 3)
    assert balanced_bce(x, fg).item() == pytest.approx(
        0.5 * torch.nn.functional.binary_cross_entropy_with_logits(x, fg).item()
    )
    # extreme logits stay finite
    big = torch.tensor([[[1e4, -1e4]]], requires_grad=True)
    out = balanced_bce(big, torch.tensor([[[0.0, 1.0]]]))
    out.backward()
    assert math.isfinite(out.item()) and out.item() == pytest.approx(0.5 * 1e4)
    assert torch.isfinite(big.grad).all()
    # nothing valid at all: zero with a graph
    z = torch.zeros(1, 2, 2, requires_grad=True)
    none = balanced_bce(z, torch.full((1, 2, 2), 255))
    none.backward()
    assert none.item() == 0.0 and torch.isfinite(z.grad).all()


# ---------------------------------------------------------------- border classes


def _square(size: int = 13, lo: int = 2, side: int = 9) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    m[lo : lo + side, lo : lo + side] = 1
    return m


def test_border_classes_square_hs2s_setting():
    cls = border_classes(_square(), num_classes=42, max_distance=20)  # rows/cols 2..10 inside
    assert cls.dtype == torch.int64 and cls.shape == (13, 13)
    assert cls[2, 6] == 20  # inside, touching the boundary: inside-near
    assert cls[1, 6] == 21  # 1 px outside: outside-near
    assert cls[0, 6] == 22  # 2 px outside: d = 2, s = 1.5
    assert cls[1, 1] == 21  # diagonal neighbour: d = sqrt 2, s = 0.91
    assert cls[3, 6] == 19  # second ring inside
    assert cls[6, 6] == 16  # centre: d = 5, s = 4.5 -> bin 4
    assert cls[0, 0] == 23  # corner: d = sqrt 8, s = 2.33 -> bin 2


def test_border_classes_square_coarse_bins_and_batch():
    m = torch.from_numpy(np.stack([_square(), np.zeros((13, 13), np.uint8), np.ones((13, 13), np.uint8)]))
    cls = border_classes(m, num_classes=6, max_distance=2)  # 3 + 3 bins of 1 px
    assert cls.shape == (3, 13, 13)
    assert cls[0, 6, 6] == 0  # centre: inside-far
    assert cls[0, 2, 6] == 2  # inside-near
    assert cls[0, 1, 6] == 3  # outside-near
    assert cls[0, 0, 6] == 4
    assert cls[0, 0, 0] == 5  # outside-far (s = 2.33 >= 2)
    assert (cls[1] == 5).all()  # empty mask: every pixel outside-far
    assert (cls[2] == 0).all()  # full mask: every pixel inside-far
    assert cls.min() >= 0 and cls.max() <= 5


def test_border_classes_void_and_bool():
    m = _square()
    m[0, 0] = 255
    cls = border_classes(m, num_classes=42, max_distance=20)
    assert cls[0, 0] == IGNORE_INDEX and cls[6, 6] == 16
    assert torch.equal(border_classes(_square().astype(bool)), border_classes(_square()))
    # far-away pixels land in the tail bins
    big = np.zeros((1, 60, 60), np.uint8)
    big[0, 5:55, 5:55] = 1
    cls = border_classes(big)
    assert cls[0, 30, 30] == 0  # d = 25 inside -> inside-far
    with pytest.raises(ValueError):
        border_classes(np.zeros((2, 2, 2, 2)))


# ---------------------------------------------------------------- border CE, combination


def test_border_loss_with_ignore():
    logits = torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, -1.0]]).reshape(1, 2, 1, 3)  # [class, pixel], C=2
    classes = torch.tensor([[[0, 1, IGNORE_INDEX]]])
    lse = lambda a, b: math.log(math.exp(a) + math.exp(b))
    expected = ((lse(1, 0) - 1) + (lse(0, 3) - 3)) / 2
    assert border_loss(logits, classes).item() == pytest.approx(expected)
    ignore = torch.tensor([[[False, True, False]]])
    assert border_loss(logits, classes, ignore).item() == pytest.approx(lse(1, 0) - 1)
    with pytest.raises(ValueError):
        border_loss(logits, classes[:, :, :2])


def test_segmentation_loss_lambda_combination():
    torch.manual_seed(0)
    target = torch.from_numpy(_square()[None]).long()
    mask_logits = torch.randn(1, 1, 13, 13, requires_grad=True)
    border_logits = torch.randn(1, 42, 13, 13, requires_grad=True)
    total, parts = segmentation_loss(mask_logits, target, border_logits, lam=0.8)
    bce = balanced_bce(mask_logits, target)
    ce = border_loss(border_logits, border_classes(target))
    assert parts["bce"].item() == pytest.approx(bce.item())
    assert parts["border"].item() == pytest.approx(ce.item())
    assert total.item() == pytest.approx(0.8 * bce.item() + 0.2 * ce.item())
    assert parts["total"].item() == pytest.approx(total.item())
    total.backward()
    assert torch.isfinite(mask_logits.grad).all() and torch.isfinite(border_logits.grad).all()
    # without the border head the loss is the balanced BCE alone
    alone, parts2 = segmentation_loss(mask_logits, target)
    assert alone.item() == pytest.approx(bce.item()) and "border" not in parts2
    # the HS2S-code mix 0.2 (-log IoU) + 0.6 BCE + 0.2 CE
    mixed, parts3 = segmentation_loss(mask_logits, target, border_logits, lam=0.75, iou_weight=0.2)
    siou = 1 - soft_iou_loss(torch.sigmoid(mask_logits), target)
    expected = 0.6 * bce.item() + 0.2 * ce.item() + 0.2 * -math.log(siou.item())
    assert mixed.item() == pytest.approx(expected, rel=1e-5)
    assert parts3["log_iou"].item() == pytest.approx(-math.log(siou.item()), rel=1e-5)


def test_all_zero_targets_give_finite_gradients():
    target = torch.zeros(2, 8, 8)
    mask_logits = torch.zeros(2, 8, 8, requires_grad=True)
    border_logits = torch.zeros(2, 6, 8, 8, requires_grad=True)
    total, _ = segmentation_loss(mask_logits, target, border_logits, iou_weight=0.2)
    total.backward()
    assert math.isfinite(total.item())
    assert torch.isfinite(mask_logits.grad).all() and torch.isfinite(border_logits.grad).all()
    probs = torch.zeros(2, 8, 8, requires_grad=True)
    loss = soft_iou_loss(probs, target)
    loss.backward()
    assert loss.item() == pytest.approx(0.0) and torch.isfinite(probs.grad).all()


# ---------------------------------------------------------------- soft IoU and Hungarian matching


def test_soft_iou_values():
    y = torch.tensor([[0, 0, 1, 1, 1, 1, 0, 0]], dtype=torch.float32)
    assert soft_iou_loss(y.clone(), y).item() == pytest.approx(0.0, abs=1e-6)
    disjoint = torch.tensor([[1, 1, 0, 0, 0, 0, 1, 1]], dtype=torch.float32)
    assert soft_iou_loss(disjoint, y).item() == pytest.approx(1.0, abs=1e-6)
    half = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0]], dtype=torch.float32)  # inter 2, union 6
    assert soft_iou_loss(half, y).item() == pytest.approx(2 / 3, abs=1e-6)
    soft = torch.full((1, 8), 0.5)  # inter 2, |p| 4, |y| 4 -> 1 - 2/6
    assert soft_iou_loss(soft, y).item() == pytest.approx(2 / 3, abs=1e-6)
    # void pixels leave out the disagreement
    y_void = y.clone()
    y_void[0, :2] = 255
    y_void[0, 6:] = 255
    assert soft_iou_loss(half, y_void).item() == pytest.approx(0.5, abs=1e-6)  # inter 2, union 4
    per = soft_iou_loss(torch.stack([y[0], disjoint[0]]), torch.stack([y[0], y[0]]), reduction="none")
    assert per.tolist() == pytest.approx([0.0, 1.0], abs=1e-6)


def test_soft_iou_matrix_matches_pairwise_loss():
    rng = torch.Generator().manual_seed(1)
    pred = torch.rand(3, 5, 6, generator=rng)
    gt = (torch.rand(2, 5, 6, generator=rng) > 0.5).long()
    gt[1, 0, 0] = 255
    cost = soft_iou_matrix(pred, gt)
    assert cost.shape == (3, 2)
    for i, j in itertools.product(range(3), range(2)):
        assert cost[i, j].item() == pytest.approx(soft_iou_loss(pred[i : i + 1], gt[j : j + 1]).item(), abs=1e-6)


def test_hungarian_beats_greedy():
    # 1 x 20 frame: gt0 = pixels 0-9, gt1 = pixels 10-19
    gt = torch.zeros(2, 1, 20)
    gt[0, 0, :10] = 1
    gt[1, 0, 10:] = 1
    pred = torch.zeros(3, 1, 20, requires_grad=False)
    pred[0, 0, :15] = 1  # cost gt0 = 1 - 10/15 = 1/3, gt1 = 1 - 5/20 = 3/4
    pred[1, 0, :5] = 1  # cost gt0 = 1/2, gt1 = 1
    # pred 2 is empty: cost 1 against both, must stay unmatched
    pred.requires_grad_(True)
    cost = soft_iou_matrix(pred, gt)
    assert cost.detach().numpy() == pytest.approx(np.array([[1 / 3, 3 / 4], [1 / 2, 1], [1, 1]]), abs=1e-6)
    # greedy takes the cheapest entry (pred 0 -> gt 0, 1/3) and is left with 1 for gt 1: total 4/3
    pairs, loss = hungarian_soft_iou(pred, gt)
    assert pairs == [(1, 0), (0, 1)]  # total 1/2 + 3/4 = 5/4 < 4/3
    assert loss.item() == pytest.approx((1 / 2 + 3 / 4) / 2, abs=1e-6)
    loss.backward()
    assert pred.grad[2].abs().sum() == 0  # the unmatched prediction does not enter the loss
    assert pred.grad[:2].abs().sum() > 0
    # brute force agrees
    best = min(itertools.permutations(range(3), 2), key=lambda p: cost[p[0], 0] + cost[p[1], 1])
    assert [(best[0], 0), (best[1], 1)] == pairs


def test_hungarian_edge_cases():
    pred = torch.rand(2, 4, 4, requires_grad=True)
    pairs, loss = hungarian_soft_iou(pred, torch.zeros(0, 4, 4))
    assert pairs == [] and loss.item() == 0.0
    loss.backward()
    with pytest.raises(ValueError):
        hungarian_soft_iou(torch.rand(1, 4, 4), torch.zeros(2, 4, 4))
    with pytest.raises(ValueError):
        soft_iou_matrix(torch.rand(1, 4, 4), torch.zeros(2, 4, 5))
