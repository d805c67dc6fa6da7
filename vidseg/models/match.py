"""Frozen ImageNet features for label propagation by matching (the ``match`` method) and space-time
correspondence: an EfficientNet-Lite's stride-16 and stride-8 features brought to one grid (``stride`` 16: the
stride-8 ones average-pooled; 8: the stride-16 ones up-sampled), each L2-normalised, then the whole vector
L2-normalised (so a dot product is a cosine)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidseg.models.backbones import build_backbone
from vidseg.models.ops import first_argmax


class MatchFeatures(nn.Module):
    """``forward(frames)``: (B, 3, H, W) RGB in [0, 1] -> (B, C, H/stride, W/stride) unit-length features."""

    def __init__(self, backbone: str = "efficientnet_lite0", weights: str | None = "imagenet", stride: int = 16):
        super().__init__()
        if stride not in (8, 16):
            raise ValueError(f"stride must be 8 or 16, got {stride}")
        self.stride = stride
        self.backbone = build_backbone(backbone, 3, weights).eval()
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(self.backbone.input_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.backbone.input_std).view(1, 3, 1, 1), persistent=False)
        self.channels = self.backbone.channels[2] + self.backbone.channels[3]

    def train(self, mode: bool = True) -> MatchFeatures:
        return super().train(False)  # frozen: BatchNorm keeps its ImageNet statistics

    def forward(self, frames: Tensor) -> Tensor:
        return self.encode(frames)[0]

    def encode(self, frames: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The matching features and the backbone's levels (strides 2..32) they were made from."""
        feats = self.backbone((frames - self.mean) / self.std)
        return self._keys(feats), feats

    def _keys(self, feats: list[Tensor]) -> Tensor:
        coarse, fine = feats[3], feats[2]
        if self.stride == 16:
            fine = F.adaptive_avg_pool2d(fine, coarse.shape[-2:])
        else:
            coarse = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        joined = torch.cat([F.normalize(coarse, dim=1), F.normalize(fine, dim=1)], dim=1)
        return F.normalize(joined, dim=1)


def read_labels(
    sims: Tensor, labels: Tensor, top_k: int, temperature: float, local_labels: Tensor | None = None
) -> Tensor:
    """Label propagation: each query takes the softmax-weighted (``temperature``) labels of its ``top_k`` most similar
    memory cells. ``sims`` (B, N, M + L): query-to-memory cosines, the first M columns for cells every query sees,
    with ``labels`` (B, M, K); the last L (optional) for cells of each query's own window, with ``local_labels``
    (B, N, L, K). Returns (B, N, K). The ``match`` method and HS2S's ``merge: match`` share it."""
    top = sims.topk(min(top_k, sims.shape[-1]), dim=-1)
    weights = torch.softmax(top.values / temperature, dim=-1)
    batch, queries, k = top.indices.shape
    shared = labels.shape[1]
    index = top.indices.clamp(max=max(shared - 1, 0))
    picked = labels.gather(1, index.reshape(batch, -1, 1).expand(-1, -1, labels.shape[-1]))
    picked = picked.reshape(batch, queries, k, -1)
    if local_labels is not None:
        local = (top.indices - shared).clamp(min=0)
        from_window = local_labels.gather(2, local[..., None].expand(-1, -1, -1, local_labels.shape[-1]))
        picked = torch.where((top.indices < shared)[..., None], picked, from_window)
    return (weights[..., None] * picked).sum(-2)


Memory = list[tuple[Tensor, Tensor]]  # (C, h, w) features and (K, h, w) labels of one memory frame each

TILE = 8  # query cells per tile side in the windowed read (8: one (64 x C) @ (C x 256 T) product per tile)
OUTSIDE = -1e4  # similarity of a window cell outside the frame: never among the top k


