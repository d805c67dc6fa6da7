"""A method that discovers objects, added as a plugin (tests/plugins/bright_spots.py, registered through the
``vidseg.methods`` entry points): it appears in ``--help``, ``segment`` runs it without a mask, ids stay
stable, a SIGKILLed run resumes to identical masks, and ``vidseg eval --task unsupervised`` scores it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import PLUGINS

from vidseg import registry, weights
from vidseg.cli.main import main
from vidseg.errors import VidsegError
from vidseg.inference.runner import segment_video
from vidseg.inference.session import InferenceSession
from vidseg.io.masks import read_mask, write_mask


def spots_clip(num_frames: int = 36, size: tuple[int, int] = (72, 128)) -> tuple[np.ndarray, np.ndarray]:
    """Dark noisy frames with three bright disks: 1 crosses the frame, 2 enters at the left around frame 10,
    3 leaves at the bottom around frame 22. Returns frames (T, H, W, 3) and id masks (T, H, W)."""
    height, width = size
    rng = np.random.default_rng(0)
    frames, masks = [], []
    for t in range(num_frames):
        frame = rng.integers(10, 60, (height, width, 3), dtype=np.uint8)
        mask = np.zeros((height, width), np.uint8)
        for object_id, (x, y) in {1: (20 + 2 * t, 20), 2: (-30 + 3 * t, 50), 3: (100, 30 + 2 * t)}.items():
            disk = np.zeros((height, width), np.uint8)
            cv2.circle(disk, (x, y), 9, 1, -1)
            mask[disk > 0] = object_id
            frame[disk > 0] = 240
        frames.append(frame)
        masks.append(mask)
    return np.stack(frames), np.stack(masks)


def write_frames(folder: Path, frames: np.ndarray) -> Path:
    folder.mkdir(parents=True)
    for t, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{t:05d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return folder


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(PLUGINS), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "vidseg.cli.main", *args], capture_output=True, text=True,
                          env=environment, check=False)


def read_masks(folder: Path) -> np.ndarray:
    return np.stack([read_mask(p) for p in sorted(folder.glob("*.png"))])


@pytest.fixture
def spots(plugin):
    """The plugin's module, its method registered in this process."""
    return plugin("bright_spots")


def test_the_session_adopts_discovered_tracks_with_stable_ids(spots):
    frames, truth = spots_clip()
    session = InferenceSession(spots.BrightSpots())
    outputs = np.stack([session.step(frame) for frame in frames])
    for object_id in (1, 2, 3):
        present = (truth == object_id).reshape(len(truth), -1).any(axis=1)
        # every frame in which the disk is whole enough gets one and the same id
        found = {int(np.bincount(outputs[t][truth[t] == object_id]).argmax()) for t in np.flatnonzero(present)
                 if (truth[t] == object_id).sum() >= 40}
        assert len(found) == 1 and 0 not in found, (object_id, found)
    assert sorted(session.objects.used_ids) == [1, 2, 3]
    assert set(session.scores) == set(np.unique(outputs[-1])) - {0}
    assert all(0.6 < s <= 1.0 for s in session.scores.values())  # disks at 240 over a threshold of 200


def test_remove_and_correct_discovered_objects(spots):
    frames, truth = spots_clip()
    session = InferenceSession(spots.BrightSpots())
    for frame in frames[:5]:
        output = session.step(frame)
    first_ids = sorted(int(i) for i in np.unique(output) if i)
    assert len(first_ids) == 2
    session.remove_object(first_ids[0])
    output = session.step(frames[5])
    assert first_ids[0] not in session.object_ids
    assert first_ids[1] in np.unique(output)
    # A user mask with a discovered object's id restarts that object: it now owns the given pixels.
    given = np.zeros_like(truth[6])
    given[truth[6] == 3] = first_ids[1]
    output = session.step(frames[6], given)
    assert (output[truth[6] == 3] == first_ids[1]).all()
    with pytest.raises(ValueError, match="not tracked"):
        session.remove_object(99)


def test_a_session_state_resumes_exactly(spots):
    frames, _ = spots_clip()
    whole = InferenceSession(spots.BrightSpots())
    expected = [whole.step(frame) for frame in frames]
    first = InferenceSession(spots.BrightSpots())
    for frame in frames[:15]:
        first.step(frame)
    saved = first.state_dict()
    resumed = InferenceSession(spots.BrightSpots())
    resumed.load_state_dict(saved)
    assert all((resumed.step(frame) == expected[t]).all() for t, frame in enumerate(frames[15:], start=15))


