"""The procedural synthetic VOS benchmark (vidseg.data.synth) and `vidseg data synth`."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc

import cv2
import numpy as np
import pytest

from vidseg.cli.main import main
from vidseg.data.davis import DavisIndex
from vidseg.data.synth import (
    MARKER_NAME,
    SHAPES,
    SynthClip,
    SynthConfig,
    generate_clip,
    make_demo_clip,
    write_davis,
    write_video,
    write_youtube_vos,
)
from vidseg.data.youtube_vos import YouTubeVOSIndex
from vidseg.errors import VidsegError
from vidseg.io.masks import read_mask

SMALL = dict(height=96, width=160)


def _absent_runs(masks: list[np.ndarray], object_id: int) -> list[tuple[int, int]]:
    """Runs [start, end) in which the id is missing after it first appeared; end == len for open runs."""
    present = [bool((m == object_id).any()) for m in masks]
    runs, start = [], None
    first = present.index(True) if True in present else len(present)
    for t in range(first, len(present)):
        if not present[t] and start is None:
            start = t
        elif present[t] and start is not None:
            runs.append((start, t))
            start = None
    if start is not None:
        runs.append((start, len(present)))
    return runs


def _clip(**kw) -> tuple[SynthClip, list[np.ndarray], list[np.ndarray]]:
    clip = SynthClip(SynthConfig(**kw))
    frames, masks = [], []
    for frame, mask in clip:
        frames.append(frame)
        masks.append(mask)
    return clip, frames, masks


# ---------------------------------------------------------------------------------------------- clips


def test_frames_and_masks_have_the_right_format():
    clip, frames, masks = _clip(seed=1, num_frames=5, **SMALL)
    assert len(frames) == len(masks) == len(clip) == 5
    for frame, mask in zip(frames, masks):
        assert frame.shape == (96, 160, 3) and frame.dtype == np.uint8
        assert mask.shape == (96, 160) and mask.dtype == np.uint8
    assert frames[0].std() > 10  # textured, not flat


def test_same_seed_gives_identical_bytes_and_other_seeds_differ():
    config = SynthConfig(seed=7, num_frames=12, num_objects=3, **SMALL)
    first = list(generate_clip(config))
    second = list(generate_clip(SynthConfig(seed=7, num_frames=12, num_objects=3, **SMALL)))
    for (f1, m1), (f2, m2) in zip(first, second, strict=True):
        assert f1.tobytes() == f2.tobytes() and m1.tobytes() == m2.tobytes()
    other = list(generate_clip(SynthConfig(seed=8, num_frames=12, num_objects=3, **SMALL)))
    assert not np.array_equal(first[0][0], other[0][0])
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(first, other))
    # random access renders the same frame as streaming
    frame, mask = SynthClip(config).render(9)
    assert np.array_equal(frame, first[9][0]) and np.array_equal(mask, first[9][1])


@pytest.mark.parametrize("num_objects", [1, 2, 3, 5])
def test_object_ids_are_1_to_n_and_all_visible_in_frame_0(num_objects):
    clip, _, masks = _clip(seed=num_objects, num_frames=3, height=128, width=224, num_objects=num_objects, num_distractors=2)
    ids = set(np.unique(masks[0]).tolist()) - {0}
    assert ids == set(range(1, num_objects + 1))
    assert set(np.unique(np.stack(masks)).tolist()) <= set(range(num_objects + 1))
    assert [o.object_id for o in clip.objects] == list(range(1, num_objects + 1))
    assert all(o.category in SHAPES for o in clip.objects)


def test_categories_vary_and_can_be_chosen():
    clip = SynthClip(SynthConfig(seed=0, num_frames=1, num_objects=5, **SMALL))
    assert len(set(clip.categories.values())) == 5  # drawn without repetition while possible
    chosen = SynthClip(SynthConfig(seed=0, num_frames=1, num_objects=3, object_categories=("star", "ring"), **SMALL))
    assert chosen.categories == {1: "star", 2: "ring", 3: "star"}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_full_occlusion_happens_and_the_object_comes_back(seed):
    clip, _, masks = _clip(seed=seed, num_frames=40, num_objects=2, num_distractors=1, **SMALL)
    assert clip.events, "an occlusion is planned in every clip of 12+ frames"
    returned = [
        (i, run) for i in (1, 2) for run in _absent_runs(masks, i) if run[1] < len(masks) and 1 <= run[1] - run[0] <= 25
    ]
    assert returned, "some id vanishes for 1..25 frames and comes back"
    for event in clip.events:  # the planned hiding is what the masks show
        for t in range(event.hidden_start, event.hidden_end):
            assert not (masks[t] == event.object_id).any()
        assert (masks[event.start - 1] == event.object_id).any()
        assert (masks[event.end] == event.object_id).any()


@pytest.mark.parametrize("seed", [3, 4, 5, 6])
def test_hidden_runs_respect_max_hidden(seed):
    # one object, no distractors: only planned occlusions or the occluder can hide it
    _, _, masks = _clip(seed=seed, num_frames=120, num_objects=1, num_distractors=0, max_hidden=6, **SMALL)
    runs = _absent_runs(masks, 1)
    assert runs
    assert all(1 <= end - start <= 6 and end < len(masks) for start, end in runs)


def test_masks_are_exactly_the_visible_part():
    clip = SynthClip(SynthConfig(seed=2, num_frames=60, num_objects=3, num_distractors=3, height=128, width=224))
    partial = 0
    for t in range(0, 60, 2):
        stats: dict = {}
        frame, mask, layers = clip.render(t, layers=True, stats=stats)
        for index, (kind, label) in enumerate(zip(clip.layer_kinds, clip.layer_labels)):
            on_top = layers == index
            assert np.all(mask[on_top] == label), f"layer {index} ({kind})"
        for drawn, visible in stats.values():
            assert visible <= drawn
            partial += 0 < visible < drawn
    assert partial > 0  # objects are partly covered at times


def test_no_occlusion_plans_nothing():
    clip, _, masks = _clip(seed=0, num_frames=40, num_objects=2, num_distractors=0, occlusion=False, **SMALL)
    assert clip.events == [] and "occluder" not in clip.layer_kinds
    assert all(set(np.unique(m).tolist()) == {0, 1, 2} for m in masks)


def test_distractors_look_like_an_object_but_are_not_labelled():
    clip = SynthClip(SynthConfig(seed=4, num_frames=10, num_objects=2, num_distractors=3, occlusion=False, **SMALL))
    assert len(clip.distractors) == 3 and set(clip.distractors) <= {1, 2}
    layers = clip._layers  # same outline and same texture array as the copied object
    by_label = {layer.label: layer for layer in layers if layer.kind == "object"}
    seen_distractor = 0
    for t in range(10):
        frame, mask, layer_map = clip.render(t, layers=True)
        for index, layer in enumerate(layers):
            if layer.kind != "distractor":
                continue
            source = by_label[layer.copy_of]
            assert layer.category == source.category and layer.texture is source.texture
            pixels = layer_map == index
            assert np.all(mask[pixels] == 0)
            if pixels.sum() > 100 and (mask == source.label).sum() > 100:
                seen_distractor += 1
                colour_d = frame[pixels].mean(axis=0)
                colour_o = frame[mask == source.label].mean(axis=0)
                assert np.abs(colour_d - colour_o).max() < 40
    assert seen_distractor > 0


def test_camera_motion_moves_background_and_objects_together():
    common = dict(seed=5, num_frames=30, num_objects=1, num_distractors=0, occlusion=False, motion_blur=False, lighting=False)
    still, f_still, m_still = _clip(camera_motion=False, **common, **SMALL)
    moving, f_move, m_move = _clip(camera_motion=True, **common, **SMALL)
    # static camera: background pixels never change; moving camera: they do
    def background(clip, t):  # pixels away from every drawn layer (anti-aliased edges excluded)
        drawn = (clip.render(t, layers=True)[2] >= 0).astype(np.uint8)
        return cv2.dilate(drawn, np.ones((5, 5), np.uint8)) == 0

    bg = background(still, 0) & background(still, 25)
    assert bg.sum() > 0.5 * bg.size
    assert np.array_equal(f_still[0][bg], f_still[25][bg])
    bg = background(moving, 0) & background(moving, 25)
    assert np.abs(f_move[0][bg].astype(int) - f_move[25][bg].astype(int)).mean() > 5
    # the object's world path is the same: with the camera it sits where the camera maps it
    checked = 0
    for t in range(0, 30, 3):
        a, b = m_still[t] == 1, m_move[t] == 1
        touches = a[0].any() or a[-1].any() or a[:, 0].any() or a[:, -1].any()
        touches = touches or b[0].any() or b[-1].any() or b[:, 0].any() or b[:, -1].any()
        if touches or a.sum() < 50:
            continue
        ys, xs = np.nonzero(a)
        expected = moving.camera(t) @ np.array([xs.mean(), ys.mean(), 1.0])
        ys, xs = np.nonzero(b)
        assert np.hypot(xs.mean() - expected[0], ys.mean() - expected[1]) < 1.5
        checked += 1
    assert checked >= 5
    assert np.abs(moving.camera(25)[:, 2] - moving.camera(0)[:, 2]).max() > 1.0


def test_motion_blur_changes_frames_not_masks():
    common = dict(seed=3, num_frames=15, num_objects=2, **SMALL)
    _, sharp, m_sharp = _clip(motion_blur=False, **common)
    _, blurred, m_blur = _clip(motion_blur=True, **common)
    assert all(np.array_equal(a, b) for a, b in zip(m_sharp, m_blur))
    assert sum(not np.array_equal(a, b) for a, b in zip(sharp, blurred)) >= 5


def test_scale_and_shape_change():
    _, _, masks = _clip(seed=6, num_frames=100, num_objects=2, num_distractors=0, occlusion=False, camera_motion=False, **SMALL)
    for object_id in (1, 2):
        areas = np.array([(m == object_id).sum() for m in masks])
        assert areas.max() > 1.3 * areas.min()
    _, _, fixed = _clip(
        seed=6, num_frames=100, num_objects=1, num_distractors=0, occlusion=False, camera_motion=False,
        scale_change=False, shape_change=False, object_size=(0.14, 0.15), height=128, width=224,
    )  # fmt: skip
    areas = np.array([(m == 1).sum() for m in fixed if not (m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any())])
    assert len(areas) > 50 and areas.max() < 1.1 * areas.min()  # rotation only


def test_late_entry_objects_appear_after_frame_0():
    clip, _, masks = _clip(seed=1, num_frames=40, num_objects=3, late_entry=True, **SMALL)
    late = [o for o in clip.objects if o.first_frame > 0]
    assert late and clip.objects[0].first_frame == 0
    for obj in late:
        assert not (masks[0] == obj.object_id).any()
        assert any((m == obj.object_id).any() for m in masks[obj.first_frame :])


def test_long_clip_at_small_size():
    clip = SynthClip(SynthConfig(seed=0, num_frames=300, height=48, width=80, num_objects=2))
    count = sum(1 for _ in clip)
    assert count == 300 and len(clip.events) >= 3


@pytest.mark.slow
def test_streaming_2000_frames_at_480p_keeps_memory_bounded():
    config = SynthConfig(seed=0, num_frames=2000, height=480, width=854, num_objects=1, num_distractors=0, motion_blur=False)
    frame_bytes = 480 * 854 * 4
    tracemalloc.start()
    try:
        clip = SynthClip(config)
        assert clip.state_nbytes() < 8 * frame_bytes
        tracemalloc.reset_peak()
        start, _ = tracemalloc.get_traced_memory()
        count = 0
        for frame, mask in clip:
            count += 1
            if count == 100:
                after_100, _ = tracemalloc.get_traced_memory()
        end, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 2000
    assert peak - start < 20 * frame_bytes  # a few frames' worth, not 2,000 (3.3 GB)
    assert end - after_100 < 2 * frame_bytes  # nothing accumulates


def test_config_validation():
    with pytest.raises(VidsegError, match="num_objects"):
        SynthConfig(num_objects=0)
    with pytest.raises(VidsegError, match="height"):
        SynthConfig(height=8)
    with pytest.raises(VidsegError, match="category"):
        SynthConfig(categories=("dragon",))
    with pytest.raises(VidsegError, match="num_frames"):
        SynthConfig(num_frames=2.5)


def test_no_torch_import():
    code = "import sys, vidseg.data.synth, vidseg.cli.data; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# -------------------------------------------------------------------------------------------- writers


def test_davis_layout_reads_back(tmp_path):
    config = SynthConfig(seed=3, num_frames=12, num_objects=3, **SMALL)
    out = write_davis(tmp_path / "davis", 3, config)
    assert (tmp_path / "davis" / "ImageSets" / "2017" / "val.txt").is_file()
    index = DavisIndex(tmp_path / "davis", year="2017", split="val", resolution=None)
    assert index.resolution == "96p"
    train = DavisIndex(tmp_path / "davis", year="2017", split="train", resolution="96p")
    assert sorted(index.names + train.names) == out.sequences
    for seq in list(index) + list(train):
        assert len(seq) == 12 and len(seq.frame_paths) == 12 and len(seq.mask_paths) == 12
        assert seq.frame_names[0] == "00000" and seq.frame_paths[0].name == "00000.jpg"
        assert sorted(seq.objects) == [1, 2, 3]
    # the files are the generated frames and masks
    seq = index.sequence(index.names[0])
    number = out.sequences.index(seq.name)
    from vidseg.data.synth import derive_seed

    clip = SynthClip(SynthConfig(seed=derive_seed(3, number), num_frames=12, num_objects=3, **SMALL))
    for t, (frame, mask) in enumerate(clip):
        assert np.array_equal(read_mask(seq.mask_paths[f"{t:05d}"]), mask)
        image = cv2.cvtColor(cv2.imread(str(seq.frame_paths[t])), cv2.COLOR_BGR2RGB)
        assert np.abs(image.astype(float) - frame).mean() < 6
    single = DavisIndex(tmp_path / "davis", year="2016", split="val", resolution=None)
    assert set(np.unique(single.load_mask(seq.mask_paths["00000"])).tolist()) == {0, 1}
    info = json.loads((tmp_path / "davis" / MARKER_NAME).read_text())
    assert info["complete"] and set(info["sequences"]) == set(out.sequences)


def test_davis_output_is_byte_identical_for_the_same_seed(tmp_path):
    config = SynthConfig(seed=11, num_frames=6, **SMALL)
    write_davis(tmp_path / "a", 2, config)
    write_davis(tmp_path / "b", 2, config)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.suffix in (".jpg", ".png"))
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.suffix in (".jpg", ".png"))
    assert files_a == files_b and len(files_a) == 24
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files_a)


def test_youtube_vos_layout_sparse_late_objects_and_unseen_categories(tmp_path):
    config = SynthConfig(seed=2, num_frames=30, num_objects=3, **SMALL)
    out = write_youtube_vos(tmp_path / "ytvos", 5, config, sparse_every=5)
    index = YouTubeVOSIndex(tmp_path / "ytvos", split="train")
    assert sorted(index.names) == out.sequences
    late = 0
    for seq in index:
        assert len(seq.frame_paths) == 30
        assert sorted(seq.mask_paths) == [f"{t:05d}" for t in range(0, 30, 5)]
        for object_id, obj in seq.objects.items():
            assert obj.category in SHAPES
            for name in seq.annotated_frames:
                present = bool((read_mask(seq.mask_paths[name]) == object_id).any())
                assert present == (name in obj.annotated_frames)
            late += obj.first_frame != "00000"
    assert late > 0, "some object first appears after frame 0"
    held = YouTubeVOSIndex(tmp_path / "ytvos", split="val-20")
    assert len(held) == 1
    categories = {o.category for seq in held for o in seq.objects.values()}
    assert any(not held.is_seen(c) for c in categories)
    train_part = YouTubeVOSIndex(tmp_path / "ytvos", split="train-80")
    assert all(train_part.is_seen(o.category) for seq in train_part for o in seq.objects.values())


def test_video_writer(tmp_path):
    config = SynthConfig(seed=1, num_frames=15, **SMALL)
    video = write_video(tmp_path / "clip.mp4", config)
    capture = cv2.VideoCapture(str(video.video))
    count = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        assert frame.shape == (96, 160, 3)
        count += 1
    capture.release()
    assert count == 15
    assert np.array_equal(read_mask(video.first_mask), read_mask(video.gt_dir / "00000.png"))
    assert set(np.unique(read_mask(video.first_mask)).tolist()) == {0, 1, 2}
    assert len(list(video.gt_dir.glob("*.png"))) == 15
    with pytest.raises(VidsegError, match=".mp4"):
        write_video(tmp_path / "clip.avi", config)


def test_refuses_foreign_folders_and_rewrites_its_own(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(VidsegError, match="not a vidseg synth output"):
        write_davis(foreign, 1, SynthConfig(num_frames=3, **SMALL))
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    (foreign / MARKER_NAME).write_text('{"generator": "someone else"}')
    with pytest.raises(VidsegError):
        make_demo_clip(foreign, num_frames=3, size=(96, 160))
    own = tmp_path / "own"
    write_davis(own, 2, SynthConfig(num_frames=8, **SMALL))
    write_davis(own, 1, SynthConfig(num_frames=4, **SMALL))  # fewer sequences, shorter: nothing stale left
    assert sorted(p.name for p in (own / "JPEGImages" / "96p").iterdir()) == ["synth0000"]
    assert len(list((own / "JPEGImages" / "96p" / "synth0000").iterdir())) == 4
    assert len(list((own / "Annotations" / "96p" / "synth0000").iterdir())) == 4
    assert not list(own.rglob(".*.tmp*"))


def test_make_demo_clip(tmp_path):
    demo = make_demo_clip(tmp_path / "demo", seed=0, num_frames=8, size=(96, 160), num_objects=2)
    assert len(list(demo.frames_dir.glob("*.jpg"))) == 8 and len(list(demo.gt_dir.glob("*.png"))) == 8
    assert set(np.unique(read_mask(demo.first_mask)).tolist()) == {0, 1, 2}
    assert set(demo.objects) == {1, 2}


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_synth_writes_davis(tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(["data", "synth", str(out), "--sequences", "2", "--frames", "6", "--size", "64x96", "--objects", "3", "--seed", "4"])
    assert code == 0
    summary = capsys.readouterr().out.strip().splitlines()
    assert len(summary) == 1 and "2 davis sequences x 6 frames" in summary[0] and "64x96" in summary[0]
    index = DavisIndex(out, split="val", resolution=None)
    assert len(index) == 1 and sorted(index.sequence(index.names[0]).objects) == [1, 2, 3]


def test_cli_synth_youtube_vos_and_video(tmp_path, capsys):
    args = ["--sequences", "1", "--frames", "11", "--size", "64x96", "--no-occlusion", "--no-camera-motion", "--no-blur"]
    assert main(["data", "synth", str(tmp_path / "yt"), "--layout", "youtube-vos", "--sparse-every", "2", *args]) == 0
    index = YouTubeVOSIndex(tmp_path / "yt", split="train")
    assert sorted(index.sequence("synth0000").mask_paths) == [f"{t:05d}" for t in range(0, 11, 2)]
    assert main(["data", "synth", str(tmp_path / "vid"), "--layout", "video", *args]) == 0
    assert (tmp_path / "vid" / "synth0000.mp4").stat().st_size > 0
    assert (tmp_path / "vid" / "synth0000_mask.png").is_file()
    info = json.loads((tmp_path / "vid" / MARKER_NAME).read_text())
    assert info["config"]["occlusion"] is False and info["config"]["camera_motion"] is False


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--size", "256by448"], "--size"),
        (["--size", "16x448"], "--size height"),
        (["--objects", "0"], "--objects"),
        (["--objects", "99"], "--objects"),
        (["--frames", "0"], "--frames"),
        (["--distractors", "-1"], "--distractors"),
        (["--seed", "-3"], "--seed"),
        (["--sequences", "0"], "--sequences"),
        (["--jpeg-quality", "0"], "--jpeg-quality"),
        (["--sparse-every", "0"], "--sparse-every"),
    ],
)
def test_cli_bad_input(tmp_path, capsys, extra, message):
    code = main(["data", "synth", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("vidseg: error:") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_cli_refuses_non_empty_folder(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("x")
    assert main(["data", "synth", str(tmp_path), "--frames", "3"]) == 2
    assert "not a vidseg synth output" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_cli_unknown_layout_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["data", "synth", str(tmp_path / "x"), "--layout", "coco"])
    assert exc.value.code == 2


def test_cli_data_without_action_prints_help(capsys):
    assert main(["data"]) == 2
    assert "synth" in capsys.readouterr().err


def test_interrupted_run_can_be_rewritten_and_videos_accumulate(tmp_path):
    def stop(_):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_davis(tmp_path / "d", 2, SynthConfig(num_frames=5, **SMALL), progress=stop)
    assert not json.loads((tmp_path / "d" / MARKER_NAME).read_text())["complete"]
    assert not list((tmp_path / "d").rglob(".*.tmp*"))  # no half-written files
    out = write_davis(tmp_path / "d", 2, SynthConfig(num_frames=5, **SMALL))
    assert out.num_frames == 10 and json.loads((tmp_path / "d" / MARKER_NAME).read_text())["complete"]
    # several videos can be written into one folder, one call each
    config = SynthConfig(num_frames=3, **SMALL)
    write_video(tmp_path / "v" / "a.mp4", config)
    write_video(tmp_path / "v" / "b.mp4", config)
    write_video(tmp_path / "v" / "a.mp4", config)  # rewriting one keeps the other
    names = sorted(p.name for p in (tmp_path / "v").iterdir())
    assert names == ["a.mp4", "a_gt", "a_mask.png", "b.mp4", "b_gt", "b_mask.png", MARKER_NAME]