class MatchMemory:
    """The memory the ``match`` method reads, kept in the layout its read needs: dense products, no per-offset work.

    ``anchors`` (frames with given masks) are matched over the whole frame: one (N x C) @ (C x M) product.
    ``recent`` (the last ``size`` predicted frames) are matched within ``radius`` cells of each query cell, as
    blocked local attention: the query grid is cut into ``tile`` x ``tile`` tiles; each recent frame is stored once,
    when added, as every tile's padded neighbourhood ((tile + 2 radius)^2 cells, a ring buffer of ``size`` slots);
    one batched product per frame read compares each tile with its neighbourhoods in all recent frames, and a strided
    copy keeps each query cell's own (2 radius + 1)^2 window. An extra feature channel (1 for queries, 0 for memory
    cells, :data:`OUTSIDE` for cells outside the frame) masks the windows inside the same product. Labels are read
    back through the top-k indices, so they are never expanded per query. For the same memory the labels equal a
    direct per-cell reading up to float rounding (tests/test_match_memory.py).

    The lists ``anchors`` and ``recent`` (oldest first) and ``written`` (recent frames ever added: the ring slot of
    entry i is ``(written - len(recent) + i) % size``) are the state; the rest is derived from them, so a memory
    rebuilt from them reads exactly as the one saved.
    """

    def __init__(self, size: int, radius: int, tile: int = TILE):
        self.size, self.radius, self.tile = int(size), int(radius), int(tile)
        self.anchors: Memory = []
        self.recent: Memory = []
        self.written = 0
        self._grid: tuple[int, int] | None = None
        self._anchor_keys: Tensor | None = None  # (C + 1, M)
        self._ring_keys: Tensor | None = None  # (tiles, C + 1, size, (tile + 2 radius)^2)
        self._labels: Tensor | None = None  # (M + size * padded cells, K): anchors' cells, then each slot's padded grid
        self._buffers: dict[str, Tensor] = {}  # work space of read(), reused while its shape holds

    def add(self, features: Tensor, labels: Tensor, anchor: bool) -> None:
        """Store a frame's (C, h, w) features and (K, h, w) labels: as an anchor, or as the newest recent frame
        (the oldest leaves once ``size`` are kept)."""
        self._check_grid(*features.shape[-2:])
        if anchor:
            self.anchors.append((features, labels))
            self._anchor_keys = None
        elif self.size:
            self.recent = [*self.recent, (features, labels)][-self.size:]
            self._put_recent(features, self.written % self.size)
            self.written += 1
        self._labels = None

    def relabel(self, labels: list[Tensor]) -> None:
        """Replace every entry's labels (anchors first, then recent, as :meth:`entry_labels` lists them), e.g. in a
        new object order."""
        count = len(self.anchors)
        self.anchors = [(f, new) for (f, _), new in zip(self.anchors, labels[:count])]
        self.recent = [(f, new) for (f, _), new in zip(self.recent, labels[count:])]
        self._labels = None

    def entry_labels(self) -> list[Tensor]:
        return [labels for _, labels in (*self.anchors, *self.recent)]

    @classmethod
    def rebuilt(cls, size: int, radius: int, anchors: Memory, recent: Memory, written: int) -> MatchMemory:
        """The memory that :meth:`add` built from these entries (see the class docstring)."""
        memory = cls(size, radius)
        memory.anchors, memory.written = list(anchors), int(written)
        memory.recent = list(recent[-size:]) if size else []
        for i, (features, _) in enumerate(memory.recent):
            memory._put_recent(features, (memory.written - len(memory.recent) + i) % size)
        return memory

    def read(self, query: Tensor, top_k: int, temperature: float) -> Tensor:
        """(K, h, w) labels of a frame's cells (``query``: (C, h, w) features): each cell takes the softmax-weighted
        (``temperature``) labels of its ``top_k`` most similar memory cells (see the class docstring)."""
        channels, height, width = query.shape
        self._check_grid(height, width)
        geometry = _geometry(height, width, self.radius, self.tile)
        queries = _query_tiles(query, self.tile, geometry)  # (tiles, tile^2, C + 1)
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
        newest_first = [(self.written - 1 - age) % self.size for age in range(filled)]
        if filled:
            ring = self._ring_keys[:, :, :filled].flatten(2)  # slots 0..filled-1 hold the recent frames
            local = torch.bmm(queries, ring, out=self._buffer("local", (tiles, cells, ring.shape[-1]), queries))
            _copy_windows(local, sims[..., :local_width], self.tile, self.radius, newest_first)
        top = sims.view(tiles * cells, -1).topk(min(top_k, sims.shape[-1]), dim=-1)
        weights = torch.softmax(top.values.float() / temperature, dim=-1)
        slots = torch.tensor(newest_first, dtype=torch.long, device=query.device)
        rows = _label_rows(top.indices, local_width, shared, slots, geometry)
        picked = self._label_table()[rows]  # (N', k, K)
        read = (weights[..., None] * picked).sum(1)  # (N', K), in tile order
        return _from_tiles(read, self.tile, geometry)

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

    def _anchor_matrix(self) -> Tensor | None:
        if self._anchor_keys is None and self.anchors:
            self._anchor_keys = torch.cat([F.pad(f.flatten(1), (0, 0, 0, 1)) for f, _ in self.anchors], 1)  # bias 0
        return self._anchor_keys

    def _put_recent(self, features: Tensor, slot: int) -> None:
        channels, height, width = features.shape
        geometry = _geometry(height, width, self.radius, self.tile)
        r = self.radius
        padded = features.new_zeros((channels + 1, geometry.padded_height, geometry.padded_width))
        padded[channels] = OUTSIDE
        padded[:channels, r:r + height, r:r + width] = features
        padded[channels, r:r + height, r:r + width] = 0
        side = self.tile + 2 * r
        neighbourhoods = F.unfold(padded[None], side, stride=self.tile)[0]  # ((C + 1) side^2, tiles)
        neighbourhoods = neighbourhoods.view(channels + 1, side * side, -1).permute(2, 0, 1)
        if self._ring_keys is None or self._ring_keys.dtype != features.dtype:
            self._ring_keys = features.new_zeros((neighbourhoods.shape[0], channels + 1, self.size, side * side))
        self._ring_keys[:, :, slot] = neighbourhoods

    def _label_table(self) -> Tensor:
        """(M + size * padded cells, K) float32: the anchors' cell labels, then each ring slot's padded label grid."""
        if self._labels is None:
            parts = [labels.flatten(1).T.float() for _, labels in self.anchors]
            if self.recent:
                height, width = self._grid
                geometry = _geometry(height, width, self.radius, self.tile)
                objects = self.recent[-1][1].shape[0]
                r = self.radius
                ring = self.recent[-1][1].new_zeros((self.size, geometry.padded_height, geometry.padded_width,
                                                     objects), dtype=torch.float32)
                for i, (_, labels) in enumerate(self.recent):
                    slot = (self.written - len(self.recent) + i) % self.size
                    ring[slot, r:r + height, r:r + width] = labels.permute(1, 2, 0).float()
                parts.append(ring.view(-1, objects))
            self._labels = torch.cat(parts)
        return self._labels


