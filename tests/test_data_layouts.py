"""DAVIS and YouTube-VOS indexes: real shared data where present, small fixtures otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vidseg.constants import VOID_ID
from vidseg.data.davis import DavisIndex
from vidseg.data.youtube_vos import YouTubeVOSIndex, split_train_videos
from vidseg.errors import VidsegError
from vidseg.io.masks import write_mask

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DAVIS16 = SHARED / "data" / "davis2016-train-240p"
CONFORMANCE = SHARED / "conformance" / "davis2017" / "gt"

needs_davis16 = pytest.mark.skipif(
    not DAVIS16.is_dir(), reason=f"shared DAVIS-2016 training data not found at {DAVIS16}"
)
needs_conformance = pytest.mark.skipif(
    not CONFORMANCE.is_dir(), reason=f"shared DAVIS-2017 conformance ground truth not found at {CONFORMANCE}"
)


def _jpeg(path: Path, h: int = 24, w: int = 32, value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path, quality=90)


# ---------------------------------------------------------------------------- DAVIS, real data


@needs_davis16
def test_davis2016_train_240p_real_data():
    index = DavisIndex(DAVIS16, year="2016", split="train", resolution="240p")
    listed = (DAVIS16 / "ImageSets" / "2016" / "train.txt").read_text().split()
    assert len(index) == 27 and index.names == listed
    assert index.single_object
    sequences = {seq.name: seq for seq in index}
    bear = sequences["bear"]
    assert len(bear) == 82 and bear.frame_names[0] == "00000" and bear.frame_names[-1] == "00081"
    assert [p.name for p in bear.frame_paths[:2]] == ["00000.jpg", "00001.jpg"]
    for seq in sequences.values():
        # every frame has its image and its annotation; the one object is id 1 from frame 0
        assert len(seq.frame_paths) == len(seq) == len(seq.mask_paths)
        assert seq.annotated_frames == list(seq.frame_names)
        assert list(seq.objects) == [1] and seq.objects[1].first_frame == "00000"
    mask = index.load_mask(bear.mask_paths["00040"])
    assert mask.shape == (240, 427) and mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 1}
    # resolution=None picks the only folder
    assert DavisIndex(DAVIS16, year="2016", split="train", resolution=None).resolution == "240p"


@needs_davis16
def test_davis_unknown_split_and_sequence_names_are_clear_errors():
    with pytest.raises(VidsegError, match="split file not found"):
        DavisIndex(DAVIS16, year="2016", split="val", resolution="240p")
    with pytest.raises(VidsegError, match="not found"):
        DavisIndex(DAVIS16, year="2016", split="train", resolution="240p", sequences=["bear", "no-such-seq"])
    with pytest.raises(VidsegError, match="no resolution folder '480p'.*found: 240p"):
        DavisIndex(DAVIS16, year="2016", split="train", resolution="480p")
    only = DavisIndex(DAVIS16, year="2016", split="train", resolution="240p", sequences=["bear", "boat"])
    assert [seq.name for seq in only] == ["bear", "boat"]


@needs_conformance
def test_davis2017_conformance_gt_multi_object_and_2016_merge():
    index = DavisIndex(CONFORMANCE, year="2017", split="val", resolution="480p")
    assert len(index) == 10
    seqs = {seq.name: seq for seq in index}
    assert sorted(seqs["gold-fish"].objects) == [1, 2, 3, 4, 5]
    assert sorted(seqs["judo"].objects) == [1, 2]
    judo = seqs["judo"]
    assert len(judo.frame_paths) == len(judo) == len(judo.mask_paths) == 34
    assert set(np.unique(index.load_mask(seqs["gold-fish"].mask_paths["00000"]))) == {0, 1, 2, 3, 4, 5}
    # the same masks read as DAVIS 2016 merge every object into id 1 (no 2016 split file: name the sequence)
    merged = DavisIndex(CONFORMANCE, year="2016", resolution="480p", sequences=["gold-fish"])
    gold = merged.sequence("gold-fish")
    assert list(gold.objects) == [1]
    assert set(np.unique(merged.load_mask(gold.mask_paths["00000"]))) == {0, 1}
    unsup = DavisIndex(CONFORMANCE, year="2017", split="val", resolution="480p", task="unsupervised")
    assert unsup.annotation_dir.parent.name == "Annotations_unsupervised" and len(unsup) == 10
    # DAVIS 2016 (one foreground object per video) scores the unsupervised task on its only annotations
    unsup_2016 = DavisIndex(CONFORMANCE, year="2016", resolution="480p", task="unsupervised", sequences=["judo"])
    assert unsup_2016.annotation_dir.parent.name == "Annotations"


# ---------------------------------------------------------------------------- DAVIS, fixtures


def make_davis(root: Path, resolutions=("Full-Resolution",), frames: bool = True, n: int = 4) -> Path:
    """Two sequences: 'one' (object 1, a void border), 'two' (objects 1 and 2; 2 appears at frame 2)."""
    for res in resolutions:
        for name, ids in (("one", (1,)), ("two", (1, 2))):
            for t in range(n):
                mask = np.zeros((24, 32), np.uint8)
                mask[4:12, 4 + t : 12 + t] = 1
                if 2 in ids and t >= 2:
                    mask[14:20, 20:28] = 2
                mask[0, :] = VOID_ID
                write_mask(root / "Annotations" / res / name / f"{t:05d}.png", mask)
                if frames:
                    _jpeg(root / "JPEGImages" / res / name / f"{t:05d}.jpg")
    sets = root / "ImageSets" / "2017"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / "train.txt").write_text("one\ntwo\n")
    (sets / "val.txt").write_text("two\n")
    return root


def test_davis_full_resolution_fixture(tmp_path):
    root = make_davis(tmp_path / "davis")
    index = DavisIndex(root, year="2017", split="train", resolution="Full-Resolution")
    assert index.names == ["one", "two"]
    two = index.sequence("two")
    assert two.frame_names == ("00000", "00001", "00002", "00003")
    assert all(p.parent == root / "JPEGImages" / "Full-Resolution" / "two" for p in two.frame_paths)
    # objects are those of the first annotation (DAVIS semi-supervised protocol)
    assert list(two.objects) == [1]
    mask = index.load_mask(two.mask_paths["00003"])
    assert set(np.unique(mask)) == {0, 1, 2, VOID_ID}
    assert DavisIndex(root, year="2017", split="val", resolution=None).names == ["two"]


def test_davis_year_2016_merges_ids(tmp_path):
    root = make_davis(tmp_path / "davis")
    (root / "ImageSets" / "2016").mkdir()
    (root / "ImageSets" / "2016" / "train.txt").write_text("two\n")
    index = DavisIndex(root, year="2016", split="train", resolution="Full-Resolution")
    seq = index.sequence("two")
    assert set(np.unique(index.load_mask(seq.mask_paths["00003"]))) == {0, 1, VOID_ID}


def test_davis_gt_only_and_layout_errors(tmp_path):
    root = make_davis(tmp_path / "davis", resolutions=("480p", "Full-Resolution"), frames=False)
    with pytest.raises(VidsegError, match="several resolution folders"):
        DavisIndex(root, year="2017", split="train", resolution=None)
    index = DavisIndex(root, year="2017", split="train", resolution="480p")
    seq = index.sequence("one")
    # without JPEGImages the frames are named after the annotations, and there are no frame files
    assert seq.frame_names == ("00000", "00001", "00002", "00003") and seq.frame_paths == ()
    with pytest.raises(VidsegError, match="unknown DAVIS year"):
        DavisIndex(root, year="2019")
    with pytest.raises(VidsegError, match="unknown task"):
        DavisIndex(root, task="interactive")
    (root / "ImageSets" / "2017" / "test-dev.txt").write_text("one\nmissing\n")
    with pytest.raises(VidsegError, match="missing listed but not annotated"):
        DavisIndex(root, year="2017", split="test-dev", resolution="480p")
    with pytest.raises(VidsegError, match="no DAVIS annotation folder"):
        DavisIndex(tmp_path)


# ---------------------------------------------------------------------------- YouTube-VOS fixtures

CATEGORIES = ["person", "dog", "cat", "horse", "car"]


def make_youtube_vos(root: Path, n_videos: int = 10, n_frames: int = 16, split: str = "train", frames: bool = True) -> Path:
    """Videos with every frame as JPEG and every 5th annotated; video ``vid00`` has an object 2
    that first appears at frame 10; categories differ so that some are seen only in held-out videos."""
    meta = {"videos": {}}
    for v in range(n_videos):
        vid = f"vid{v:02d}"
        objects = {"1": {"category": CATEGORIES[v % len(CATEGORIES)], "frames": []}}
        if v == 0:
            objects["2"] = {"category": "giraffe", "frames": []}
        for t in range(n_frames):
            if frames:
                _jpeg(root / split / "JPEGImages" / vid / f"{t:05d}.jpg", value=40 + 10 * v)
            if t % 5:
                continue
            mask = np.zeros((24, 32), np.uint8)
            mask[6:14, 2 + t : 10 + t] = 1
            objects["1"]["frames"].append(f"{t:05d}")
            if "2" in objects and t >= 10:
                mask[16:22, 20:28] = 2
                objects["2"]["frames"].append(f"{t:05d}")
            write_mask(root / split / "Annotations" / vid / f"{t:05d}.png", mask)
        meta["videos"][vid] = {"objects": objects}
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / split / "meta.json").write_text(json.dumps(meta))
    return root


def test_youtube_vos_sparse_labels_and_late_object(tmp_path):
    root = make_youtube_vos(tmp_path / "ytvos")
    index = YouTubeVOSIndex(root, split="train")
    assert len(index) == 10
    seq = index.sequence("vid00")
    assert len(seq) == 16 and len(seq.frame_paths) == 16
    assert seq.annotated_frames == ["00000", "00005", "00010", "00015"]
    assert sorted(seq.objects) == [1, 2]
    late = seq.objects[2]
    assert late.first_frame == "00010" and late.category == "giraffe"
    assert late.annotated_frames == ("00010", "00015")
    assert seq.objects[1].annotated_frames == ("00000", "00005", "00010", "00015")
    mask = index.load_mask(seq.mask_paths["00010"])
    assert set(np.unique(mask)) == {0, 1, 2}
    assert 2 not in np.unique(index.load_mask(seq.mask_paths["00005"]))


def test_youtube_vos_local_80_20_split_is_reproducible(tmp_path):
    root = make_youtube_vos(tmp_path / "ytvos", frames=False)
    train = YouTubeVOSIndex(root, split="train-80")
    held = YouTubeVOSIndex(root, split="val-20")
    assert len(train) == 8 and len(held) == 2
    assert set(train.names).isdisjoint(held.names)
    assert sorted(train.names + held.names) == [f"vid{v:02d}" for v in range(10)]
    again = YouTubeVOSIndex(root, split="val-20")
    assert again.names == held.names
    assert (train.names, held.names) == split_train_videos([f"vid{v:02d}" for v in range(10)])
    # seen = categories of the training part
    train_categories = {
        obj.category for name in train.names for obj in train.sequence(name).objects.values()
    }
    assert held.seen_categories == train_categories
    assert held.is_seen("person") == ("person" in train_categories)
    if "vid00" in held.names:
        assert not held.is_seen("giraffe")
    # GT-only (no JPEGImages): frames named after the annotations, no frame files
    seq = held.sequence(held.names[0])
    assert seq.frame_names == ("00000", "00005", "00010", "00015") and seq.frame_paths == ()


def test_youtube_vos_valid_split_uses_train_categories(tmp_path):
    root = make_youtube_vos(tmp_path / "ytvos", n_videos=3, frames=False)
    make_youtube_vos(root, n_videos=6, split="valid", frames=False)
    valid = YouTubeVOSIndex(root, split="valid")
    assert len(valid) == 6
    assert valid.is_seen("person") and valid.is_seen("giraffe")
    assert not valid.is_seen("horse")  # only in valid videos 3 and 4 -> unseen


def test_youtube_vos_errors(tmp_path):
    with pytest.raises(VidsegError, match="meta.json not found"):
        YouTubeVOSIndex(tmp_path, split="train")
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "meta.json").write_text("{not json")
    with pytest.raises(VidsegError, match="not YouTube-VOS metadata"):
        YouTubeVOSIndex(tmp_path, split="train")
    (tmp_path / "train" / "meta.json").write_text(json.dumps({"videos": {"a": {"objects": {}}}}))
    index = YouTubeVOSIndex(tmp_path, split="train")
    with pytest.raises(VidsegError, match="not in meta.json"):
        index.sequence("b")
