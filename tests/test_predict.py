"""``vidseg predict``: a split into the benchmark's layout, equal to the per-video ``segment`` loop, in parallel, under
torchrun, resumed per video, with failures reported and the YouTube-VOS submission zip."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vidseg.cli.main import main
from vidseg.data.synth import SynthConfig, write_davis, write_youtube_vos
from vidseg.errors import VidsegError
from vidseg.evaluation import evaluate
from vidseg.inference.methods import build_propagator
from vidseg.inference.predict import (
    MethodRecipe,
    ResultsFolder,
    predict_videos,
    shard,
)
from vidseg.inference.predict_tasks import VideoTask, davis_tasks, given_mask_files, youtube_vos_tasks
from vidseg.inference.runner import segment_video
from vidseg.io.masks import object_ids, read_mask, write_mask

SMALL = SynthConfig(seed=5, num_frames=12, height=48, width=64, num_objects=2)


def masks_of(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: read_mask(p) for p in sorted(folder.glob("*.png"))}


def same_masks(a: Path, b: Path) -> bool:
    first, second = masks_of(a), masks_of(b)
    return first.keys() == second.keys() and all(np.array_equal(first[k], second[k]) for k in first)


@pytest.fixture
def davis(tmp_path: Path) -> Path:
    root = tmp_path / "davis"
    write_davis(root, 3, SMALL, val_fraction=1.0, years=("2017",))
    return root


def predict(*args: str) -> int:
    return main(["predict", "--quiet", *args])


def test_davis_split_equals_the_segment_loop_and_scores(davis, tmp_path, capsys):
    assert predict("--root", str(davis), "--method", "flow", "--out", str(tmp_path / "R"), "--score") == 0
    printed = capsys.readouterr().out
    assert "Global results" in printed and "J&F-Mean" in printed
    tasks = davis_tasks(davis, tmp_path / "loop", "2017", "val", "48p", "semi-supervised").tasks
    assert len(tasks) == 3
    for task in tasks:  # the loop a user would write: segment each video from its first annotation
        first = davis / "Annotations" / "48p" / task.name / "00000.png"
        segment_video(task.video, [first], tmp_path / "loop" / task.name, method="flow", progress=False)
        assert same_masks(tmp_path / "R" / task.name, tmp_path / "loop" / task.name)
    loop = evaluate(davis, tmp_path / "loop", year="2017", split="val", resolution="48p")
    saved = json.loads((tmp_path / "R" / "results-val.json").read_text())
    assert saved["global"]["J&F-Mean"] == pytest.approx(loop.global_metrics["J&F-Mean"], abs=1e-12)


def test_shared_davis_2016_with_two_jobs_as_the_readme_shows(davis_240p, tmp_path, capsys):
    """The README's command on two real videos: layout and resolution detected, two worker processes."""
    videos = ["boat", "rhino"]
    code = predict("--dataset", "davis", "--root", str(davis_240p), "--year", "2016", "--set", "train",
                   "--sequences", *videos, "--method", "flow", "--out", str(tmp_path / "R"), "--score", "--jobs", "2")
    assert code == 0
    assert "boat_1" in capsys.readouterr().out
    for name in videos:
        segment_video(davis_240p / "JPEGImages" / "240p" / name, [davis_240p / "Annotations" / "240p" / name /
                                                                  "00000.png"],
                      tmp_path / "loop" / name, method="flow", progress=False)
        assert same_masks(tmp_path / "R" / name, tmp_path / "loop" / name)


def test_a_rerun_continues_and_refuses_another_method(davis, tmp_path, capsys):
    out = tmp_path / "R"
    assert predict("--root", str(davis), "--method", "flow", "--out", str(out), "--sequences", "synth0000") == 0
    done = (out / ".vidseg-predict" / "done" / "synth0000.json").stat().st_mtime_ns
    assert predict("--root", str(davis), "--method", "flow", "--out", str(out)) == 0
    assert "1 videos done by an earlier run" in capsys.readouterr().out
    assert (out / ".vidseg-predict" / "done" / "synth0000.json").stat().st_mtime_ns == done  # not redone
    assert predict("--root", str(davis), "--method", "flow", "--out", str(out), "--set", "train") == 2
    error = capsys.readouterr().err
    assert "holds the results of another run (set 'val', now 'train')" in error and "--overwrite" in error
    assert predict("--root", str(davis), "--method", "flow", "--out", str(out), "--overwrite") == 0
    assert (out / ".vidseg-predict" / "done" / "synth0000.json").stat().st_mtime_ns != done


class _StopAfter:
    """A propagator that stops (as Ctrl-C does) after ``frames`` frames, then behaves as ``inner``."""

    def __init__(self, inner, frames: int):
        self.inner, self.left = inner, frames

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def propagate(self, state, frame):
        if self.left == 0:
            raise KeyboardInterrupt
        self.left -= 1
        return self.inner.propagate(state, frame)


