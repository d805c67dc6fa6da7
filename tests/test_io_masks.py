import numpy as np
import pytest
from PIL import Image

from vidseg.errors import VidsegError
from vidseg.io.atomic import atomic_path
from vidseg.io.masks import DAVIS_PALETTE, _plain_palette_png, colorize, object_ids, read_mask, write_mask


def test_palette_matches_davis():
    assert DAVIS_PALETTE[0].tolist() == [0, 0, 0]
    assert DAVIS_PALETTE[1].tolist() == [128, 0, 0]
    assert DAVIS_PALETTE[2].tolist() == [0, 128, 0]
    assert DAVIS_PALETTE[5].tolist() == [128, 0, 128]
    assert DAVIS_PALETTE[255].tolist() == [224, 224, 192]


def test_indexed_round_trip_keeps_ids_and_void(tmp_path):
    mask = np.zeros((7, 9), np.uint8)
    mask[1:3, 1:4] = 1
    mask[4:6, 2:8] = 254
    mask[0, :] = 255
    path = tmp_path / "m.png"
    write_mask(path, mask)
    with Image.open(path) as image:
        assert image.mode == "P"
        assert image.getpalette()[3:6] == [128, 0, 0]
    np.testing.assert_array_equal(read_mask(path), mask)
    assert object_ids(mask) == [1, 254]


def palette_png(ids: np.ndarray, filters: list[int], interlace: int = 0) -> bytes:
    """An 8-bit palette PNG with the given filter byte per row (Sub, 1, stores left differences)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = b""
    for row, kind in zip(ids, filters):
        line = row.astype(np.int16)
        if kind == 1:
            line = np.diff(line, prepend=0) % 256
        rows += bytes([kind]) + line.astype(np.uint8).tobytes()
    height, width = ids.shape
    header = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, interlace)
    palette = DAVIS_PALETTE.tobytes()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"PLTE", palette)
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_unfiltered_and_filtered_palette_pngs_read_alike(tmp_path):
    """Plain palette PNGs are decoded directly; filtered rows go through PIL; both give the ids."""
    ids = np.random.default_rng(0).integers(0, 6, (5, 7)).astype(np.uint8)
    for name, filters in (("plain", [0] * 5), ("sub", [0, 1, 0, 1, 1])):
        (tmp_path / f"{name}.png").write_bytes(palette_png(ids, filters))
        np.testing.assert_array_equal(read_mask(tmp_path / f"{name}.png"), ids)
        with Image.open(tmp_path / f"{name}.png") as image:
            np.testing.assert_array_equal(np.array(image), ids)
    assert _plain_palette_png((tmp_path / "plain.png").read_bytes()) is not None
    assert _plain_palette_png((tmp_path / "sub.png").read_bytes()) is None
    assert _plain_palette_png(palette_png(ids, [0] * 5, interlace=1)) is None
    read = read_mask(tmp_path / "plain.png")
    read[0, 0] = 9  # a writable array of its own
    damaged = palette_png(ids, [0] * 5)
    (tmp_path / "cut.png").write_bytes(damaged[:-30])
    with pytest.raises(VidsegError, match="cut.png: cannot read mask image"):
        read_mask(tmp_path / "cut.png")


def test_grayscale_binary_and_id_masks(tmp_path):
    binary = np.zeros((5, 5), np.uint8)
    binary[1:4, 1:4] = 255
    binary[0, 0] = 200  # anti-aliased edge counts as object
    Image.fromarray(binary, mode="L").save(tmp_path / "b.png")
    expected = (binary >= 128).astype(np.uint8)
    np.testing.assert_array_equal(read_mask(tmp_path / "b.png"), expected)
    ids = np.array([[0, 1], [2, 3]], np.uint8)
    Image.fromarray(ids, mode="L").save(tmp_path / "ids.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "ids.png"), ids)


def test_colour_mask_maps_palette_colours_to_ids(tmp_path):
    ids = np.array([[0, 1, 2], [3, 255, 1]], np.uint8)
    Image.fromarray(colorize(ids), mode="RGB").save(tmp_path / "c.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "c.png"), ids)


def test_colour_mask_with_unknown_colour_is_rejected(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[1, 1] = (10, 200, 30)
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "bad.png")
    with pytest.raises(VidsegError, match=r"bad\.png: .*\(10, 200, 30\).*not in the DAVIS palette"):
        read_mask(tmp_path / "bad.png")


def test_unreadable_and_missing_mask(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(VidsegError, match="junk.png: cannot read mask image"):
        read_mask(tmp_path / "junk.png")
    with pytest.raises(VidsegError, match="mask file not found"):
        read_mask(tmp_path / "none.png")


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o044  # readable by others, not mkstemp's 0600
