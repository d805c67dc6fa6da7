"""J, F, boundary maps, the tolerance disk and the per-object statistics on hand-built arrays."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from vidseg.evaluation.metrics import (
    Boundary,
    boundary_radius,
    decay_bin_edges,
    disk,
    disk_rectangles,
    f_from_boundaries,
    f_measure,
    jaccard,
    score_frame,
    seg2bmap,
    statistics,
)


def rect(shape, y0, y1, x0, x1):
    mask = np.zeros(shape, dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


# ---------------------------------------------------------------------------------------------- J


def test_jaccard_known_overlap():
    a = rect((20, 30), 0, 10, 0, 10)
    b = rect((20, 30), 0, 10, 5, 15)
    assert jaccard(a, b) == pytest.approx(50 / 150)
    assert jaccard(a, a) == 1.0
    assert jaccard(a, rect((20, 30), 12, 20, 20, 30)) == 0.0


def test_jaccard_both_empty_is_one_and_void_is_ignored():
    empty = np.zeros((8, 8), dtype=bool)
    assert jaccard(empty, empty) == 1.0
    a = rect((20, 30), 0, 10, 0, 10)
    b = rect((20, 30), 0, 10, 5, 15)
    void = rect((20, 30), 0, 10, 10, 15)  # the part of b outside a
    assert jaccard(a, b, void) == pytest.approx(50 / 100)
    # everything void: empty union -> 1
    assert jaccard(a, b, np.ones((20, 30), dtype=bool)) == 1.0


# ---------------------------------------------------------------------------------------------- boundaries


def test_seg2bmap_edge_rules():
    seg = np.zeros((3, 3), dtype=bool)
    seg[2, 2] = True
    expected = np.array([[0, 0, 0], [0, 1, 1], [0, 1, 0]], dtype=bool)
    np.testing.assert_array_equal(seg2bmap(seg), expected)
    b = Boundary.of(seg, 1)
    full = np.zeros((3, 3), dtype=bool)
    full[b.by : b.by + b.bmap.shape[0], b.bx : b.bx + b.bmap.shape[1]] = b.bmap
    np.testing.assert_array_equal(full, expected)
    assert b.count == 3


def test_full_frame_mask_has_no_boundary():
    full = np.ones((6, 9), dtype=bool)
    assert not seg2bmap(full).any()
    assert Boundary.of(full, 2).count == 0


def test_disk_is_skimage_disk_not_opencv_ellipse():
    for r in range(1, 12):
        offsets = np.arange(-r, r + 1)
        expected = (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= r * r).astype(np.uint8)
        np.testing.assert_array_equal(disk(r), expected)
    ellipse = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (17, 17))
    assert not np.array_equal(disk(8), ellipse)
    assert boundary_radius((480, 854)) == 8
    assert boundary_radius((480, 910)) == 9
    assert boundary_radius((480, 1152)) == 10
    assert boundary_radius((480, 854), bound_th=3) == 3


def test_disk_is_the_union_of_its_rectangles():
    for r in range(21):
        union = np.zeros((2 * r + 1, 2 * r + 1), dtype=np.uint8)
        for half_h, half_w in disk_rectangles(r):
            union[r - half_h : r + half_h + 1, r - half_w : r + half_w + 1] = 1
        np.testing.assert_array_equal(union, disk(r))


def reference_f(gt, pred, void=None, bound_th=0.008):
    """Full-frame F exactly as the toolkit defines it (boundaries, disk dilation, special cases)."""
    if void is not None:
        gt, pred = gt & ~void, pred & ~void
    r = boundary_radius(gt.shape, bound_th)
    fb, gb = seg2bmap(pred), seg2bmap(gt)
    fd = cv2.dilate(fb.astype(np.uint8), disk(r)).astype(bool)
    gd = cv2.dilate(gb.astype(np.uint8), disk(r)).astype(bool)
    n_fg, n_gt = fb.sum(), gb.sum()
    if n_fg == 0 and n_gt > 0:
        p, rc = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        p, rc = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        p, rc = 1.0, 1.0
    else:
        p, rc = (fb & gd).sum() / float(n_fg), (gb & fd).sum() / float(n_gt)
    return 0.0 if p + rc == 0 else 2 * p * rc / (p + rc)


def random_mask(rng, shape):
    kind = rng.integers(0, 4)
    h, w = shape
    if kind == 0:
        return rng.random(shape) < rng.random()
    mask = np.zeros(shape, dtype=bool)
    if kind == 1:
        y0, y1 = sorted(rng.integers(0, h + 1, 2))
        x0, x1 = sorted(rng.integers(0, w + 1, 2))
        mask[y0:y1, x0:x1] = True
    elif kind == 2:
        mask[:] = True
    return mask


def test_cropped_boundaries_equal_full_frame_reference():
    rng = np.random.default_rng(1)
    for _ in range(600):
        shape = tuple(int(v) for v in rng.integers(1, 48, 2))
        gt, pred = random_mask(rng, shape), random_mask(rng, shape)
        void = rng.random(shape) < 0.05 if rng.random() < 0.3 else None
        bound_th = float(rng.choice([0.008, 0.05, 0.2, 3.0]))
        assert f_measure(gt, pred, void, bound_th) == reference_f(gt, pred, void, bound_th)


def test_f_special_cases():
    empty = np.zeros((30, 40), dtype=bool)
    blob = rect((30, 40), 5, 20, 5, 25)
    assert f_measure(empty, empty) == 1.0  # neither boundary: P = R = 1
    assert f_measure(blob, empty) == 0.0  # no predicted boundary: P = 1, R = 0
    assert f_measure(empty, blob) == 0.0  # no GT boundary: P = 0, R = 1
    assert f_measure(blob, blob) == 1.0
    # a shift within the tolerance (radius 1 at this size) is a perfect boundary match
    assert boundary_radius((30, 40)) == 1
    assert f_measure(blob, rect((30, 40), 6, 21, 5, 25)) == 1.0
    # a far object matches nothing: P = R = 0 -> F = 0
    assert f_measure(rect((30, 40), 0, 5, 0, 5), rect((30, 40), 20, 30, 30, 40)) == 0.0
    assert f_from_boundaries(Boundary(0), Boundary(0)) == 1.0


def test_score_frame_diagonal_and_all_pairs_agree_with_single_pair_measures():
    rng = np.random.default_rng(2)
    gt = rng.integers(0, 4, (40, 50)).astype(np.uint8)
    gt[:5, :5] = 255
    pred = rng.integers(0, 4, (40, 50)).astype(np.uint8)
    void = gt == 255
    diag = score_frame(gt, pred, [1, 2, 3], [1, 2, 3])
    full = score_frame(gt, pred, [1, 2, 3], [1, 2, 3], pairs="all")
    for k in (1, 2, 3):
        assert diag.J[k - 1] == jaccard(gt == k, pred == k, void)
        assert diag.F[k - 1] == f_measure(gt == k, pred == k, void)
        for p in (1, 2, 3):
            assert full.J[p - 1, k - 1] == jaccard(gt == k, pred == p, void)
            assert full.F[p - 1, k - 1] == f_measure(gt == k, pred == p, void)
    np.testing.assert_array_equal(diag.gt_area, [(gt == k).sum() for k in (1, 2, 3)])


def test_score_frame_on_objects_inside_and_at_the_edges_equals_the_full_frame_reference():
    """Objects that touch the frame's edges (the last-row / last-column boundary rules) and void pixels."""
    rng = np.random.default_rng(3)
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(8, 60, 2))
        gt = np.zeros((h, w), dtype=np.uint8)
        pred = np.zeros((h, w), dtype=np.uint8)
        for ids_map in (gt, pred):
            for k in (1, 2):
                y0, y1 = sorted(int(v) for v in rng.integers(0, h + 1, 2))
                x0, x1 = sorted(int(v) for v in rng.integers(0, w + 1, 2))
                ids_map[y0:y1, x0:x1] = k
        if rng.random() < 0.3:
            gt[rng.random((h, w)) < 0.05] = 255
        bound_th = float(rng.choice([0.008, 0.2, 3.0]))
        scores = score_frame(gt, pred, [1, 2], [1, 2], bound_th=bound_th)
        void = gt == 255
        for k in (1, 2):
            assert scores.F[k - 1] == reference_f(gt == k, pred == k, void, bound_th)
            assert scores.J[k - 1] == jaccard(gt == k, pred == k, void)