def test_interrupted_then_rerun_equals_an_uninterrupted_run(davis, tmp_path):
    tasks = davis_tasks(davis, tmp_path / "R", "2017", "val", "48p", "semi-supervised").tasks
    results = ResultsFolder(tmp_path / "R", {"method": "flow"})
    results.start(overwrite=False)
    flow = build_propagator("flow")
    with pytest.raises(KeyboardInterrupt):
        # the second video stops at its 7th frame, after a resume point at its 4th
        predict_videos(tasks, results, _StopAfter(flow, 12 + 5), save_every=4)
    assert len(results.unfinished(tasks)) == 2
    assert any((Path(t.out_dir) / ".vidseg-resume.npz").is_file() for t in tasks)
    outcomes = predict_videos(tasks, results, flow)
    assert sum(o.earlier for o in outcomes) == 1 and not results.unfinished(tasks)
    whole = davis_tasks(davis, tmp_path / "whole", "2017", "val", "48p", "semi-supervised").tasks
    predict_videos(whole, ResultsFolder(tmp_path / "whole", {}), flow)
    for task in tasks:
        assert same_masks(Path(task.out_dir), tmp_path / "whole" / task.name)
        assert not (Path(task.out_dir) / ".vidseg-resume.npz").exists()


def test_a_corrupt_video_is_named_and_the_others_finish(davis, tmp_path, capsys):
    broken = davis / "JPEGImages" / "48p" / "synth0001" / "00004.jpg"
    good = broken.read_bytes()
    broken.write_bytes(b"not a jpeg")
    out = tmp_path / "R"
    assert predict("--root", str(davis), "--method", "flow", "--out", str(out), "--score") == 1
    error = capsys.readouterr().err
    assert "video synth0001:" in error and "00004.jpg" in error and "1 of 3 videos failed" in error
    assert (out / ".vidseg-predict" / "done" / "synth0000.json").is_file()
    assert (out / ".vidseg-predict" / "done" / "synth0002.json").is_file()
    broken.write_bytes(good)
    assert predict("--root", str(davis), "--method", "flow", "--out", str(out), "--score") == 0
    assert "2 videos done by an earlier run" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--jobs", "0"], "--jobs must be at least 1"),
    (["--masks", "m"], "--masks applies to --dataset folder"),
    (["--task", "unsupervised"], "needs the mask of each object"),
    (["--sequences", "nope"], "nope not found"),
])
def test_bad_options_are_one_line_errors(davis, tmp_path, capsys, args, message):
    layout = ["--year", "2017", "--resolution", "48p"]  # given: no line saying what was detected
    assert predict("--root", str(davis), *layout, "--method", "flow", "--out", str(tmp_path / "R"), *args) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert not (tmp_path / "R").exists()


def test_an_out_folder_of_something_else_is_refused(davis, tmp_path, capsys):
    (tmp_path / "R").mkdir()
    (tmp_path / "R" / "notes.txt").write_text("mine")
    assert predict("--root", str(davis), "--method", "flow", "--out", str(tmp_path / "R")) == 2
    assert "holds files of something else" in capsys.readouterr().err
    assert (tmp_path / "R" / "notes.txt").read_text() == "mine"


def youtube_vos_valid(train_root: Path, root: Path) -> Path:
    """The server's ``valid`` layout from a generated ``train`` one: every 5th frame as JPEG, and annotations only
    where objects start, each holding only the objects that start there."""
    meta = json.loads((train_root / "train" / "meta.json").read_text())["videos"]
    for video, entry in meta.items():
        frames = sorted((train_root / "train" / "JPEGImages" / video).glob("*.jpg"))
        for frame in frames[::5]:
            target = root / "valid" / "JPEGImages" / video / frame.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(frame, target)
        starts: dict[str, list[int]] = {}
        for object_id, info in entry["objects"].items():
            starts.setdefault(info["frames"][0], []).append(int(object_id))
        for frame, ids in starts.items():
            mask = read_mask(train_root / "train" / "Annotations" / video / f"{frame}.png")
            write_mask(root / "valid" / "Annotations" / video / f"{frame}.png", np.where(np.isin(mask, ids), mask, 0))
    (root / "valid" / "meta.json").write_text(json.dumps({"videos": meta}))
    return root