def test_segment_without_mask_needs_a_discovering_method(tmp_path, capsys, spots, monkeypatch):
    frames = write_frames(tmp_path / "frames", spots_clip(num_frames=4)[0])
    assert main(["segment", str(frames), "--out", str(tmp_path / "out"), "--method", "flow", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "flow' needs the mask of each object" in error and "bright-spots" in error
    registry.unregister(spots.SPEC.name)
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)  # no bundled weights: rvos cannot run either
    with pytest.raises(VidsegError, match="the methods that discover objects need trained weights: rvos"):
        segment_video(frames, None, tmp_path / "out2", progress=False)
    monkeypatch.setattr(registry, "zero_shot_methods", lambda: [])
    monkeypatch.setattr("vidseg.inference.methods.zero_shot_methods", lambda: [])
    with pytest.raises(VidsegError, match="no installed method discovers objects"):
        segment_video(frames, None, tmp_path / "out2", progress=False)


@pytest.mark.slow
def test_plugin_runs_from_the_command_line_and_is_scored_unsupervised(tmp_path):
    assert "bright-spots" in "".join(run_cli("segment", "--help").stdout.split())  # argparse wraps lines
    frames, truth = spots_clip()
    root = tmp_path / "davis"
    write_frames(root / "JPEGImages" / "480p" / "spots", frames)
    for t, mask in enumerate(truth):
        write_mask(root / "Annotations_unsupervised" / "480p" / "spots" / f"{t:05d}.png", mask)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("spots\n")

    result = run_cli("segment", str(root / "JPEGImages" / "480p" / "spots"), "--out", str(tmp_path / "res" / "spots"),
                     "--method", "bright-spots", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "3 object(s) with 'bright-spots'" in result.stdout

    scored = run_cli("eval", "--gt", str(root), "--results", str(tmp_path / "res"), "--task", "unsupervised",
                     "--no-plots", "--out", str(tmp_path / "scores"))
    assert scored.returncode == 0, scored.stderr
    metrics = json.loads(next((tmp_path / "scores").glob("results-*.json")).read_text())
    assert metrics["global"]["J&F-Mean"] > 0.9, metrics["global"]


@pytest.mark.slow
def test_sigkill_then_resume_gives_identical_masks(tmp_path):
    frames = write_frames(tmp_path / "frames", spots_clip()[0])
    script = textwrap.dedent(f"""
        from vidseg.inference.runner import segment_video
        segment_video({str(frames)!r}, None, {str(tmp_path / "out")!r}, method="bright-spots", progress=False,
                      save_every=8)
    """)
    environment = {**os.environ, "PYTHONPATH": str(PLUGINS), "BRIGHT_SPOTS_KILL_AT": "21"}
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment,
                            check=False)
    assert killed.returncode == -9, killed.stderr
    # frames 0..19 were segmented; their masks are written behind the method (up to 4 queued and 1 being written),
    # so 15..20 are on disk, and the last periodic resume point is the one after frame 15, or after 7 when mask 15
    # was still being written
    assert 15 <= len(list((tmp_path / "out").glob("*.png"))) <= 20
    resumed = run_cli("segment", str(frames), "--method", "bright-spots", "--out", str(tmp_path / "out"), "--resume",
                      "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed at frame 16" in resumed.stdout or "resumed at frame 8" in resumed.stdout, resumed.stdout
    full = run_cli("segment", str(frames), "--method", "bright-spots", "--out", str(tmp_path / "full"), "--quiet")
    assert full.returncode == 0, full.stderr
    assert (read_masks(tmp_path / "out") == read_masks(tmp_path / "full")).all()


def test_a_broken_plugin_is_a_warning_not_a_crash(tmp_path, monkeypatch):
    info = tmp_path / "broken-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[vidseg.methods]\nbroken = no_such_module:SPEC\n")
    result = subprocess.run([sys.executable, "-c", "from vidseg.registry import method_names; print(method_names())"],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tmp_path)}, check=False)
    assert result.returncode == 0 and "'flow'" in result.stdout
    assert "method plugin 'broken' (no_such_module:SPEC) not loaded" in result.stderr
