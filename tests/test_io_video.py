import cv2
import numpy as np
import pytest

from conftest import moving_squares
from vidseg.errors import VidsegError
from vidseg.io.overlay import OverlayVideoWriter, overlay_frame
from vidseg.io.video import VideoReader


def write_mp4(path, frames, fps=10.0):
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def test_mp4_reads_lazily_with_count_fps_and_size(tmp_path):
    frames, _ = moving_squares(num_frames=9)
    write_mp4(tmp_path / "v.mp4", frames, fps=12.0)
    reader = VideoReader(tmp_path / "v.mp4")
    assert len(reader) == 9 and reader.size == (64, 96) and reader.fps == pytest.approx(12.0)
    assert reader.frame_names[:2] == ["00000", "00001"]
    decoded = list(reader)
    assert len(decoded) == 9 and decoded[0].dtype == np.uint8 and decoded[0].shape == (64, 96, 3)
    # lossy codec, but close to the source
    assert np.abs(decoded[4].astype(int) - frames[4]).mean() < 20
    assert len(list(reader.frames(start=6))) == 3


def test_frame_folder_is_naturally_sorted(tmp_path):
    for index in (1, 2, 10):
        cv2.imwrite(str(tmp_path / f"f{index}.jpg"), np.full((8, 8, 3), index * 20, np.uint8))
    reader = VideoReader(tmp_path)
    assert reader.frame_names == ["f1", "f2", "f10"]
    assert [int(f[0, 0, 0]) for f in reader] == pytest.approx([20, 40, 200], abs=3)


def test_mixed_frame_sizes_rejected_naming_the_file(tmp_path):
    cv2.imwrite(str(tmp_path / "00000.jpg"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "00001.jpg"), np.zeros((8, 10, 3), np.uint8))
    with pytest.raises(VidsegError, match=r"00001\.jpg: frame is 10x8 but 00000\.jpg is 8x8"):
        VideoReader(tmp_path)


def test_unreadable_and_truncated_videos_rejected(tmp_path):
    (tmp_path / "junk.mp4").write_bytes(b"\x00" * 1000)
    with pytest.raises(VidsegError, match="junk.mp4: cannot open video"):
        VideoReader(tmp_path / "junk.mp4")
    frames, _ = moving_squares(num_frames=30)
    write_mp4(tmp_path / "full.avi", frames)  # AVI keeps its index at the end: truncation loses frames
    data = (tmp_path / "full.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
    with pytest.raises(VidsegError, match="cut.avi"):
        VideoReader(tmp_path / "cut.avi")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(VidsegError, match="notes.txt: unsupported video type '.txt'"):
        VideoReader(tmp_path / "notes.txt")


def test_overlay_video_written_atomically(tmp_path):
    frames, masks = moving_squares(num_frames=5)
    blended = overlay_frame(frames[0], masks[0])
    assert blended.shape == frames[0].shape
    assert not np.array_equal(blended[15, 15], frames[0][15, 15])  # object pixels are tinted
    np.testing.assert_array_equal(blended[0, 0], frames[0][0, 0])  # background untouched
    with OverlayVideoWriter(tmp_path / "o.mp4", 10, (64, 96)) as writer:
        for frame, mask in zip(frames, masks):
            writer.write(overlay_frame(frame, mask))
    assert len(VideoReader(tmp_path / "o.mp4")) == 5
    with pytest.raises(RuntimeError), OverlayVideoWriter(tmp_path / "p.mp4", 10, (64, 96)) as writer:
        writer.write(frames[0])
        raise RuntimeError("interrupted")
    assert not (tmp_path / "p.mp4").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.mp4"]


@pytest.mark.parametrize("size", [(64, 96), (63, 95)])
def test_mp4_overlays_are_h264_and_avi_is_mjpeg(tmp_path, size):
    import cv2

    height, width = size
    frames = [np.full((height, width, 3), 40 * t, np.uint8) for t in range(4)]
    for name, codec in (("o.mp4", "h264"), ("o.avi", "MJPG")):
        with OverlayVideoWriter(tmp_path / name, 10, size) as writer:
            for frame in frames:
                writer.write(frame)
        assert writer.codec == codec
        capture = cv2.VideoCapture(str(tmp_path / name))
        fourcc = int(capture.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode().lower()
        assert fourcc in ({"h264", "avc1"} if codec == "h264" else {"mjpg"})
        assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
        even = width + width % 2 if codec == "h264" else width - width % 2  # padded by us; cropped by OpenCV
        assert int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)) == even


def test_without_imageio_ffmpeg_mp4_falls_back_to_opencv(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import fails
    with OverlayVideoWriter(tmp_path / "o.mp4", 10, (64, 96)) as writer:
        writer.write(np.zeros((64, 96, 3), np.uint8))
    assert writer.codec == "mp4v" and (tmp_path / "o.mp4").stat().st_size > 0


def test_overlay_label_is_written_in_the_corner_only():
    frames, masks = moving_squares(num_frames=1)
    plain = overlay_frame(frames[0], masks[0])
    labelled = overlay_frame(frames[0], masks[0], label="00042")
    changed = np.argwhere((plain != labelled).any(axis=2))
    assert len(changed) > 20 and changed[:, 0].max() < 32 and changed[:, 1].max() < 80
