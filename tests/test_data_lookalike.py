"""Two-object held-out clips: a look-alike copy of the object, and another video's object crossing it."""

from __future__ import annotations

import numpy as np
import pytest

from vidseg.data.davis import DavisIndex
from vidseg.data.lookalike import crossing_clip, crossing_set, lookalike_clip
from vidseg.data.synth import SynthConfig, write_davis
from vidseg.errors import VidsegError
from vidseg.io.masks import read_mask


@pytest.fixture
def sources(tmp_path):
    write_davis(tmp_path / "d", 2, SynthConfig(seed=3, num_frames=20, height=64, width=112, num_objects=1,
                                               num_distractors=0, occlusion=False), val_fraction=1.0, years=("2016",))
    return list(DavisIndex(tmp_path / "d", "2016", "val", None))


def centre_x(mask: np.ndarray) -> float:
    return float(np.nonzero(mask)[1].mean())


def test_lookalike_is_the_mirrored_later_object_in_front(sources):
    video = sources[0]
    clip = list(lookalike_clip(video, delay=5))
    assert len(clip) == len(video) - 5
    for t, (frame, ids) in enumerate(clip):
        later = read_mask(video.mask_paths[video.frame_names[t + 5]])[:, ::-1] > 0
        own = read_mask(video.mask_paths[video.frame_names[t]]) > 0
        assert np.array_equal(ids == 2, later)  # the copy in front, where its mask is
        assert np.array_equal(ids == 1, own & ~later)  # the object where the copy leaves it visible
        assert frame.dtype == np.uint8 and frame.shape == (*ids.shape, 3)
    with pytest.raises(VidsegError, match="not more than the delay"):
        next(lookalike_clip(video, delay=len(video)))


def test_crossing_object_passes_through_the_target(sources):
    target, other = sources
    clip = list(crossing_clip(target, other))
    assert len(clip) == min(len(target), len(other))
    first, last = clip[0][1], clip[-1][1]
    assert (first == 1).any() and (first == 2).any()  # both objects are given by the first frame
    side = np.sign(centre_x(first == 2) - centre_x(first == 1))
    assert side != 0 and np.sign(centre_x(last == 2) - centre_x(last == 1)) == -side  # it went across
    assert any(((ids == 2).sum() > 0) for _, ids in clip[len(clip) // 2 - 1: len(clip) // 2 + 2])


def test_crossing_set_writes_a_davis_layout(sources, tmp_path):
    names = crossing_set(tmp_path / "x", sources, "64p")
    assert names == [f"{sources[0].name}+{sources[1].name}", f"{sources[1].name}+{sources[0].name}"]
    index = DavisIndex(tmp_path / "x", "2017", "val", "64p")
    assert index.names == names and sorted(index.sequence(names[0]).objects) == [1, 2]
