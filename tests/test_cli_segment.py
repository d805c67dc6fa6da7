import numpy as np
import pytest
from PIL import Image

from vidseg.cli.main import main
from vidseg.io.masks import read_mask, write_mask
from vidseg.io.video import VideoReader


def run_cli(capsys, *argv):
    code = main(list(map(str, argv)))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_segment_writes_one_mask_per_frame_and_overlay(tmp_path, square_clip, capsys):
    frame_dir, masks, first = square_clip
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(capsys, "segment", frame_dir, "--mask", first, "--out", out, "--overlay",
                                   tmp_path / "o.mp4")
    assert code == 0
    assert "method: match_refine -- best held-out J&F" in stderr  # the default: see the bundled model cards
    assert "segmented 12 frames, 2 object(s) with 'match_refine'" in stdout and "frames/s" in stdout
    written = sorted(p.name for p in out.iterdir())
    assert written == [f"{t:05d}.png" for t in range(12)]
    with Image.open(out / "00003.png") as image:
        assert image.mode == "P" and image.size == (96, 64)
    np.testing.assert_array_equal(read_mask(out / "00000.png"), masks[0])
    assert len(VideoReader(tmp_path / "o.mp4")) == 12
    labelled = tmp_path / "labelled.mp4"
    assert run_cli(capsys, "segment", frame_dir, "--mask", first, "--out", tmp_path / "out2", "--method", "flow",
                   "--overlay", labelled, "--frame-numbers", "--quiet")[0] == 0
    assert len(VideoReader(labelled)) == 12


def test_segment_real_davis_sequence(tmp_path, davis_240p, capsys):
    frames = davis_240p / "JPEGImages" / "240p" / "blackswan"
    if not frames.is_dir():
        frames = sorted((davis_240p / "JPEGImages" / "240p").iterdir())[0]
    first = davis_240p / "Annotations" / "240p" / frames.name / "00000.png"
    code, _, _ = run_cli(capsys, "segment", frames, "--mask", first, "--out", tmp_path / "out", "--quiet",
                         "--method", "match", "--max-side", "320")  # the default method, at half its size for speed
    assert code == 0
    outputs = sorted((tmp_path / "out").iterdir())
    inputs = sorted(frames.iterdir())
    assert [p.stem for p in outputs] == [p.stem for p in inputs]
    assert read_mask(outputs[-1]).shape == (240, 427)
    gt = read_mask(davis_240p / "Annotations" / "240p" / frames.name / outputs[5].name) > 0
    pred = read_mask(outputs[5]) > 0
    assert (gt & pred).sum() / (gt | pred).sum() > 0.5