def test_youtube_vos_valid_writes_the_submission_zip(tmp_path, capsys):
    write_youtube_vos(tmp_path / "train", 3, SynthConfig(seed=2, num_frames=16, height=48, width=64, num_objects=2))
    root = youtube_vos_valid(tmp_path / "train", tmp_path / "yt")
    out = tmp_path / "R"
    assert predict("--dataset", "youtube-vos", "--root", str(root), "--method", "flow", "--out", str(out),
                   "--score") == 0
    captured = capsys.readouterr()
    assert "not scored: YouTube-VOS valid has no public ground truth" in captured.err
    with zipfile.ZipFile(out / "submission.zip") as archive:
        names = sorted(archive.namelist())
        expected = sorted(f"Annotations/{p.parent.name}/{p.stem}.png"
                          for p in (root / "valid" / "JPEGImages").glob("*/*.jpg"))
        assert names == expected  # every frame of every video, nothing else
        for name in names:
            with archive.open(name) as handle:
                assert Image.open(handle).mode == "P"
    meta = json.loads((root / "valid" / "meta.json").read_text())["videos"]
    for video, entry in meta.items():
        for object_id, info in entry["objects"].items():
            first = info["frames"][0]
            given = read_mask(root / "valid" / "Annotations" / video / f"{first}.png")
            result = read_mask(out / "Annotations" / video / f"{first}.png")
            assert np.array_equal(result == int(object_id), given == int(object_id))
            for earlier in sorted((out / "Annotations" / video).glob("*.png")):
                if earlier.stem < first:  # an object is absent before its first annotation
                    assert int(object_id) not in object_ids(read_mask(earlier))


def test_youtube_vos_local_split_gives_each_object_only_where_it_starts(tmp_path, capsys):
    write_youtube_vos(tmp_path / "yt", 5, SynthConfig(seed=4, num_frames=16, height=48, width=64, num_objects=2))
    split = youtube_vos_tasks(tmp_path / "yt", tmp_path / "R", "train", "semi-supervised")
    meta = json.loads((tmp_path / "yt" / "train" / "meta.json").read_text())["videos"]
    cut = 0
    for task in split.tasks:
        starts = {info["frames"][0]: int(i) for i, info in meta[task.name]["objects"].items()}
        for file in given_mask_files(task, tmp_path / "given" / task.name):
            assert object_ids(read_mask(file)) == sorted(i for f, i in starts.items() if f == file.stem)
            cut += file.parent == tmp_path / "given" / task.name
    assert cut > 0  # some annotation held an object seen before: that one was left out
    assert predict("--dataset", "youtube-vos", "--root", str(tmp_path / "yt"), "--set", "val-20", "--method", "flow",
                   "--out", str(tmp_path / "R"), "--score") == 0
    assert "Global results" in capsys.readouterr().out


def test_a_folder_of_videos_with_and_without_masks(tmp_path, capsys, square_clip):
    frames, _, first = square_clip
    videos, masks = tmp_path / "videos", tmp_path / "masks"
    shutil.copytree(frames, videos / "clip_a")
    shutil.copytree(frames, videos / "clip_b")
    masks.mkdir()
    shutil.copy(first, masks / "clip_a.png")
    (masks / "clip_b").mkdir()
    shutil.copy(first, masks / "clip_b" / "00000.png")
    out = tmp_path / "R"
    assert predict("--dataset", "folder", "--root", str(videos), "--masks", str(masks), "--method", "flow", "--out",
                   str(out), "--score") == 0
    assert "not scored" in capsys.readouterr().err
    assert same_masks(out / "clip_a", out / "clip_b") and len(masks_of(out / "clip_a")) == len(os.listdir(frames))
    assert predict("--dataset", "folder", "--root", str(videos), "--method", "flow", "--out", str(tmp_path / "Z")) == 2
    assert "needs the mask of each object" in capsys.readouterr().err
    (masks / "clip_b" / "00000.png").unlink()
    (masks / "clip_b").rmdir()
    with pytest.raises(VidsegError, match="no mask for video 'clip_b'"):
        from vidseg.inference.predict_tasks import folder_tasks

        folder_tasks(videos, out, masks)


def test_shards_are_balanced_by_length_and_cover_every_video():
    tasks = [VideoTask(f"v{i}", "", (), frames, "") for i, frames in enumerate([90, 10, 50, 40, 30, 70, 20])]
    shares = [shard(tasks, 3, rank) for rank in range(3)]
    assert sorted(t.name for share in shares for t in share) == sorted(t.name for t in tasks)
    loads = [sum(t.num_frames for t in share) for share in shares]
    assert max(loads) - min(loads) <= 20 and shares[0][0].name == "v0"  # the longest first


