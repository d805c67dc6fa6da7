"""Shared test fixtures: tiny on-disk videos built on the fly, and the shared real data."""

from __future__ import annotations

import importlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from vidseg import registry
from vidseg.io.masks import write_mask

PLUGINS = Path(__file__).resolve().parent / "plugins"


@pytest.fixture
def plugin(monkeypatch):
    """``plugin(name)`` imports ``tests/plugins/<name>.py`` and registers its method for this test only."""
    monkeypatch.syspath_prepend(str(PLUGINS))
    names = {"bright-spots"}  # the entry point of tests/plugins registers it when the registry first loads there

    def load(module_name: str):
        module = importlib.import_module(module_name)
        registry.register(module.SPEC, replace=True)
        names.add(module.SPEC.name)
        return module

    yield load
    for name in names:
        registry.unregister(name)

# Tiny S2S-family sizes for CPU tests.
TINY_NETWORK = {"backbone": "convnet-tiny", "bottleneck": 16, "hidden": 16, "decoder_widths": (16, 16, 8, 8, 8),
                "gc_inner": 8, "skip_memory_channels": 8, "freeze_bn": False}


def tiny_network(name: str, **overrides):
    """A seeded, eval-mode tiny network of preset ``name``."""
    import torch

    from vidseg.models.s2s import build_model, preset

    torch.manual_seed(0)
    return build_model(preset(name, **{**TINY_NETWORK, **overrides})).eval()


# Tiny RVOS sizes for CPU tests.
TINY_RVOS = {"backbone": "convnet-tiny", "slots": 4, "projections": (16, 16, 8, 8), "hidden": (16, 8, 8, 4)}


def tiny_rvos(mode: str = "zero-shot", **overrides):
    """A seeded tiny RVOS network (train mode)."""
    import torch

    from vidseg.models.rvos import RVOSConfig, build_model

    torch.manual_seed(0)
    return build_model(RVOSConfig(mode=mode, **{**TINY_RVOS, **overrides}))


TINY_OVSNET = {"backbone": "convnet-tiny", "fpn_channels": 16, "representation": 32, "reid_hidden": 32, "reid_dim": 8,
               "aspp_channels": 16, "mga_size": 16, "train_sizes": (64,), "test_size": 64, "max_size": 128,
               "anchor_sizes": (8, 16, 32, 64, 128), "proposals_train": 100, "proposals_test": 50, "rois_train": 64,
               "detections": 8, "freeze_bn": False}


def tiny_ovsnet(**overrides):
    """A seeded tiny OVSNet network (train mode)."""
    import torch

    from vidseg.models.ovsnet import OVSNetConfig, build_model

    torch.manual_seed(0)
    return build_model(OVSNetConfig(**{**TINY_OVSNET, **overrides}))


def clip_batch(frames: list[np.ndarray], masks: list[np.ndarray], slots: int = 10) -> dict:
    """One all-object training clip (as :class:`~vidseg.data.clips.ClipDataset` gives it) from RGB frames and id masks."""
    import torch

    ids = sorted({int(i) for m in masks[:1] for i in np.unique(m) if i})
    valid = torch.zeros(1, slots, dtype=torch.bool)
    valid[0, : len(ids)] = True
    length = len(frames)
    return {
        "frames": torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)[None].float() / 255.0,
        "masks": torch.from_numpy(np.stack(masks).astype(np.int64))[None],
        "void": torch.zeros(1, length, *masks[0].shape, dtype=torch.bool),
        "labelled": torch.ones(1, length, dtype=torch.bool),
        "frame_valid": torch.ones(1, length, dtype=torch.bool),
        "object_valid": valid,
        "object_ids": torch.arange(1, slots + 1)[None] * valid,
        "sequence": ["clip"],
        "dataset": ["test"],
    }


def overfit_rvos(model, batch: dict, steps: int, lr: float = 1e-2, sampling_probability: float = 0.0) -> list[float]:
    """Train ``model`` on one clip; returns the losses."""
    import torch

    from vidseg.training.rvos import unroll_rvos

    optimizer = torch.optim.Adam(model.parameters(), lr)
    losses = []
    for step in range(steps):
        loss, _ = unroll_rvos(model, batch, sampling_probability, torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def overfit_recurrent(model, batch: dict, steps: int, lr: float = 3e-3) -> list[float]:
    """Train an S2S-family ``model`` on one clip with teacher forcing; returns the losses."""
    import torch

    from vidseg.training.recurrent import unroll_clip

    optimizer = torch.optim.Adam(model.parameters(), lr)
    losses = []
    for _ in range(steps):
        loss, _ = unroll_clip(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DAVIS_240P = SHARED / "data" / "davis2016-train-240p"


def moving_squares(num_frames: int = 12, size: tuple[int, int] = (64, 96), side: int = 20, step: int = 2):
    """Textured background with two textured squares moving right/down; returns frames, id masks."""
    height, width = size
    rng = np.random.default_rng(0)
    # Smooth textures, like real images (i.i.d. pixel noise defeats any patch-based optical flow).
    background = cv2.GaussianBlur(rng.integers(0, 255, (height, width + 64, 3), dtype=np.uint8), (9, 9), 2)
    background = cv2.normalize(background, None, 0, 160, cv2.NORM_MINMAX)
    texture = cv2.GaussianBlur(rng.integers(0, 255, (side, side, 3), dtype=np.uint8), (5, 5), 1)
    texture = cv2.normalize(texture, None, 120, 255, cv2.NORM_MINMAX)
    frames, masks = [], []
    for t in range(num_frames):
        frame = background[:, t : t + width].copy()
        mask = np.zeros(size, np.uint8)
        for object_id, (y, x) in ((1, (4, 4 + step * (t % 30))), (2, (height - side - 4 - (t // 2) % 8, width - side - 4))):
            frame[y : y + side, x : x + side] = np.where(object_id == 1, texture, 255 - texture)
            mask[y : y + side, x : x + side] = object_id
        frames.append(frame)
        masks.append(mask)
    return frames, masks


@pytest.fixture
def square_clip(tmp_path: Path):
    """A folder of JPEG frames, its ground-truth masks and the first mask file."""
    frames, masks = moving_squares()
    frame_dir = tmp_path / "frames"
    frame_dir.mkdir()
    for t, frame in enumerate(frames):
        cv2.imwrite(str(frame_dir / f"{t:05d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    first_mask = tmp_path / "first.png"
    write_mask(first_mask, masks[0])
    return frame_dir, masks, first_mask


@pytest.fixture
def davis_240p() -> Path:
    if not DAVIS_240P.is_dir():
        pytest.skip(f"shared DAVIS data not found at {DAVIS_240P}")
    return DAVIS_240P
