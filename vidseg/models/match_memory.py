"""The memory of the ``match`` method and its read as dense linear algebra (see :class:`MatchMemory`)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vidseg.models.match import read_labels

Memory = list[tuple[Tensor, Tensor]]  # (C, h, w) features and (K, h, w) labels of one memory frame each
TILE = 8  # query cells per tile side: one (64 x C) @ (C x 256 T) product per tile (4 x 8 tiles, with fewer
# neighbourhood cells per query, measured 10 % slower at 480p: smaller products run further from the peak)
OUTSIDE = 1e4  # the extra channel of a window cell outside the frame: its similarity -1e4, never among the top k
NEAR_LABEL = 0.01  # background_stride: a global frame's cells with more object label than this are objects' cells
NEAR_MARGIN = 4  # background_stride: cells within this many of an object's cells are all kept
LOOKALIKE_SHARE = 0.25  # background_stride: the share of the far background most like the objects, all kept


class MatchMemory:
    """The memory the ``match`` method reads, kept in the layout its read needs: dense products, no per-offset work.

    ``anchors`` (frames with given masks) are matched over the whole frame: one (N x C) @ (C x M) product.
    ``recent`` (the last ``size`` predicted frames) are matched within ``radius`` cells of each query cell, as
    blocked local attention: the query grid is cut into :data:`TILE` x :data:`TILE` tiles; each recent frame is
    stored once, when added, as every tile's neighbourhood (the tile grown by ``radius`` on every side; a ring buffer
    of ``size`` slots);
    one batched product per frame read compares each tile with its neighbourhoods in all recent frames, and a strided
    copy keeps each query cell's own (2 radius + 1)^2 window. An extra feature channel (-1 for queries, 1 for memory
    cells, :data:`OUTSIDE` for cells outside the frame) subtracts 1 from every similarity and masks the windows inside
    the same products: the softmax and the top k do not change with the shift, and the best matches (cosines near 1)
    come out near 0, where a bfloat16 product's output keeps 4-16x finer steps. Labels are read back through the
    top-k indices, so they are never expanded per query. For the same memory the labels equal a direct per-cell
    reading up to float rounding (tests/test_match_memory.py).

    ``long_term`` (optional, for long videos and objects hidden for a while): up to ``long_term`` past predicted
    frames kept after they leave the recent ones and matched over the whole frame, as the anchors are: a frame the
    caller marked confident becomes one as it leaves, when ``long_term_every`` frames have left since the last (the
    oldest leaves when the budget is full). Memory stays bounded: anchors + ``long_term`` + ``size`` frames.

    ``background_stride`` (optional, for speed): of the frames matched over the whole frame (anchors, long-term), the
    background cells farther than :data:`NEAR_MARGIN` cells from every object are kept only on a grid of that
    stride (1 in 4 at stride 2), except the :data:`LOOKALIKE_SHARE` of them most like the objects, which all stay.
    Those columns are most of a read's work (every query cell against every cell of every such frame, then the top k
    over them). Plain far background is self-similar, so fewer of its cells still outvote an object there; the cells
    like the objects (a second player, another duck) must keep voting for background, or the mask spreads onto them;
    the objects and their surroundings, where the decisions are made, keep every cell. Which cells are kept follows
    from the entries (features and labels), so a rebuilt memory keeps the same ones.

    The lists ``anchors``, ``long_term`` and ``recent`` (oldest first) with ``confident`` (the recent frames'
    marks), ``written`` (recent frames ever added: the ring slot of entry i is ``(written - len(recent) + i) %
    size``) and ``since_long_term`` (frames left since the last long-term one) are the state; the rest is derived
    from them, so a memory rebuilt from them reads exactly as the one saved.
    """

    def __init__(self, size: int, radius: int, long_term: int = 0, long_term_every: int = 10,
                 background_stride: int = 1):
        self.size, self.radius = int(size), int(radius)
        self.long_term_size, self.long_term_every = int(long_term), int(long_term_every)
        self.background_stride = int(background_stride)
        self.anchors: Memory = []
        self.long_term: Memory = []
        self.recent: Memory = []
        self.confident: list[bool] = []
        self.written = 0
        self.since_long_term = 0
        self._grid: tuple[int, int] | None = None
        self._anchor_keys: Tensor | None = None  # (C + 1, M)
        self._kept: list[Tensor] | None = None  # background_stride: each global entry's matched cells (flat indices)
        self._ring_keys: Tensor | None = None  # (tiles, C + 1, size, neighbourhood cells)
        self._labels: Tensor | None = None  # (M + size * padded cells, K): anchors' cells, then each slot's padded grid
        self._buffers: dict[str, Tensor] = {}  # work space of read(), reused while its shape holds

    def add(self, features: Tensor, labels: Tensor, anchor: bool, confident: bool = False) -> None:
        """Store a frame's (C, h, w) features and (K, h, w) labels: as an anchor, or as the newest recent frame
        (the oldest leaves once ``size`` are kept, to the long-term memory if its turn has come and it was
        ``confident``)."""
        self._check_grid(*features.shape[-2:])
        if anchor:
            self.anchors.append((features, labels))
            self._forget_global()
            return
        if not self.size:  # no recent memory: the frame leaves at once
            self._retire(features, labels, confident)
            return
        if len(self.recent) == self.size:  # the oldest recent frame leaves
            self._retire(*self.recent[0], self.confident[0])
        self.confident = [*self.confident, bool(confident)][-self.size:]
        self.recent = [*self.recent, (features, labels)][-self.size:]
        self._put_recent(features, self.written % self.size)
        self.written += 1
        self._put_recent_labels(labels, self._slot(len(self.recent) - 1))

    def _retire(self, features: Tensor, labels: Tensor, confident: bool) -> None:
        self.since_long_term += 1
        if self.long_term_size and confident and self.since_long_term >= self.long_term_every:
            self.long_term = [*self.long_term, (features, labels)][-self.long_term_size:]
            self.since_long_term = 0
            self._forget_global()

    def _forget_global(self) -> None:
        """Drop what is derived from the global entries (rebuilt when next read)."""
        self._anchor_keys = self._kept = self._labels = None

    def relabel(self, labels: list[Tensor]) -> None:
        """Replace every entry's labels (anchors, long-term, then recent, as :meth:`entry_labels` lists them), e.g.
        in a new object order."""
        first, second = len(self.anchors), len(self.anchors) + len(self.long_term)
        self.anchors = [(f, new) for (f, _), new in zip(self.anchors, labels[:first])]
        self.long_term = [(f, new) for (f, _), new in zip(self.long_term, labels[first:second])]
        self.recent = [(f, new) for (f, _), new in zip(self.recent, labels[second:])]
        self._forget_global()  # the kept cells follow the labels

    def entry_labels(self) -> list[Tensor]:
        return [labels for _, labels in (*self.anchors, *self.long_term, *self.recent)]

    @classmethod
    def rebuilt(cls, size: int, radius: int, anchors: Memory, recent: Memory, written: int, long_term: Memory = (),
                long_term_size: int = 0, long_term_every: int = 10, since_long_term: int = 0,
                confident: list[bool] | None = None, background_stride: int = 1) -> MatchMemory:
        """The memory that :meth:`add` built from these entries (see the class docstring)."""
        memory = cls(size, radius, long_term_size, long_term_every, background_stride)
        memory.anchors, memory.written = list(anchors), int(written)
        memory.long_term, memory.since_long_term = list(long_term), int(since_long_term)
        memory.recent = list(recent[-size:]) if size else []
        marks = [bool(c) for c in confident] if confident is not None else [False] * len(recent)
        memory.confident = marks[len(marks) - len(memory.recent):]
        for i, (features, _) in enumerate(memory.recent):
            memory._put_recent(features, memory._slot(i))
        return memory

    def _slot(self, entry: int) -> int:
        """The ring slot of ``recent[entry]``."""
        return (self.written - len(self.recent) + entry) % self.size

    def read(self, query: Tensor, top_k: int, temperature: float) -> Tensor:
        """(K, h, w) labels of a frame's cells (``query``: (C, h, w) features): each cell takes the softmax-weighted
        (``temperature``) labels of its ``top_k`` most similar memory cells (see the class docstring)."""
        channels, height, width = query.shape
        self._check_grid(height, width)
        geometry = _geometry(height, width, self.radius)
        queries = _query_tiles(query, geometry)  # (tiles, cells per tile, C + 1)
        tiles, cells = queries.shape[:2]
        anchor_keys = self._anchor_matrix()
        shared = 0 if anchor_keys is None else anchor_keys.shape[1]
        filled = len(self.recent)
        window = (2 * self.radius + 1) ** 2
        # Columns: the recent frames' windows, newest frame first, then the anchors' cells. The order changes no
        # result, but top-k keeps a heap of the best so far: the likeliest matches first make it 1.8x faster.
        # The products are written into buffers kept between reads: fresh ones this large would be mapped and
        # faulted in anew on every frame (glibc maps blocks over 32 MB), which cost more than the products.
        local_width = filled * window
        sims = self._buffer("sims", (tiles, cells, local_width + shared), queries)
        if shared:
            flat = sims.view(tiles * cells, -1)
            torch.mm(queries.reshape(tiles * cells, -1), anchor_keys, out=flat[:, local_width:])
        newest_first = [self._slot(filled - 1 - age) for age in range(filled)]
        if filled:
            ring = self._ring_keys[:, :, :filled].flatten(2)  # slots 0..filled-1 hold the recent frames
            local = torch.bmm(queries, ring, out=self._buffer("local", (tiles, cells, ring.shape[-1]), queries))
            _copy_windows(local, sims[..., :local_width], geometry, newest_first)
        top = sims.view(tiles * cells, -1).topk(min(top_k, sims.shape[-1]), dim=-1)
        weights = torch.softmax(top.values.float() / temperature, dim=-1)
        slots = torch.tensor(newest_first, dtype=torch.long, device=query.device)
        rows = _label_rows(top.indices, local_width, shared, slots, geometry)
        picked = self._label_table()[rows]  # (N', k, K)
        read = (weights[..., None] * picked).sum(1)  # (N', K), in tile order
        return _from_tiles(read, geometry)

    def _buffer(self, name: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
        buffer = self._buffers.get(name)
        if buffer is None or buffer.shape != shape or buffer.dtype != like.dtype or buffer.device != like.device:
            buffer = self._buffers[name] = like.new_empty(shape)
        return buffer

    def _check_grid(self, height: int, width: int) -> None:
        if self._grid is None:
            self._grid = (height, width)
        elif self._grid != (height, width):
            raise ValueError(f"memory frames are {self._grid} cells, the query {(height, width)}")

    def _global(self) -> Memory:
        """The entries matched over the whole frame: the anchors, then the long-term frames."""
        return [*self.anchors, *self.long_term]

    def _kept_cells(self) -> list[Tensor | None]:
        """Each global entry's matched cells as flat indices, or None for all of them (``background_stride`` 1)."""
        if self.background_stride == 1:
            return [None] * len(self._global())
        if self._kept is None:
            self._kept = [_kept_cells_of(f, labels, self.background_stride) for f, labels in self._global()]
        return self._kept

    def _anchor_matrix(self) -> Tensor | None:
        if self._anchor_keys is None and self._global():
            columns = [f.flatten(1) if kept is None else f.flatten(1)[:, kept]
                       for (f, _), kept in zip(self._global(), self._kept_cells())]
            self._anchor_keys = torch.cat([F.pad(c, (0, 0, 0, 1), value=1.0) for c in columns], 1)
        return self._anchor_keys

    def _put_recent(self, features: Tensor, slot: int) -> None:
        channels, height, width = features.shape
        geometry = _geometry(height, width, self.radius)
        r = self.radius
        padded = features.new_zeros((channels + 1, geometry.padded_height, geometry.padded_width))
        padded[channels] = OUTSIDE
        padded[:channels, r:r + height, r:r + width] = features
        padded[channels, r:r + height, r:r + width] = 1
        side = TILE + 2 * r
        neighbourhoods = F.unfold(padded[None], side, stride=TILE)[0]  # ((C + 1) side^2, tiles)
        neighbourhoods = neighbourhoods.view(channels + 1, side * side, -1).permute(2, 0, 1)
        if self._ring_keys is None or self._ring_keys.dtype != features.dtype:
            self._ring_keys = features.new_zeros((neighbourhoods.shape[0], channels + 1, self.size, side * side))
        self._ring_keys[:, :, slot] = neighbourhoods

    def _label_table(self) -> Tensor:
        """(M + size * padded cells, K) float32: the global entries' cell labels, then each ring slot's padded label
        grid."""
        if self._labels is None:
            parts = [labels.flatten(1).T.float() if kept is None else labels.flatten(1).T[kept].float()
                     for (_, labels), kept in zip(self._global(), self._kept_cells())]
            if self.recent:
                height, width = self._grid
                geometry = _geometry(height, width, self.radius)
                objects = self.recent[-1][1].shape[0]
                r = self.radius
                ring = self.recent[-1][1].new_zeros((self.size, geometry.padded_height, geometry.padded_width,
                                                     objects), dtype=torch.float32)
                for i, (_, labels) in enumerate(self.recent):
                    ring[self._slot(i), r:r + height, r:r + width] = labels.permute(1, 2, 0).float()
                parts.append(ring.view(-1, objects))
            self._labels = torch.cat(parts)
        return self._labels

    def _put_recent_labels(self, labels: Tensor, slot: int) -> None:
        """Write a new recent frame's labels into the table's ``slot`` (the table is derived: it is built whole the
        first time it is read, and rebuilt when the labels change, by :meth:`relabel` or an anchor)."""
        table = self._labels
        anchors = sum(f.shape[-2] * f.shape[-1] if kept is None else len(kept)
                      for (f, _), kept in zip(self._global(), self._kept_cells()))
        if table is None or table.shape[1] != labels.shape[0] or table.shape[0] == anchors:
            self._labels = None  # none yet, another number of objects, or no ring part yet: rebuilt when read
            return
        height, width = self._grid
        geometry = _geometry(height, width, self.radius)
        ring = table[anchors:].view(self.size, geometry.padded_height, geometry.padded_width, -1)
        ring[slot, self.radius:self.radius + height, self.radius:self.radius + width] = labels.permute(1, 2, 0)