def test_void_background_mode_counts_void_as_background():
    gt = np.zeros((20, 20), dtype=np.uint8)
    gt[5:15, 5:15] = 1
    gt[0:5, :] = 255
    pred = np.zeros_like(gt)
    pred[0:15, 5:15] = 1  # covers the object and a void strip
    excluded = score_frame(gt, pred, [1], [1], void="exclude")
    background = score_frame(gt, pred, [1], [1], void="background")
    assert excluded.J[0] == 1.0
    assert background.J[0] == pytest.approx(100 / 150)


# ---------------------------------------------------------------------------------------------- statistics


def test_decay_bins_follow_the_toolkit_rule():
    # ids = round(linspace(1, 10, 5) + 1e-10) - 1 = [0, 2, 5, 7, 9]; bins share their end frames
    assert decay_bin_edges(10) == [(0, 3), (2, 6), (5, 8), (7, 10)]
    assert decay_bin_edges(1) == [(0, 1)] * 4
    values = np.array([1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0])
    mean, recall, decay = statistics(values)
    assert mean == pytest.approx(0.45)
    assert recall == pytest.approx(0.3)  # strictly above 0.5
    assert decay == pytest.approx(1.0 - 0.0)


def test_decay_is_correct_beyond_255_frames():
    values = np.where(np.arange(300) < 150, 1.0, 0.0)
    edges = decay_bin_edges(300)
    assert edges == [(0, 76), (75, 151), (150, 225), (224, 300)]
    assert statistics(values)[2] == 1.0
    # the toolkit's uint8 indices would wrap (299 -> 43) and leave the last bin empty
    wrapped = (np.round(np.linspace(1, 300, 5) + 1e-10) - 1).astype(np.uint8)
    assert values[wrapped[3] : wrapped[4] + 1].size == 0


def test_statistics_are_nan_aware():
    values = np.array([1.0, np.nan, 0.0, 1.0])
    mean, recall, _ = statistics(values)
    assert mean == pytest.approx(2 / 3)
    assert recall == pytest.approx(0.5)  # a NaN frame is not above 0.5, as in the toolkit
    assert all(math.isnan(v) for v in statistics(np.array([])))