def test_later_object_given_by_mask_named_after_its_frame(tmp_path, square_clip, capsys):
    frame_dir, masks, _ = square_clip
    write_mask(tmp_path / "m" / "00000.png", np.where(masks[0] == 1, 1, 0).astype(np.uint8))
    write_mask(tmp_path / "m" / "00004.png", np.where(masks[4] == 2, 2, 0).astype(np.uint8))
    code, _, _ = run_cli(capsys, "segment", frame_dir, "--mask", tmp_path / "m", "--out", tmp_path / "out", "--quiet",
                         "--method", "flow")
    assert code == 0
    assert 2 not in read_mask(tmp_path / "out" / "00003.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "out" / "00004.png") == 2, masks[4] == 2)


@pytest.mark.parametrize(
    "case, message",
    [
        ("wrong_size", r"first\.png: mask is 10x8 but the frames are 96x64 \(resize the mask"),
        ("unknown_colour", r"first\.png: colour mask has colour \(1, 2, 3\)"),
        ("empty_mask", r"first\.png: the first mask contains no object"),
        ("unknown_method", r"unknown method 'magic'"),
        ("foreign_files", r"out: output folder holds other files \(e\.g\. notes\.txt\)"),
        ("unreadable_video", r"broken\.mp4: cannot open video"),
        ("missing_video", r"nothere: video not found"),
    ],
)
def test_bad_input_one_line_error_and_no_output(tmp_path, square_clip, capsys, case, message):
    frame_dir, masks, first = square_clip
    mask_path = tmp_path / "first.png"
    video = frame_dir
    method = "flow"
    out = tmp_path / "out"
    if case == "wrong_size":
        write_mask(mask_path, np.ones((8, 10), np.uint8))
    elif case == "unknown_colour":
        rgb = np.zeros((64, 96, 3), np.uint8)
        rgb[5:9, 5:9] = (1, 2, 3)
        Image.fromarray(rgb).save(mask_path)
    elif case == "empty_mask":
        write_mask(mask_path, np.zeros((64, 96), np.uint8))
    elif case == "unknown_method":
        method = "magic"
    elif case == "foreign_files":
        out.mkdir()
        (out / "notes.txt").write_text("keep me")
    elif case == "unreadable_video":
        video = tmp_path / "broken.mp4"
        video.write_bytes(b"garbage" * 100)
    elif case == "missing_video":
        video = tmp_path / "nothere"
    code, _, err = run_cli(capsys, "segment", video, "--mask", mask_path, "--out", out, "--method", method, "--quiet")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vidseg: error: ")
    assert __import__("re").search(message, lines[0]), lines[0]
    if case == "foreign_files":
        assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    else:
        assert not out.exists()


def test_failure_mid_video_keeps_the_masks_and_resumes(tmp_path, square_clip, capsys):
    frame_dir, _, first = square_clip
    # a frame that cannot be decoded, found only when it is reached
    good = (frame_dir / "00009.png").read_bytes()
    (frame_dir / "00009.png").write_bytes(good[:60])
    args = ["segment", frame_dir, "--mask", first, "--out", tmp_path / "out", "--quiet", "--method", "flow"]
    code, _, err = run_cli(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "00009.png" in lines[0]
    assert lines[0].endswith(f"9 masks kept in {tmp_path / 'out'}; rerun the same command with --resume")
    assert len(list((tmp_path / "out").glob("*.png"))) == 9 and (tmp_path / "out" / ".vidseg-resume.npz").is_file()
    (frame_dir / "00009.png").write_bytes(good)
    assert run_cli(capsys, *args, "--resume")[0] == 0
    assert len(list((tmp_path / "out").glob("*.png"))) == 12


def test_an_unwritable_output_folder_is_one_line(tmp_path, square_clip, capsys):
    frame_dir, _, first = square_clip
    (tmp_path / "file").write_text("not a folder")
    code, _, err = run_cli(capsys, "segment", frame_dir, "--mask", first, "--out", tmp_path / "file" / "out",
                           "--quiet", "--method", "flow")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert f"{tmp_path / 'file' / 'out'}: cannot write (" in lines[0] and "choose a writable --out" in lines[0]


def test_existing_masks_need_overwrite(tmp_path, square_clip, capsys):
    frame_dir, _, first = square_clip
    out = tmp_path / "out"
    flow = ("--method", "flow")
    assert run_cli(capsys, "segment", frame_dir, "--mask", first, "--out", out, "--quiet", *flow)[0] == 0
    code, _, err = run_cli(capsys, "segment", frame_dir, "--mask", first, "--out", out, "--quiet", *flow)
    assert code == 2 and "--overwrite" in err
    assert run_cli(capsys, "segment", frame_dir, "--mask", first, "--out", out, "--quiet", "--overwrite", *flow)[0] == 0


def test_interrupt_keeps_complete_masks_and_no_partial_overlay(tmp_path, square_clip):
    from vidseg.inference.flow import FlowPropagator
    from vidseg.inference.runner import segment_video

    class InterruptedFlow(FlowPropagator):
        calls = 0

        def propagate(self, state, frame):
            InterruptedFlow.calls += 1
            if InterruptedFlow.calls == 5:
                raise KeyboardInterrupt
            return super().propagate(state, frame)

    frame_dir, masks, first = square_clip
    with pytest.raises(KeyboardInterrupt, match=r"5 masks kept in .*out; rerun the same command with --resume"):
        segment_video(frame_dir, [first], tmp_path / "out", method=InterruptedFlow(), overlay=tmp_path / "o.mp4",
                      progress=False)
    kept = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert kept == [".vidseg-resume.npz"] + [f"{t:05d}.png" for t in range(5)]
    for name in kept[1:]:
        assert read_mask(tmp_path / "out" / name).shape == (64, 96)
    assert not (tmp_path / "o.mp4").exists()
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".mp4" or ".tmp" in p.name] == []

    # --resume continues after the last complete mask and writes exactly what an uninterrupted run writes
    resumed = segment_video(frame_dir, [first], tmp_path / "out", method="flow", overlay=tmp_path / "o.mp4",
                            progress=False, resume=True)
    assert resumed.resumed_at == 5 and "resumed at frame 5" in resumed.summary()
    full = segment_video(frame_dir, [first], tmp_path / "full", method="flow", progress=False)
    names = sorted(p.name for p in full.mask_dir.iterdir())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == names  # resume point removed
    for name in names:
        assert np.array_equal(read_mask(tmp_path / "out" / name), read_mask(tmp_path / "full" / name)), name
    assert (tmp_path / "o.mp4").stat().st_size > 0


@pytest.mark.parametrize(
    "options, message",
    [
        (["--device", "tpu"], r"--device 'tpu' is not a device vidseg runs on \(use cpu, cuda, cuda:N or mps\)"),
        (["--device", "cuda:7"], r"--device cuda:7: this machine has .*\(use --device cpu, the default\)"),
        (["--max-side", "7"], r"--max-side 7 is too small \(use at least 32 pixels"),
        (["--max-side", "0", "--method", "flow"], r"--max-side 0 is too small"),
        (["--max-side", "-5", "--method", "s2s++"], r"--max-side -5 is too small"),
        (["--online-steps", "-3", "--method", "s2s++"], r"--online-steps -3 is negative"),
        (["--online-lr", "0", "--method", "s2s++"], r"--online-lr 0.0 must be positive"),
    ],
)
def test_bad_options_are_refused_before_anything_runs(tmp_path, square_clip, capsys, options, message):
    frame_dir, _, first = square_clip
    code, _, err = run_cli(capsys, "segment", frame_dir, "--mask", first, "--out", tmp_path / "out", "--quiet", *options)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert __import__("re").search(message, lines[0]), lines[0]
    assert not (tmp_path / "out").exists()


def test_threads_option_sets_the_libraries_threads_and_keeps_the_masks(tmp_path, square_clip, capsys):
    import cv2
    import torch

    frame_dir, _, first = square_clip
    before = torch.get_num_threads(), cv2.getNumThreads()
    try:
        for threads in ("1", "2"):
            code, _, err = run_cli(capsys, "segment", frame_dir, "--mask", first, "--out", tmp_path / threads,
                                   "--method", "s2s++", "--threads", threads, "--quiet")
            assert code == 0, err
            assert torch.get_num_threads() == int(threads) and cv2.getNumThreads() == int(threads)
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])
    for mask in sorted((tmp_path / "1").glob("*.png")):
        assert np.array_equal(read_mask(mask), read_mask(tmp_path / "2" / mask.name)), mask.name