@dataclass(frozen=True)
class _Geometry:
    """Index tables of the windowed read for one grid size (see :class:`MatchMemory`)."""

    height: int
    width: int
    tiled_height: int  # the grid padded to whole tiles
    tiled_width: int
    padded_height: int  # the tiled grid padded by the radius on every side
    padded_width: int
    cell_position: Tensor  # (tiles * tile^2,) each query cell's window origin in a padded grid (flat)
    window_offsets: Tensor  # (window,) the window's cells relative to that origin (flat)


@functools.lru_cache(maxsize=8)
def _geometry(height: int, width: int, radius: int, tile: int) -> _Geometry:
    tiled_height, tiled_width = -(-height // tile) * tile, -(-width // tile) * tile
    padded_height, padded_width = tiled_height + 2 * radius, tiled_width + 2 * radius
    offsets = torch.arange(2 * radius + 1)
    in_tile = torch.arange(tile)
    tiles_y, tiles_x = tiled_height // tile, tiled_width // tile
    y = (torch.arange(tiles_y)[:, None, None, None] * tile + in_tile[None, None, :, None])
    x = (torch.arange(tiles_x)[None, :, None, None] * tile + in_tile[None, None, None, :])
    cell_position = (y * padded_width + x).reshape(-1)
    window_offsets = (offsets[:, None] * padded_width + offsets[None, :]).reshape(-1)
    return _Geometry(height, width, tiled_height, tiled_width, padded_height, padded_width, cell_position,
                     window_offsets)


def _copy_windows(local: Tensor, out: Tensor, tile: int, radius: int, slots: list[int]) -> Tensor:
    """Each tile cell's (2 radius + 1)^2 window out of its tile's neighbourhoods: ``local`` (tiles, tile^2, ring
    slots * side^2) similarities to the neighbourhoods (side = tile + 2 radius) -> ``out`` (tiles, tile^2,
    len(slots) * window), the windows of ring slot ``slots[i]`` at position i. The window of cell (y, x) starts at
    neighbourhood cell (y, x), so a strided view of ``local`` holds them all."""
    tiles = local.shape[0]
    side, span = tile + 2 * radius, 2 * radius + 1
    stride_b, stride_c = local.stride(0), local.stride(1)
    windows = local.as_strided((tiles, tile, tile, local.shape[2] // (side * side), span, span),
                               (stride_b, tile * stride_c + side, stride_c + 1, side * side, side, 1),
                               local.storage_offset())
    target = out.view(tiles, tile, tile, len(slots), span, span)
    for position, slot in enumerate(slots):
        target[:, :, :, position].copy_(windows[:, :, :, slot])
    return out


def _query_tiles(query: Tensor, tile: int, geometry: _Geometry) -> Tensor:
    """(C, h, w) features -> (tiles, tile^2, C + 1) with the bias channel 1."""
    channels = query.shape[0]
    padded = query.new_zeros((geometry.tiled_height, geometry.tiled_width, channels + 1))
    padded[..., channels] = 1
    padded[: geometry.height, : geometry.width, :channels] = query.permute(1, 2, 0)
    tiles_y, tiles_x = geometry.tiled_height // tile, geometry.tiled_width // tile
    return padded.view(tiles_y, tile, tiles_x, tile, -1).transpose(1, 2).reshape(tiles_y * tiles_x, tile * tile, -1)


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


def _from_tiles(read: Tensor, tile: int, geometry: _Geometry) -> Tensor:
    """(tiles * tile^2, K) in tile order -> (K, h, w)."""
    tiles_y, tiles_x = geometry.tiled_height // tile, geometry.tiled_width // tile
    grid = read.view(tiles_y, tiles_x, tile, tile, -1).permute(4, 0, 2, 1, 3)
    return grid.reshape(-1, geometry.tiled_height, geometry.tiled_width)[:, : geometry.height, : geometry.width]


def read_memory(
    query: Tensor, anchors: Memory, recent: Memory, top_k: int, temperature: float, radius: int
) -> Tensor:
    """(K, h, w) labels of one frame's cells (``query``: (C, h, w) features) from the top-k matches in a memory:
    every cell of the ``anchors`` (frames with given masks) and, for ``recent`` (predicted) frames, the
    (2 radius + 1)^2 cells around each query cell (objects move little between frames). The match refiner's
    training reads it so; inference keeps a :class:`MatchMemory` across frames."""
    return MatchMemory.rebuilt(len(recent), radius, anchors, recent, len(recent)).read(query, top_k, temperature)


def memory_labels(probabilities: Tensor, stride: int) -> Tensor:
    """(K, H, W) final maps -> (K, H/stride, W/stride) labels to store in memory: each pixel's decision
    (the object of highest probability, or background), not the soft maps (fed back, they shrink objects),
    average-pooled to the feature grid."""
    if not len(probabilities):
        return probabilities.new_zeros((0, probabilities.shape[-2] // stride, probabilities.shape[-1] // stride))
    background = 1 - probabilities.sum(0, keepdim=True)
    winner = first_argmax(torch.cat([background, probabilities]))
    decisions = torch.stack([(winner == k + 1).to(probabilities.dtype) for k in range(len(probabilities))])
    return F.avg_pool2d(decisions[None], stride)[0]


__all__ = ["MatchFeatures", "MatchMemory", "Memory", "memory_labels", "read_labels", "read_memory"]
