"""The DAVIS-like scene clip (vidseg.data.scene): one animal, a panning camera, a trunk in front."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from vidseg.data.scene import SceneClip, SceneConfig, make_scene_clip
from vidseg.data.synth import MARKER_NAME
from vidseg.errors import VidsegError
from vidseg.io.masks import read_mask

SMALL = (120, 216)


def _render_all(seed: int, num_frames: int = 30, size: tuple[int, int] = SMALL):
    clip = SceneClip(SceneConfig(seed=seed, num_frames=num_frames, height=size[0], width=size[1]))
    frames, masks, stats = [], [], []
    for t in range(num_frames):
        entry: dict = {}
        frame, mask = clip.render(t, entry)
        frames.append(frame)
        masks.append(mask)
        stats.append(entry)
    return frames, masks, stats


@pytest.fixture(scope="module")
def rendered() -> dict[int, tuple]:
    return {seed: _render_all(seed) for seed in (0, 1, 2)}


def test_writes_the_demo_layout(tmp_path):
    clip = make_scene_clip(tmp_path / "scene", seed=0, num_frames=6, size=(96, 160))
    frames = sorted(p.name for p in clip.frames_dir.glob("*.jpg"))
    masks = sorted(p.name for p in clip.gt_dir.glob("*.png"))
    assert frames == [f"{t:05d}.jpg" for t in range(6)]
    assert masks == [f"{t:05d}.png" for t in range(6)]
    assert clip.num_frames == 6 and clip.objects == {1: "animal"}
    assert np.array_equal(read_mask(clip.first_mask), read_mask(clip.gt_dir / "00000.png"))
    assert read_mask(clip.first_mask).shape == (96, 160)
    marker = json.loads((tmp_path / "scene" / MARKER_NAME).read_text())
    assert marker["complete"] and marker["layout"] == "scene"
    assert marker["config"] == {"seed": 0, "num_frames": 6, "height": 96, "width": 160}


def _folder_bytes(clip) -> list[bytes]:
    paths = sorted(clip.frames_dir.iterdir()) + sorted(clip.gt_dir.iterdir()) + [clip.first_mask]
    return [p.read_bytes() for p in paths]


def test_deterministic_for_a_seed_and_different_for_another(tmp_path):
    first = make_scene_clip(tmp_path / "a", seed=3, num_frames=4, size=(96, 160))
    again = make_scene_clip(tmp_path / "b", seed=3, num_frames=4, size=(96, 160))
    other = make_scene_clip(tmp_path / "c", seed=4, num_frames=4, size=(96, 160))
    assert _folder_bytes(first) == _folder_bytes(again)
    assert _folder_bytes(first)[0] != _folder_bytes(other)[0]
    assert _folder_bytes(first)[4] != _folder_bytes(other)[4]  # first ground-truth mask


def test_one_object_of_plausible_size_in_every_frame(rendered):
    for frames, masks, _ in rendered.values():
        for mask in masks:
            assert set(np.unique(mask).tolist()) == {0, 1}
            assert 0.02 <= np.count_nonzero(mask) / mask.size <= 0.3


def _centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def test_object_moves_and_changes_scale(rendered):
    for _, masks, stats in rendered.values():
        assert np.linalg.norm(_centroid(masks[-1]) - _centroid(masks[0])) > 0.1 * SMALL[1]
        drawn = [s["drawn"] for s in stats]
        assert max(drawn) / min(drawn) > 1.15  # walking towards or away from the camera


def test_background_pans(rendered):
    for frames, masks, _ in rendered.values():
        for t in (0, 10, 20):
            # smoothed, so that sensor noise alone differs by less than 1 grey level
            a, b = (cv2.GaussianBlur(f, (0, 0), 1.0).astype(np.float32) for f in (frames[t], frames[t + 2]))
            ground = np.zeros(masks[t].shape, bool)
            ground[-SMALL[0] // 6 :] = True  # the ground just in front of the camera
            ground &= (masks[t] == 0) & (masks[t + 2] == 0)
            assert np.abs(a - b).mean(axis=-1)[ground].mean() > 3.0


def test_trunk_hides_part_of_the_object_for_a_few_frames(rendered):
    for _, masks, stats in rendered.values():
        hidden = [t for t, s in enumerate(stats) if s["visible"] < s["drawn"]]
        assert 2 <= len(hidden) <= 15
        assert hidden == list(range(hidden[0], hidden[-1] + 1))
        for t in hidden:
            assert 0 < stats[t]["visible"] == np.count_nonzero(masks[t])
        for t, s in enumerate(stats):
            if t not in hidden:
                assert s["visible"] == s["drawn"] == np.count_nonzero(masks[t])
        assert min(s["visible"] / s["drawn"] for s in stats) < 0.9


def test_marker_lists_the_occluded_frames(tmp_path):
    make_scene_clip(tmp_path / "scene", seed=1, num_frames=12, size=(96, 160))
    info = json.loads((tmp_path / "scene" / MARKER_NAME).read_text())["sequences"]["scene"]
    masks = [read_mask(tmp_path / "scene" / "gt" / f"{t:05d}.png") for t in range(12)]
    assert info["visible_pixels"] == [int(np.count_nonzero(m)) for m in masks]
    assert info["occluded_frames"] and all(0 <= t < 12 for t in info["occluded_frames"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_frames": 1}, "num_frames must be >= 2"),
        ({"num_frames": 2.5}, "num_frames must be an integer"),
        ({"size": (32, 432)}, "size must be at least 64x96"),
        ({"size": (240, 64)}, "size must be at least 64x96"),
        ({"size": (240,)}, r"size must be \(height, width\)"),
        ({"seed": -1}, "seed must be >= 0"),
    ],
)
def test_bad_arguments_are_user_errors(tmp_path, kwargs, message):
    with pytest.raises(VidsegError, match=message):
        make_scene_clip(tmp_path / "scene", **kwargs)
    assert not (tmp_path / "scene").exists()