def _kept_cells_of(features: Tensor, labels: Tensor, stride: int) -> Tensor:
    """Flat indices of the cells of one frame ((C, h, w) ``features``, (K, h, w) ``labels``) that a sparse
    whole-frame memory keeps: those within :data:`NEAR_MARGIN` cells of an object's cell, the far background cells
    most like the objects (the :data:`LOOKALIKE_SHARE` of them whose best cosine to an object cell is highest: the
    distractors that must keep voting for background), and the other far cells on the ``stride`` grid."""
    objects = labels.float().sum(0) > NEAR_LABEL
    keep = F.max_pool2d(objects.float()[None, None], 2 * NEAR_MARGIN + 1, stride=1, padding=NEAR_MARGIN)[0, 0] > 0
    far = (~keep).flatten().nonzero()[:, 0]
    keep[::stride, ::stride] = True
    if len(far) and bool(objects.any()):
        cells = features.flatten(1).float()
        likeness = (cells[:, far].T @ cells[:, objects.flatten()]).amax(1)
        keep.view(-1)[far[likeness >= torch.quantile(likeness, 1 - LOOKALIKE_SHARE)]] = True
    return keep.flatten().nonzero()[:, 0]


@dataclass(frozen=True)
class _Geometry:
    """Tiles and index tables of the windowed read for one grid size (see :class:`MatchMemory`)."""

    height: int
    width: int
    radius: int
    tiled_height: int  # the grid padded to whole tiles
    tiled_width: int
    padded_height: int  # the tiled grid padded by the radius on every side
    padded_width: int
    cell_position: Tensor  # (tiles * cells per tile,) each query cell's window origin in a padded grid (flat)
    window_offsets: Tensor  # (window,) the window's cells relative to that origin (flat)

    @property
    def tiles(self) -> tuple[int, int]:
        return self.tiled_height // TILE, self.tiled_width // TILE


