"""Per-frame region (J) and boundary (F) measures, and per-object statistics over frames.

The numbers are those of the official DAVIS 2017 evaluation toolkit
(``davisvideochallenge/davis2017-evaluation``, ``davis2017/metrics.py`` and ``utils.py``); the code
is our own and organised for speed:

* **J** (region similarity) is the Jaccard index ``|A∩B| / |A∪B|`` over non-void pixels, 1 when the
  union is empty.
* **F** (boundary accuracy) compares 1-pixel boundary maps built like the toolkit's ``seg2bmap``
  (a pixel is on the boundary when it differs from its right, lower or lower-right neighbour; on the
  last row only the right neighbour counts, on the last column only the lower one, and the
  bottom-right pixel is never a boundary pixel). Each map is dilated with a disk of radius
  ``ceil(0.008 * sqrt(H² + W²))`` — scikit-image's ``disk(r)``, i.e. every offset with
  ``dx² + dy² <= r²`` (not OpenCV's ``MORPH_ELLIPSE``, which differs on the rim). Precision is the
  fraction of predicted boundary pixels within the dilated ground-truth boundary, recall the converse;
  no predicted and some GT boundary gives P=1, R=0; some predicted and no GT boundary P=0, R=1; neither
  P=R=1; ``F = 2PR / (P + R)`` or 0 when ``P + R = 0``.

Void: the toolkit states that GT void pixels (255) are left out; the released code actually zeroes
255 before it builds its void mask, so it counts void as background. ``void="exclude"`` (default)
follows the stated rule, ``void="background"`` the released behaviour; the two agree whenever the
ground truth has no void pixel (true of the DAVIS 2017 annotations in the conformance set).

Speed (identical numbers): a mask's boundary is computed only inside its bounding box (plus the
one-pixel margin that ``seg2bmap`` reaches). No dilation is computed: the disk is a union of a few
rectangles (:func:`disk_rectangles`), so a boundary pixel lies in the other boundary's dilation when one of
those rectangles centred on it holds one of the other's pixels, which a summed-area table of the other
boundary answers with four look-ups; the largest rectangle settles most pixels and the others are looked
up only for the rest. Each mask's boundary and table are computed once per frame (:class:`Boundary`), so
scoring many proposal x object pairs (unsupervised protocol) costs two overlap counts per pair. Nothing is
ever stacked over frames or objects.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import cv2
import numpy as np

from vidseg.constants import VOID_ID

BOUND_TH = 0.008
N_DECAY_BINS = 4

__all__ = [
    "BOUND_TH",
    "Boundary",
    "boundary_radius",
    "decay_bin_edges",
    "disk",
    "f_measure",
    "jaccard",
    "seg2bmap",
    "statistics",
]


# --------------------------------------------------------------------------------------------------
# boundary maps and tolerance disk


def boundary_radius(shape: tuple[int, int], bound_th: float = BOUND_TH) -> int:
    """Dilation radius in pixels: ``bound_th`` itself when >= 1, else ``ceil(bound_th * diagonal)``."""
    if bound_th >= 1:
        return int(bound_th)
    return int(np.ceil(bound_th * np.linalg.norm(shape[:2])))


_DISKS: dict[int, np.ndarray] = {}


def disk(radius: int) -> np.ndarray:
    """(2r+1, 2r+1) uint8 disk: 1 where ``x² + y² <= r²`` (scikit-image's ``disk``, strict radius)."""
    radius = int(radius)
    kernel = _DISKS.get(radius)
    if kernel is None:
        offsets = np.arange(-radius, radius + 1)
        kernel = ((offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius * radius).astype(np.uint8)
        _DISKS[radius] = kernel
    return kernel


_DISK_RECTS: dict[int, np.ndarray] = {}


def disk_rectangles(radius: int) -> np.ndarray:
    """``(k, 2)`` int array of rectangle half-sizes ``(half_height, half_width)`` whose union is :func:`disk`,
    largest area first.

    For each distinct half-width ``w`` of the disk's rows, the rectangle of half-width ``w`` and
    half-height ``max{|dy| : row dy is at least w wide}``.
    """
    radius = int(radius)
    rects = _DISK_RECTS.get(radius)
    if rects is None:
        widths = [math.isqrt(radius * radius - dy * dy) for dy in range(radius + 1)]
        halves = [(max(dy for dy in range(radius + 1) if widths[dy] >= w), w) for w in set(widths)]
        halves.sort(key=lambda hw: (-(2 * hw[0] + 1) * (2 * hw[1] + 1), hw))
        rects = np.array(halves, dtype=np.int64)
        _DISK_RECTS[radius] = rects
    return rects


def seg2bmap(mask: np.ndarray) -> np.ndarray:
    """Full-frame 1-pixel boundary map (bool, same shape) of a binary mask, as the toolkit's ``seg2bmap``.

    Only used as a readable reference; the scorer uses :class:`Boundary`, which is exactly equal on the
    mask's bounding box and zero elsewhere.
    """
    seg = np.asarray(mask).astype(bool)
    if seg.ndim != 2:
        raise ValueError(f"seg2bmap needs a 2-D mask, got shape {seg.shape}")
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    bmap = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    bmap[-1, :] = seg[-1, :] ^ east[-1, :]
    bmap[:, -1] = seg[:, -1] ^ south[:, -1]
    bmap[-1, -1] = False
    return bmap


def _bounding_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(y0, x0, y1, x1) of the non-zero pixels of a 2-D bool/uint8 array, exclusive ends; None if empty."""
    x, y, w, h = cv2.boundingRect(mask.view(np.uint8) if mask.dtype == bool else mask)
    if w == 0 or h == 0:
        return None
    return y, x, y + h, x + w


def _corner_offsets(radius: int, stride: int) -> np.ndarray:
    """``(k, 4)`` flat offsets, in a summed-area table of row length ``stride``, of the corners (signs +, -, -, +)
    of each :func:`disk_rectangles` rectangle centred on a pixel's entry."""
    half_h, half_w = disk_rectangles(radius).T
    rows = np.stack([half_h + 1, -half_h, half_h + 1, -half_h], axis=1)
    cols = np.stack([half_w + 1, half_w + 1, -half_w, -half_w], axis=1)
    return rows * stride + cols


class Boundary:
    """Boundary map of one binary mask, stored as a crop with its offset.

    ``count`` is the number of boundary pixels; ``bmap`` (bool) is the boundary's tight bounding
    box at ``(by, bx)``. An empty boundary has ``count == 0``. The pixel coordinates and a summed-area
    table of the map (for :meth:`matched`) are computed on first use and kept.
    """

    __slots__ = ("_points", "_table", "bmap", "bx", "by", "count", "radius")

    def __init__(self, count: int = 0, bmap: np.ndarray | None = None, by: int = 0, bx: int = 0, radius: int = 0):
        self.count, self.bmap, self.by, self.bx, self.radius = count, bmap, by, bx, radius
        self._points = None
        self._table = None

    @classmethod
    def of(cls, mask: np.ndarray, radius: int, box: tuple[int, int, int, int] | None = None) -> Boundary:
        """Boundary of a 2-D bool mask (the full frame); matching uses :func:`disk` of ``radius``.

        ``box`` may give the mask's bounding box when the caller already has it.
        """
        height, width = mask.shape
        if box is None:
            box = _bounding_box(mask)
        if box is None:
            return cls(0)
        y0, x0, y1, x1 = box
        # a pixel can only be on the boundary inside the box grown by one pixel up and left
        ya, xa = max(y0 - 1, 0), max(x0 - 1, 0)
        hh, ww = y1 - ya, x1 - xa
        padded = np.zeros((hh + 1, ww + 1), dtype=bool)
        src = mask[ya : y1 + 1, xa : x1 + 1]
        padded[: src.shape[0], : src.shape[1]] = src
        seg = padded[:hh, :ww]
        east = padded[:hh, 1:]
        south = padded[1:, :ww]
        bmap = seg ^ east
        bmap |= seg ^ south
        bmap |= seg ^ padded[1:, 1:]
        last_row, last_col = y1 == height, x1 == width
        if last_row:
            bmap[-1, :] = seg[-1, :] ^ east[-1, :]
        if last_col:
            bmap[:, -1] = seg[:, -1] ^ south[:, -1]
        if last_row and last_col:
            bmap[-1, -1] = False
        tight = _bounding_box(bmap)
        if tight is None:  # e.g. a mask covering the whole frame has no boundary
            return cls(0)
        ty0, tx0, ty1, tx1 = tight
        bmap = bmap[ty0:ty1, tx0:tx1]
        return cls(int(np.count_nonzero(bmap)), bmap, ya + ty0, xa + tx0, radius)

    @property
    def rect(self) -> tuple[int, int, int, int]:
        """(y0, x0, y1, x1) of the boundary map (exclusive ends)."""
        if self.bmap is None:
            return (0, 0, 0, 0)
        return (self.by, self.bx, self.by + self.bmap.shape[0], self.bx + self.bmap.shape[1])

    def points(self) -> np.ndarray:
        """Flat indices of the boundary pixels in the map (row-major in ``bmap``)."""
        if self._points is None:
            self._points = np.flatnonzero(self.bmap)
        return self._points

    def _corner_table(self) -> tuple[np.ndarray, np.ndarray]:
        """Flat summed-area table of the map padded by ``2 * radius``, and the flat offsets of the four
        corners (signs +, -, -, +) of each disk rectangle, largest first, from a pixel's table entry."""
        if self._table is None:
            pad = 2 * self.radius
            canvas = cv2.copyMakeBorder(self.bmap.view(np.uint8), pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
            table = cv2.integral(canvas, sdepth=cv2.CV_32S)
            self._table = (table.ravel(), _corner_offsets(self.radius, table.shape[1]))
        return self._table

    def matched(self, other: Boundary) -> int:
        """Number of this boundary's pixels within the disk of ``other``'s radius of one of ``other``'s pixels
        (i.e. inside ``other``'s dilated boundary).

        Each pixel counts ``other``'s pixels in the rectangles of the disk's decomposition
        (:func:`disk_rectangles`) from a summed-area table, four look-ups per rectangle: first the
        largest rectangle for every pixel, then the others for the pixels it did not settle.
        """
        if self.count == 0 or other.count == 0:
            return 0
        r = other.radius
        oy0, ox0, oy1, ox1 = other.rect
        width = self.bmap.shape[1]
        flat = self.points()
        ys, xs = flat // width + self.by, flat % width + self.bx
        y0, x0, y1, x1 = self.rect
        if not (oy0 - r <= y0 and y1 <= oy1 + r and ox0 - r <= x0 and x1 <= ox1 + r):
            near = (ys >= oy0 - r) & (ys < oy1 + r) & (xs >= ox0 - r) & (xs < ox1 + r)
            ys, xs = ys[near], xs[near]
            if ys.size == 0:
                return 0
        table, corners = other._corner_table()
        stride = ox1 - ox0 + 4 * r + 1
        entry = (ys - (oy0 - 2 * r)) * stride + (xs - (ox0 - 2 * r))
        v = table[entry[:, None] + corners[0]]
        settled = (v[:, 0] - v[:, 1] - v[:, 2] + v[:, 3]) > 0
        hits = int(np.count_nonzero(settled))
        rest = entry[~settled]
        if rest.size and len(corners) > 1:
            v = table[rest[:, None] + corners[1:].ravel()].reshape(rest.size, -1, 4)
            inside = v[..., 0] - v[..., 1] - v[..., 2] + v[..., 3]
            hits += int(np.count_nonzero(inside.any(axis=1)))
        return hits


def f_from_boundaries(pred: Boundary, gt: Boundary) -> float:
    """Boundary F-measure of a predicted against a ground-truth :class:`Boundary` (toolkit special cases)."""
    n_fg, n_gt = pred.count, gt.count
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = pred.matched(gt) / float(n_fg)
        recall = gt.matched(pred) / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def j_from_counts(intersection: int, union: int) -> float:
    """Jaccard index from pixel counts; 1 when the union is empty."""
    return 1.0 if union == 0 else intersection / union


# --------------------------------------------------------------------------------------------------
# convenience single-pair measures (arrays)


def _binary_pair(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None):
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    gt = gt if gt.dtype == bool else gt.astype(bool)
    pred = pred if pred.dtype == bool else pred.astype(bool)
    if gt.shape != pred.shape or gt.ndim != 2:
        raise ValueError(f"masks must be 2-D and of equal shape, got {gt.shape} and {pred.shape}")
    if void is not None:
        void = np.asarray(void).astype(bool)
        if void.shape != gt.shape:
            raise ValueError(f"void mask shape {void.shape} differs from mask shape {gt.shape}")
        keep = ~void
        gt, pred = gt & keep, pred & keep
    return gt, pred


def jaccard(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> float:
    """J of one binary prediction against one binary ground-truth mask; ``void`` pixels are ignored."""
    gt, pred = _binary_pair(gt, pred, void)
    gbox, pbox = _bounding_box(gt), _bounding_box(pred)
    intersection = _overlap_count(gt, gbox, pred, pbox)
    union = _count(gt, gbox) + _count(pred, pbox) - intersection
    return j_from_counts(intersection, union)


def f_measure(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None, bound_th: float = BOUND_TH) -> float:
    """Boundary F of one binary prediction against one binary ground truth; ``void`` pixels are removed
    from both masks before their boundaries are taken (as the toolkit does)."""
    gt, pred = _binary_pair(gt, pred, void)
    radius = boundary_radius(gt.shape, bound_th)
    return f_from_boundaries(Boundary.of(pred, radius), Boundary.of(gt, radius))


# --------------------------------------------------------------------------------------------------
# statistics over frames


def decay_bin_edges(n_frames: int, n_bins: int = N_DECAY_BINS) -> list[tuple[int, int]]:
    """Frame-index ranges ``[start, stop)`` of the decay bins for a per-object series of ``n_frames``.

    The toolkit takes ``ids = round(linspace(1, n, 5) + 1e-10) - 1`` and bin ``i`` as
    ``values[ids[i] : ids[i+1] + 1]``, so consecutive bins share their boundary frame. It stores
    ``ids`` as ``uint8``, which wraps for series longer than 256 frames and then silently gives a
    wrong decay; we keep the same rule with integer indices of full width, so our decay equals the
    toolkit's for every series up to 256 frames and is correct beyond.
    """
    if n_frames <= 0:
        return [(0, 0)] * n_bins
    ids = (np.round(np.linspace(1, n_frames, n_bins + 1) + 1e-10) - 1).astype(np.int64)
    return [(int(ids[i]), int(ids[i + 1]) + 1) for i in range(n_bins)]


def _nanmean(values: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        return float(np.nanmean(values)) if values.size else math.nan


def statistics(values: np.ndarray) -> tuple[float, float, float]:
    """(mean, recall, decay) of a per-frame series, as the toolkit's ``db_statistics``.

    mean = NaN-aware mean; recall = fraction of frames above 0.5 (a NaN frame counts as not above,
    as in the toolkit); decay = NaN-aware mean of the first bin minus that of the last bin
    (:func:`decay_bin_edges`). An empty series gives NaNs.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0:
        return math.nan, math.nan, math.nan
    mean = _nanmean(values)
    recall = float(np.mean(values > 0.5))
    edges = decay_bin_edges(values.size)
    first, last = values[edges[0][0] : edges[0][1]], values[edges[-1][0] : edges[-1][1]]
    decay = _nanmean(first) - _nanmean(last)
    return mean, recall, decay


# --------------------------------------------------------------------------------------------------
# one frame, many objects


@dataclass
class FrameScores:
    """J and F of one frame. ``pairs="diagonal"``: ``J[i]``/``F[i]`` score prediction id ``pred_ids[i]``
    against GT id ``gt_ids[i]``; ``pairs="all"``: ``J[p, g]``/``F[p, g]`` for every prediction x GT id.
    ``gt_area[i]`` is the pixel count of GT object ``gt_ids[i]``."""

    J: np.ndarray
    F: np.ndarray
    gt_area: np.ndarray


def score_frame(
    gt: np.ndarray,
    pred: np.ndarray,
    gt_ids: list[int],
    pred_ids: list[int],
    *,
    pairs: str = "diagonal",
    radius: int | None = None,
    void: str = "exclude",
    bound_th: float = BOUND_TH,
) -> FrameScores:
    """Score one frame of id maps (``(H, W)`` uint8, 255 = void in ``gt``).

    ``void="exclude"`` leaves GT void pixels out of every measure (the rule the DAVIS toolkit states);
    ``void="background"`` treats them as background, which is what the released toolkit actually
    computes (it zeroes 255 before building its void mask). ``pred`` ids not listed are background.
    """
    gt = np.asarray(gt, dtype=np.uint8)
    pred = np.asarray(pred, dtype=np.uint8)
    if gt.shape != pred.shape:
        raise ValueError(f"GT shape {gt.shape} differs from prediction shape {pred.shape}")
    if radius is None:
        radius = boundary_radius(gt.shape, bound_th)
    n_g, n_p = len(gt_ids), len(pred_ids)
    void_mask = None
    if void == "exclude":
        void_mask = gt == VOID_ID
        if not void_mask.any():
            void_mask = None
    elif void != "background":
        raise ValueError(f"void must be 'exclude' or 'background', got {void!r}")

    if pairs == "diagonal":
        if n_g != n_p:
            raise ValueError("diagonal scoring needs as many prediction ids as GT ids")
        j = np.empty(n_g)
        f = np.empty(n_g)
        gt_area = np.zeros(n_g, dtype=np.int64)
        for i in range(n_g):
            gm = gt == gt_ids[i]
            pm = pred == pred_ids[i]
            if void_mask is not None:
                pm &= ~void_mask
            gbox, pbox = _bounding_box(gm), _bounding_box(pm)
            a_g = _count(gm, gbox)
            a_p = _count(pm, pbox)
            a = _overlap_count(gm, gbox, pm, pbox)
            gt_area[i] = a_g
            j[i] = j_from_counts(a, a_g + a_p - a)
            gb = Boundary.of(gm, radius, gbox) if gbox is not None else Boundary(0)
            pb = Boundary.of(pm, radius, pbox) if pbox is not None else Boundary(0)
            f[i] = f_from_boundaries(pb, gb)
        return FrameScores(j, f, gt_area)
    if pairs != "all":
        raise ValueError(f"pairs must be 'diagonal' or 'all', got {pairs!r}")

    # every mask, its bounding box and its boundary once; then each pair costs two overlap counts
    gt_masks = [gt == g for g in gt_ids]
    gt_boxes = [_bounding_box(m) for m in gt_masks]
    gt_area = np.array([_count(m, b) for m, b in zip(gt_masks, gt_boxes)], dtype=np.int64)
    gt_bounds = [Boundary.of(m, radius, b) if b is not None else Boundary(0) for m, b in zip(gt_masks, gt_boxes)]
    top = int(pred.max(initial=0))
    masks, boxes, bounds = [], [], []
    for p in pred_ids:
        if p > top:  # absent id: an empty mask
            masks.append(None)
            boxes.append(None)
            bounds.append(Boundary(0))
            continue
        pm = pred == p
        if void_mask is not None:
            pm &= ~void_mask
        pbox = _bounding_box(pm)
        masks.append(pm)
        boxes.append(pbox)
        bounds.append(Boundary.of(pm, radius, pbox) if pbox is not None else Boundary(0))
    j = np.empty((n_p, n_g))
    f = np.empty((n_p, n_g))
    for i, (pm, pbox, pb) in enumerate(zip(masks, boxes, bounds)):
        if pbox is None:
            j[i] = [1.0 if a == 0 else 0.0 for a in gt_area]
            f[i] = [1.0 if b.count == 0 else 0.0 for b in gt_bounds]
            continue
        a_p = _count(pm, pbox)
        for k in range(n_g):
            a = _overlap_count(gt_masks[k], gt_boxes[k], pm, pbox)
            j[i, k] = j_from_counts(a, int(gt_area[k]) + a_p - a)
            f[i, k] = f_from_boundaries(pb, gt_bounds[k])
    return FrameScores(j, f, gt_area.astype(np.int64))


def _count(mask: np.ndarray, box) -> int:
    if box is None:
        return 0
    y0, x0, y1, x1 = box
    return int(np.count_nonzero(mask[y0:y1, x0:x1]))


def _overlap_count(a: np.ndarray, abox, b: np.ndarray, bbox) -> int:
    """Pixels set in both full-frame masks, counted over the overlap of their bounding boxes."""
    if abox is None or bbox is None:
        return 0
    y0, x0 = max(abox[0], bbox[0]), max(abox[1], bbox[1])
    y1, x1 = min(abox[2], bbox[2]), min(abox[3], bbox[3])
    if y0 >= y1 or x0 >= x1:
        return 0
    return int(np.count_nonzero(a[y0:y1, x0:x1] & b[y0:y1, x0:x1]))
