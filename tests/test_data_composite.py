"""Composite clips: real (here: synthetic-benchmark) objects pasted over other videos' backgrounds, deterministic
per seed, several objects that move and occlude, written in the DAVIS layout and usable as a training source."""

from __future__ import annotations

import numpy as np
import pytest

from vidseg.config import parse_config
from vidseg.data.composite import CompositeClip, CompositeConfig
from vidseg.data.davis import DavisIndex
from vidseg.data.synth import SynthConfig, write_davis
from vidseg.training.data import build_index


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    write_davis(root, 4, SynthConfig(seed=3, num_frames=10, height=64, width=112, num_objects=1), val_fraction=0.0)
    return root, list(DavisIndex(root, "2016", "train", "64p"))


def clip_arrays(sources, config, index):
    frames, masks = zip(*CompositeClip(sources, config, index))
    return np.stack(frames), np.stack(masks)


def test_clips_are_deterministic_multi_object_and_moving(sources):
    _, videos = sources
    config = CompositeConfig(seed=5, num_frames=8, height=64, width=112, max_pasted=3, still_fraction=0.0)
    frames, masks = clip_arrays(videos, config, 0)
    again, again_masks = clip_arrays(videos, config, 0)
    assert (frames == again).all() and (masks == again_masks).all()
    other, _ = clip_arrays(videos, CompositeConfig(seed=6, num_frames=8, height=64, width=112), 0)
    assert not (frames == other).all()
    assert frames.shape == (8, 64, 112, 3) and masks.dtype == np.uint8
    ids = set(np.unique(masks[0]).tolist()) - {0}
    assert len(ids) >= 2 and ids <= {1, 2, 3, 4}
    moved = [np.argwhere(masks[t] == 2).mean(0) for t in (0, 7) if (masks[t] == 2).any()]
    assert len(moved) < 2 or np.abs(moved[0] - moved[1]).sum() > 0.5


def test_still_clips_come_from_single_frames(sources):
    _, videos = sources
    clip = CompositeClip(videos, CompositeConfig(seed=1, num_frames=6, height=64, width=112, still_fraction=1.0), 0)
    assert clip.still and all(len(set(layer["frames"])) == 1 for layer in clip.layers)


def test_a_composite_source_is_generated_once_and_indexed(tmp_path, sources):
    root, _ = sources
    values = {
        "model": {"method": "s2s++", "backbone": "convnet-tiny"},
        "data": {"size": [64, 96], "train": [{"type": "composite", "root": str(tmp_path / "comp"), "source": str(root),
                                              "year": "2016", "resolution": "64p", "num_videos": 3, "num_frames": 5,
                                              "height": 64, "width": 112}]},
        "train": {"out_dir": str(tmp_path / "run")},
    }
    source = parse_config(values).data.train[0]
    index = build_index(source)
    assert [seq.name for seq in index] == ["composite0000", "composite0001", "composite0002"]
    assert all(len(seq) == 5 for seq in index)
    stamp = (tmp_path / "comp" / "ImageSets" / "2017" / "train.txt").stat().st_mtime_ns
    build_index(source)
    assert (tmp_path / "comp" / "ImageSets" / "2017" / "train.txt").stat().st_mtime_ns == stamp
