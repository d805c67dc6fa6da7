"""Interrupted `vidseg segment` runs keep complete masks and continue with --resume to the same result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import moving_squares, tiny_network

from vidseg.cli.main import main
from vidseg.errors import VidsegError
from vidseg.inference.recurrent import RecurrentPropagator
from vidseg.inference.runner import RESUME_FILE, segment_video
from vidseg.io.masks import read_mask, write_mask


def write_clip(folder: Path, num_frames: int = 14, size=(64, 96)) -> tuple[Path, Path]:
    frames, masks = moving_squares(num_frames=min(num_frames, 60), size=size)
    (folder / "frames").mkdir(parents=True)
    for t in range(num_frames):  # longer clips loop over the first 60 frames
        cv2.imwrite(str(folder / "frames" / f"{t:05d}.jpg"), cv2.cvtColor(frames[t % 60], cv2.COLOR_RGB2BGR))
    write_mask(folder / "first.png", masks[0])
    return folder / "frames", folder / "first.png"


def interrupt_at(propagator, frame_number: int):
    """Make ``propagator`` raise KeyboardInterrupt (as Ctrl-C does) when asked for that frame."""
    propagate, calls = propagator.propagate, [0]

    def interrupted(state, frame):
        calls[0] += 1
        if calls[0] == frame_number:
            raise KeyboardInterrupt
        return propagate(state, frame)

    propagator.propagate = interrupted
    return propagator


def assert_same_masks(a: Path, b: Path) -> None:
    names = sorted(p.name for p in b.glob("[0-9]*.png"))
    assert sorted(p.name for p in a.iterdir()) == names
    for name in names:
        assert np.array_equal(read_mask(a / name), read_mask(b / name)), name


@pytest.mark.parametrize("name, flow_prior", [("s2s++", False), ("hs2s", False), ("s2s++", True)])
def test_recurrent_resume_gives_the_uninterrupted_masks(tmp_path, name, flow_prior):
    frames, first = write_clip(tmp_path)
    model = tiny_network(name, flow_prior=flow_prior)
    full = segment_video(frames, [first], tmp_path / "full", method=RecurrentPropagator(model, max_side=96),
                         progress=False)
    with pytest.raises(KeyboardInterrupt):
        segment_video(frames, [first], tmp_path / "out", progress=False,
                      method=interrupt_at(RecurrentPropagator(model, max_side=96), 6))
    assert len(list((tmp_path / "out").glob("*.png"))) == 6 and (tmp_path / "out" / RESUME_FILE).is_file()
    resumed = segment_video(frames, [first], tmp_path / "out", method=RecurrentPropagator(model, max_side=96),
                            progress=False, resume=True)
    assert resumed.resumed_at == 6 and full.resumed_at == 0
    assert_same_masks(tmp_path / "out", tmp_path / "full")


def test_online_learning_state_resumes(tmp_path):
    frames, first = write_clip(tmp_path, num_frames=8)
    model = tiny_network("s2s++")

    def online():
        return RecurrentPropagator(model, max_side=96, online_steps=2, online_batch=1)

    segment_video(frames, [first], tmp_path / "full", method=online(), progress=False)
    with pytest.raises(KeyboardInterrupt):
        segment_video(frames, [first], tmp_path / "out", method=interrupt_at(online(), 4), progress=False)
    with pytest.raises(VidsegError, match="same --online-steps"):
        segment_video(frames, [first], tmp_path / "out", method=RecurrentPropagator(model, max_side=96),
                      progress=False, resume=True)
    segment_video(frames, [first], tmp_path / "out", method=online(), progress=False, resume=True)
    assert_same_masks(tmp_path / "out", tmp_path / "full")


def test_resume_after_a_hard_kill_uses_the_periodic_resume_point(tmp_path):
    """SIGKILL cannot be caught: the run continues from the last periodic resume point."""
    frames, first = write_clip(tmp_path, num_frames=16)
    script = textwrap.dedent(f"""
        import os, signal
        from vidseg.inference.flow import FlowPropagator
        from vidseg.inference.runner import segment_video

        class Killed(FlowPropagator):
            calls = 0
            def propagate(self, state, frame):
                Killed.calls += 1
                if Killed.calls == 11:
                    os.kill(os.getpid(), signal.SIGKILL)
                return super().propagate(state, frame)

        segment_video({str(frames)!r}, [{str(first)!r}], {str(tmp_path / "out")!r}, method=Killed(),
                      progress=False, save_every=4)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == -signal.SIGKILL, result.stderr
    # frames 0..10 were segmented; their masks are written behind the network (up to 4 queued and 1 being written),
    # so the last few may be missing, and the resume point is the periodic one after frame 7 (or after frame 3 when
    # mask 7 was still being written)
    on_disk = len(list((tmp_path / "out").glob("*.png")))
    assert 6 <= on_disk <= 11
    (tmp_path / "out" / ".00011.x1_y.tmp.png").write_bytes(b"half a png")  # killed while writing
    resumed = segment_video(frames, [first], tmp_path / "out", method="flow", progress=False, resume=True)
    assert resumed.resumed_at in (4, 8) and resumed.resumed_at <= on_disk
    segment_video(frames, [first], tmp_path / "full", method="flow", progress=False)
    assert_same_masks(tmp_path / "out", tmp_path / "full")