@pytest.mark.parametrize(("height", "width"), [(63, 96), (64, 95), (66, 94)])
def test_a_mask_a_pixel_or_two_off_is_fitted_with_a_warning(tmp_path, square_clip, capsys, height, width):
    frame_dir, masks, _ = square_clip
    mask = np.zeros((height, width), np.uint8)
    common = (slice(0, min(height, 64)), slice(0, min(width, 96)))
    mask[common] = masks[0][common]
    write_mask(tmp_path / "odd.png", mask)
    expected = f"{tmp_path / 'odd.png'}: mask is {width}x{height}, the frames 96x64; padded/cropped"
    with pytest.warns(UserWarning, match=__import__("re").escape(expected)) as caught:
        code, _, err = run_cli(capsys, "segment", frame_dir, "--mask", tmp_path / "odd.png", "--out", tmp_path / "out",
                               "--method", "flow", "--quiet")
    assert code == 0, err
    assert read_mask(tmp_path / "out" / "00000.png").shape == (64, 96)
    shown = __import__("warnings").formatwarning(caught[0].message, UserWarning, "x.py", 1)
    assert shown == f"vidseg: warning: {caught[0].message}\n"  # one line on the command line


def test_a_mask_three_pixels_off_is_refused(tmp_path, square_clip, capsys):
    frame_dir, _, _ = square_clip
    write_mask(tmp_path / "odd.png", np.ones((61, 96), np.uint8))
    code, _, err = run_cli(capsys, "segment", frame_dir, "--mask", tmp_path / "odd.png", "--out", tmp_path / "out",
                           "--method", "flow", "--quiet")
    assert code == 2 and "odd.png: mask is 96x61 but the frames are 96x64" in err


def test_a_full_disk_mid_video_keeps_the_masks_and_says_how_to_continue(tmp_path, square_clip, capsys, monkeypatch):
    import errno

    import vidseg.inference.runner as runner

    frame_dir, _, first = square_clip
    real_write, calls = runner.write_mask, [0]

    def filling_up(path, mask):
        calls[0] += 1
        if calls[0] == 6:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, mask)

    monkeypatch.setattr(runner, "write_mask", filling_up)
    code, _, err = run_cli(capsys, "segment", frame_dir, "--mask", first, "--out", tmp_path / "out", "--quiet",
                           "--method", "flow")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert "00005.png: cannot write (No space left on device)" in lines[0]
    assert lines[0].endswith("5 masks kept in " + str(tmp_path / "out") + "; rerun the same command with --resume")
    assert len(list((tmp_path / "out").glob("*.png"))) == 5


def test_auto_threads_leave_the_busy_cores_to_others(tmp_path, square_clip, capsys, monkeypatch):
    import cv2
    import torch

    from vidseg import machine

    assert [machine.auto_threads(cores, busy)[0] for cores, busy in ((2, 0.2), (2, 0.9), (4, 1.2), (2, 5.0))] == [2, 1, 3, 1]
    assert machine.busy_cores(window=0.05) >= 0
    frame_dir, _, first = square_clip
    before = torch.get_num_threads(), cv2.getNumThreads()
    monkeypatch.setattr(machine, "busy_cores", lambda window=0.2: 1.0)
    try:
        code, _, err = run_cli(capsys, "segment", frame_dir, "--mask", first, "--out", tmp_path / "o", "--method", "flow")
        assert code == 0, err
        cores = machine.auto_threads(busy=1.0)[0]
        assert f"threads: {cores} (auto: " in err and torch.get_num_threads() == cores
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])
    with pytest.raises(SystemExit) as exited:
        main(["segment", str(frame_dir), "--mask", str(first), "--out", str(tmp_path / "p"), "--threads", "many"])
    assert exited.value.code == 2
    assert "argument --threads: 'many' is not a count; use a number such as 1, or auto" in capsys.readouterr().err