def test_worker_processes_give_the_masks_of_one_process(davis, tmp_path):
    tasks = davis_tasks(davis, tmp_path / "one", "2017", "val", "48p", "semi-supervised").tasks
    predict_videos(tasks, ResultsFolder(tmp_path / "one", {}), MethodRecipe("flow"))
    two = davis_tasks(davis, tmp_path / "two", "2017", "val", "48p", "semi-supervised").tasks
    outcomes = predict_videos(two, ResultsFolder(tmp_path / "two", {}), MethodRecipe("flow"), jobs=2)
    assert sorted(o.name for o in outcomes) == sorted(t.name for t in tasks) and not any(o.error for o in outcomes)
    for task in tasks:
        assert same_masks(tmp_path / "one" / task.name, tmp_path / "two" / task.name)


@pytest.mark.slow
def test_torchrun_two_gloo_processes_give_the_masks_of_one(davis, tmp_path):
    common = ["predict", "--root", str(davis), "--method", "flow", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
               "vidseg.cli.main", *common, "--out", str(tmp_path / "two"), "--score"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("Global results") == 1  # rank 0 scores, once
    done = sorted(p.stem for p in (tmp_path / "two" / ".vidseg-predict" / "done").glob("*.json"))
    assert done == ["synth0000", "synth0001", "synth0002"]
    for name in done:
        assert same_masks(tmp_path / "one" / name, tmp_path / "two" / name)


def test_a_video_left_half_written_by_a_hard_kill_is_redone_exactly(davis, tmp_path):
    """What a kill before any resume point leaves: some masks, no resume point, no done record."""
    tasks = davis_tasks(davis, tmp_path / "R", "2017", "val", "48p", "semi-supervised").tasks
    results = ResultsFolder(tmp_path / "R", {})
    predict_videos(tasks, results, MethodRecipe("flow"))
    whole = {task.name: masks_of(Path(task.out_dir)) for task in tasks}
    (results.folder / "done" / "synth0002.json").unlink()
    for png in sorted((tmp_path / "R" / "synth0002").glob("*.png"))[6:]:
        png.unlink()
    outcomes = predict_videos(tasks, results, MethodRecipe("flow"))
    assert [o.name for o in outcomes if not o.earlier] == ["synth0002"]
    for task in tasks:
        again = masks_of(Path(task.out_dir))
        assert again.keys() == whole[task.name].keys()
        assert all(np.array_equal(again[k], whole[task.name][k]) for k in again)


@pytest.mark.slow
def test_killed_and_rerun_gives_the_masks_of_an_uninterrupted_run(davis_240p, tmp_path):
    """SIGKILL of the whole command while it writes (after its first video), then the same command again."""
    import signal
    import time

    common = [sys.executable, "-m", "vidseg.cli.main", "predict", "--root", str(davis_240p), "--set", "train",
              "--sequences", "boat", "hockey", "--method", "match", "--max-side", "256", "--quiet",
              "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    assert subprocess.run([*common, "--out", str(tmp_path / "whole")], env=env, timeout=600).returncode == 0
    killed = subprocess.Popen([*common, "--out", str(tmp_path / "R")], env=env, start_new_session=True)
    done = tmp_path / "R" / ".vidseg-predict" / "done"
    deadline = time.monotonic() + 300
    while killed.poll() is None and not (done.is_dir() and any(done.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # into the next video
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert len(list(done.iterdir())) < 2  # it was stopped before the end
    assert subprocess.run([*common, "--out", str(tmp_path / "R")], env=env, timeout=600).returncode == 0
    for name in ("boat", "hockey"):
        assert same_masks(tmp_path / "R" / name, tmp_path / "whole" / name)


def test_zero_shot_method_on_the_unsupervised_task(tmp_path, capsys):
    root = tmp_path / "davis"
    write_davis(root, 2, SynthConfig(seed=1, num_frames=8, height=48, width=64, num_objects=1), val_fraction=1.0,
                years=("2016",))
    assert predict("--root", str(root), "--task", "unsupervised", "--method", "rvos", "--out", str(tmp_path / "R"),
                   "--score") == 0
    assert "Global results for unsupervised" in capsys.readouterr().out
    assert not (tmp_path / "R" / ".vidseg-predict" / "given").exists()  # no mask was given


def test_a_folder_of_video_files_beside_their_mask_folders(tmp_path, capsys):
    from vidseg.data.synth import write_videos

    write_videos(tmp_path / "videos", 2, SynthConfig(seed=1, num_frames=8, height=48, width=64))
    masks = tmp_path / "masks"
    masks.mkdir()
    for name in ("synth0000", "synth0001"):
        shutil.copy(tmp_path / "videos" / f"{name}_mask.png", masks / f"{name}.png")
    out = tmp_path / "R"
    assert predict("--dataset", "folder", "--root", str(tmp_path / "videos"), "--masks", str(masks), "--method",
                   "flow", "--out", str(out)) == 0
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["synth0000", "synth0001"]
    assert len(masks_of(out / "synth0000")) == 8  # the *_gt folders of palette PNGs are masks, not videos