@functools.lru_cache(maxsize=8)
def _geometry(height: int, width: int, radius: int) -> _Geometry:
    tiled_height, tiled_width = -(-height // TILE) * TILE, -(-width // TILE) * TILE
    padded_height, padded_width = tiled_height + 2 * radius, tiled_width + 2 * radius
    offsets = torch.arange(2 * radius + 1)
    in_tile = torch.arange(TILE)
    y = torch.arange(tiled_height // TILE)[:, None, None, None] * TILE + in_tile[None, None, :, None]
    x = torch.arange(tiled_width // TILE)[None, :, None, None] * TILE + in_tile[None, None, None, :]
    cell_position = (y * padded_width + x).reshape(-1)
    window_offsets = (offsets[:, None] * padded_width + offsets[None, :]).reshape(-1)
    return _Geometry(height, width, radius, tiled_height, tiled_width, padded_height, padded_width, cell_position,
                     window_offsets)


def _copy_windows(local: Tensor, out: Tensor, geometry: _Geometry, slots: list[int]) -> Tensor:
    """Each tile cell's (2 radius + 1)^2 window out of its tile's neighbourhoods: ``local`` (tiles, cells per tile,
    ring slots * neighbourhood cells) similarities -> ``out`` (tiles, cells per tile, len(slots) * window), the
    windows of ring slot ``slots[i]`` at position i. The window of tile cell (y, x) starts at neighbourhood cell
    (y, x), so a strided view of ``local`` holds them all."""
    side, span = TILE + 2 * geometry.radius, 2 * geometry.radius + 1
    stride_b, stride_c = local.stride(0), local.stride(1)
    windows = local.as_strided((local.shape[0], TILE, TILE, local.shape[2] // (side * side), span, span),
                               (stride_b, TILE * stride_c + side, stride_c + 1, side * side, side, 1),
                               local.storage_offset())
    target = out.view(local.shape[0], TILE, TILE, len(slots), span, span)
    for position, slot in enumerate(slots):
        target[:, :, :, position].copy_(windows[:, :, :, slot])
    return out


def _query_tiles(query: Tensor, geometry: _Geometry) -> Tensor:
    """(C, h, w) features -> (tiles, cells per tile, C + 1) with the extra channel -1."""
    channels = query.shape[0]
    padded = query.new_zeros((geometry.tiled_height, geometry.tiled_width, channels + 1))
    padded[..., channels] = -1
    padded[: geometry.height, : geometry.width, :channels] = query.permute(1, 2, 0)
    tiles_y, tiles_x = geometry.tiles
    return padded.view(tiles_y, TILE, tiles_x, TILE, -1).transpose(1, 2).reshape(tiles_y * tiles_x, TILE * TILE, -1)


def _label_rows(indices: Tensor, local_width: int, shared: int, slots: Tensor, geometry: _Geometry) -> Tensor:
    """Top-k column indices (N', k) of :meth:`MatchMemory.read` -> rows of :meth:`MatchMemory._label_table`: a
    column below ``local_width`` is a window cell of the recent frame in ring slot ``slots[column // window]``, the
    others are the ``shared`` anchor cells (the table's first rows)."""
    if not local_width:
        return indices
    window = geometry.window_offsets.numel()
    local = indices.clamp(max=local_width - 1)
    position = geometry.cell_position[:, None].to(indices.device) + geometry.window_offsets.to(indices.device)[
        local % window]
    cells = geometry.padded_height * geometry.padded_width
    return torch.where(indices < local_width, shared + slots[local // window] * cells + position,
                       indices - local_width)


def _from_tiles(read: Tensor, geometry: _Geometry) -> Tensor:
    """(tiles * cells per tile, K) in tile order -> (K, h, w)."""
    tiles_y, tiles_x = geometry.tiles
    grid = read.view(tiles_y, tiles_x, TILE, TILE, -1).permute(4, 0, 2, 1, 3)
    return grid.reshape(-1, geometry.tiled_height, geometry.tiled_width)[:, : geometry.height, : geometry.width]


def read_memory(
    query: Tensor, anchors: Memory, recent: Memory, top_k: int, temperature: float, radius: int
) -> Tensor:
    """(K, h, w) labels of one frame's cells (``query``: (C, h, w) features) from the top-k matches in a memory:
    every cell of the ``anchors`` (frames with given masks) and, for ``recent`` (predicted) frames, the
    (2 radius + 1)^2 cells around each query cell (objects move little between frames). The match refiner's
    training reads it so; inference keeps a :class:`MatchMemory` across frames."""
    return MatchMemory.rebuilt(len(recent), radius, anchors, recent, len(recent)).read(query, top_k, temperature)


def read_memory_differentiable(
    query: Tensor, anchors: Memory, recent: Memory, top_k: int, temperature: float, radius: int
) -> Tensor:
    """:func:`read_memory` with gradients to the features (query and memory) through the top-k similarities, for
    training the matching keys. Dense: each query cell against every cell of every memory frame, the recent frames'
    cells outside the (2 radius + 1)^2 window masked out; fine at training sizes (a 32 x 56 grid), too slow to
    replace :class:`MatchMemory` at inference."""
    channels, height, width = query.shape
    cells = query.reshape(channels, -1).T  # (N, C)
    sims = [cells @ features.reshape(channels, -1) for features, _ in anchors]
    labels = [lab.flatten(1).T for _, lab in anchors]
    if recent:
        y, x = torch.meshgrid(torch.arange(height, device=query.device), torch.arange(width, device=query.device),
                              indexing="ij")
        y, x = y.flatten(), x.flatten()
        outside = ((y[:, None] - y[None]).abs() > radius) | ((x[:, None] - x[None]).abs() > radius)
        for features, lab in recent:
            sims.append((cells @ features.reshape(channels, -1)).masked_fill(outside, -OUTSIDE))
            labels.append(lab.flatten(1).T)
    read = read_labels(torch.cat(sims, 1)[None], torch.cat(labels).float()[None], top_k, temperature)[0]  # (N, K)
    return read.T.reshape(-1, height, width)


__all__ = ["MatchMemory", "Memory", "read_memory", "read_memory_differentiable"]