def test_resume_checks_what_it_continues(tmp_path, capsys):
    frames, first = write_clip(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        segment_video(frames, [first], out, method=interrupt_at(RecurrentPropagator(tiny_network("s2s"), max_side=96), 5),
                      progress=False)
    with pytest.raises(VidsegError, match="another method .*'s2s', now 'flow'"):
        segment_video(frames, [first], out, method="flow", progress=False, resume=True)
    assert main(["segment", str(frames), "--mask", str(first), "--out", str(out), "--method", "flow", "--quiet"]) == 2
    assert "--resume" in capsys.readouterr().err  # the error suggests resuming
    assert main(["segment", str(frames), "--mask", str(first), "--out", str(out), "--resume", "--overwrite"]) == 2
    assert "exclude each other" in capsys.readouterr().err
    (out / RESUME_FILE).write_bytes(b"not a state file")
    with pytest.raises(VidsegError, match="cannot read the resume point"):
        segment_video(frames, [first], out, method="flow", progress=False, resume=True)
    # a complete run has nothing to resume
    done = tmp_path / "done"
    segment_video(frames, [first], done, method="flow", progress=False)
    with pytest.raises(VidsegError, match="already complete"):
        segment_video(frames, [first], done, method="flow", progress=False, resume=True)


@pytest.mark.slow
def test_ctrl_c_on_the_command_line_then_resume(tmp_path):
    """A real SIGINT to `vidseg segment`: exit 130, complete masks, and --resume finishes the same masks."""
    frames, first = write_clip(tmp_path, num_frames=200, size=(128, 224))
    out = tmp_path / "out"
    # A shell that starts the suite in the background ignores SIGINT, and children inherit that: restore it.
    cli = "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); " \
          "from vidseg.cli.main import main; sys.exit(main())"
    command = [sys.executable, "-c", cli, "segment", str(frames), "--mask", str(first), "--method", "flow", "--quiet"]
    process = subprocess.Popen([*command, "--out", str(out)], stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 60
    while len(list(out.glob("[0-9]*.png"))) < 10 and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    done = sorted(out.glob("[0-9]*.png"))
    assert process.returncode == 130 and "interrupted" in err
    assert 10 <= len(done) < 200 and (out / RESUME_FILE).is_file()
    for path in done:
        assert read_mask(path).shape == (128, 224)
    finished = subprocess.run([*command, "--out", str(out), "--resume"], capture_output=True, text=True, check=False)
    # A Ctrl-C that lands between writing a mask and recording it costs that one frame again (same mask).
    resumed = {f"resumed at frame {len(done)}", f"resumed at frame {len(done) - 1}"}
    assert finished.returncode == 0 and any(r in finished.stdout for r in resumed), finished.stderr
    subprocess.run([*command, "--out", str(tmp_path / "full")], check=True, capture_output=True)
    assert_same_masks(out, tmp_path / "full")
