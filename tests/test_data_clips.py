"""Training clips (vidseg.data.clips) and joint augmentation (vidseg.data.transforms)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from PIL import Image
from torch.utils.data import DataLoader

from vidseg.constants import VOID_ID
from vidseg.data.clips import ClipDataset, ClipSampler, ConcatClipDataset, collate_clips
from vidseg.data.davis import DavisIndex
from vidseg.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AffineRange,
    AugmentConfig,
    ClipAugment,
    first_frame_affine_pairs,
    resize_clip,
)
from vidseg.data.youtube_vos import YouTubeVOSIndex
from vidseg.errors import VidsegError
from vidseg.io.masks import write_mask

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DAVIS16 = SHARED / "data" / "davis2016-train-240p"

# Colour code of the fixtures: every pixel's colour says which label it carries.
BG, OBJ1, OBJ2, VOID_RGB = (0, 0, 255), (255, 0, 0), (0, 255, 0), (255, 255, 255)
H_IN, W_IN = 80, 120
OUT = (64, 96)
NO_COLOUR = AugmentConfig().geometric_only()
STRONG = replace(
    NO_COLOUR,
    scale=(0.5, 1.0),
    hflip=0.5,
    affine=AffineRange(degrees=15, translate=0.1, shear=8, scale=(0.9, 1.1)),
    frame_jitter=AffineRange(degrees=3, translate=0.03),
)


def label_map(t: int, late_object: bool) -> np.ndarray:
    """Ids of frame t: object 1 moves right, object 2 (if any) appears at frame 10, a void stripe on top."""
    mask = np.zeros((H_IN, W_IN), np.uint8)
    mask[16:48, 10 + 2 * t : 40 + 2 * t] = 1
    if late_object and t >= 10:
        mask[52:74, 70:110] = 2
    mask[:3, :] = VOID_ID
    return mask


def paint(mask: np.ndarray) -> np.ndarray:
    image = np.zeros((*mask.shape, 3), np.uint8)
    for value, colour in ((0, BG), (1, OBJ1), (2, OBJ2), (VOID_ID, VOID_RGB)):
        image[mask == value] = colour
    return image


def make_ytvos(root: Path, n_videos: int = 4, n_frames: int = 26, frames: bool = True) -> Path:
    """YouTube-VOS train layout: every frame a JPEG, every 5th annotated; vid00 has object 2 from frame 10."""
    meta = {"videos": {}}
    for v in range(n_videos):
        vid = f"vid{v:02d}"
        late = v == 0
        objects = {"1": {"category": "person", "frames": []}}
        if late:
            objects["2"] = {"category": "dog", "frames": []}
        for t in range(n_frames):
            mask = label_map(t, late)
            if frames:
                path = root / "train" / "JPEGImages" / vid / f"{t:05d}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(paint(mask)).save(path, quality=100, subsampling=0)
            if t % 5 == 0:
                write_mask(root / "train" / "Annotations" / vid / f"{t:05d}.png", mask)
                for key in objects:
                    if (mask == int(key)).any():
                        objects[key]["frames"].append(f"{t:05d}")
        meta["videos"][vid] = {"objects": objects}
    (root / "train" / "meta.json").write_text(json.dumps(meta))
    return root


@pytest.fixture(scope="module")
def ytvos_root(tmp_path_factory) -> Path:
    return make_ytvos(tmp_path_factory.mktemp("ytvos"))


@pytest.fixture(scope="module")
def ytvos(ytvos_root) -> YouTubeVOSIndex:
    return YouTubeVOSIndex(ytvos_root, split="train")


def colour_labels(frames: torch.Tensor) -> torch.Tensor:
    """Per pixel of float frames (T, 3, H, W): 0 bg (blue), 1 red, 2 green, 255 white/black (void or outside)."""
    r, g, b = frames[:, 0], frames[:, 1], frames[:, 2]
    out = torch.full(r.shape, -1, dtype=torch.int64)
    out[(b > 0.5) & (r < 0.5) & (g < 0.5)] = 0
    out[(r > 0.5) & (g < 0.5) & (b < 0.5)] = 1
    out[(g > 0.5) & (r < 0.5) & (b < 0.5)] = 2
    out[(r > 0.5) & (g > 0.5) & (b > 0.5)] = VOID_ID
    out[(r < 0.3) & (g < 0.3) & (b < 0.3)] = VOID_ID
    return out


def interior(labels: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Pixels whose (2r+1)^2 neighbourhood carries one label (away from interpolation edges)."""
    x = labels.float().unsqueeze(1)
    k = 2 * radius + 1
    hi = TF.max_pool2d(x, k, 1, radius)
    lo = -TF.max_pool2d(-x, k, 1, radius)
    return (hi == lo).squeeze(1)


def assert_aligned(frames, ids, expected_colour_of, void=None, tolerance=0.01):
    """Away from edges the label of every pixel matches the colour painted there."""
    colours = colour_labels(frames)
    want = torch.full(ids.shape, -2, dtype=torch.int64)
    for value, colour_label in expected_colour_of.items():
        want[ids == value] = colour_label
    if void is not None:
        want[void] = VOID_ID
    core = interior(want) & interior(colours)
    assert core.float().mean() > 0.5, "too few interior pixels to judge"
    wrong = (colours != want) & core
    assert wrong.float().sum() / core.float().sum() < tolerance


# ---------------------------------------------------------------------------- transforms


def coloured_clip(T: int = 3, late: bool = True):
    masks = np.stack([label_map(10 + t, late) for t in range(T)])
    frames = np.stack([paint(m) for m in masks])
    return torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(masks)


def test_flip_and_resize_are_exact():
    frames, masks = coloured_clip()
    aug = ClipAugment((H_IN, W_IN), replace(AugmentConfig.none(), hflip=1.0))
    out_f, out_m = aug(frames, masks, torch.Generator().manual_seed(0))
    assert out_f.dtype == torch.float32 and out_m.dtype == torch.uint8
    assert torch.equal(out_m, masks.flip(-1))
    assert torch.allclose(out_f, frames.flip(-1).float() / 255)
    small_f, small_m = resize_clip(frames, masks, (40, 60))
    assert small_f.shape == (3, 3, 40, 60) and small_m.shape == (3, 40, 60)
    assert set(small_m.unique().tolist()) <= {0, 1, 2, VOID_ID}  # nearest: no new ids


@pytest.mark.parametrize("seed", range(4))
def test_joint_augmentation_keeps_masks_aligned(seed):
    frames, masks = coloured_clip()
    aug = ClipAugment(OUT, STRONG)
    out_f, out_m = aug(frames, masks, torch.Generator().manual_seed(seed))
    assert out_f.shape == (3, 3, *OUT) and out_m.shape == (3, *OUT)
    assert 0.0 <= out_f.min() and out_f.max() <= 1.0
    # outside-the-image fill is black in frames and void in masks, so white/black <-> void
    assert_aligned(out_f, out_m.long(), {0: 0, 1: 1, 2: 2, VOID_ID: VOID_ID})


def test_clip_consistency_and_per_frame_jitter():
    frame, mask = coloured_clip(T=1)
    frames, masks = frame.expand(4, -1, -1, -1), mask.expand(4, -1, -1)
    same = ClipAugment(OUT, replace(STRONG, frame_jitter=None))
    f, m = same(frames, masks, torch.Generator().manual_seed(3))
    assert all(torch.equal(m[0], m[t]) and torch.equal(f[0], f[t]) for t in range(4))
    jitter = ClipAugment(OUT, replace(STRONG, frame_jitter=AffineRange(degrees=5, translate=0.05)))
    f, m = jitter(frames, masks, torch.Generator().manual_seed(3))
    assert not all(torch.equal(m[0], m[t]) for t in range(1, 4))
    assert_aligned(f, m.long(), {0: 0, 1: 1, 2: 2, VOID_ID: VOID_ID})


def test_colour_jitter_changes_frames_only():
    frames, masks = coloured_clip()
    plain = ClipAugment(OUT, STRONG)
    coloured = ClipAugment(OUT, replace(STRONG, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1))
    f0, m0 = plain(frames, masks, torch.Generator().manual_seed(5))
    f1, m1 = coloured(frames, masks, torch.Generator().manual_seed(5))
    assert torch.equal(m0, m1)
    assert not torch.allclose(f0, f1) and 0 <= f1.min() and f1.max() <= 1
    # a clip-level colour change: frames that were equal stay equal
    one, onem = coloured_clip(T=1)
    f2, _ = ClipAugment(OUT, replace(coloured.config, frame_jitter=None))(
        one.expand(2, -1, -1, -1), onem.expand(2, -1, -1), torch.Generator().manual_seed(1)
    )
    assert torch.equal(f2[0], f2[1])


def test_first_frame_affine_pairs():
    frame, mask = coloured_clip(T=1)
    frame, mask = frame[0], mask[0]
    pairs = first_frame_affine_pairs(frame, mask, 6, torch.Generator().manual_seed(0), size=OUT, base=NO_COLOUR)
    assert pairs.x0.shape == (6, 3, *OUT) and pairs.y0.shape == (6, *OUT) and pairs.x1.shape == pairs.x0.shape
    colour = {0: 0, 1: 1, 2: 2, VOID_ID: VOID_ID}
    assert_aligned(pairs.x0, pairs.y0.long(), colour)
    assert_aligned(pairs.x1, pairs.y1.long(), colour)
    assert all(((pairs.y0[i] == 1) | (pairs.y0[i] == 2)).any() for i in range(6))
    assert sum(not torch.equal(pairs.y0[i], pairs.y1[i]) for i in range(6)) >= 5  # x1 moved w.r.t. x0
    again = first_frame_affine_pairs(frame, mask, 6, torch.Generator().manual_seed(0), size=OUT,
                                     base=NO_COLOUR)
    assert torch.equal(again.y1, pairs.y1)
    other = first_frame_affine_pairs(frame, mask, 6, torch.Generator().manual_seed(1), size=OUT)
    assert not torch.equal(other.y0, pairs.y0)
    empty = first_frame_affine_pairs(frame, torch.zeros_like(mask), 2, torch.Generator().manual_seed(0))
    assert empty.x0.shape == (2, 3, H_IN, W_IN)


# ---------------------------------------------------------------------------- clips


@pytest.mark.skipif(not DAVIS16.is_dir(), reason=f"shared DAVIS-2016 training data not found at {DAVIS16}")
def test_davis2016_real_clips_shapes_and_ranges():
    index = DavisIndex(DAVIS16, year="2016", split="train", resolution="240p")
    ds = ClipDataset(index, clip_length=4, stride=(1, 3), size=(128, 224), objects="one", seed=1)
    assert len(ds) == 27 and not ds.skipped
    batch = collate_clips([ds[i] for i in range(3)])
    assert batch["frames"].shape == (3, 4, 3, 128, 224) and batch["frames"].dtype == torch.float32
    assert 0.0 <= batch["frames"].min() and batch["frames"].max() <= 1.0
    assert batch["masks"].shape == (3, 4, 128, 224) and batch["masks"].dtype == torch.int64
    assert set(batch["masks"].unique().tolist()) == {0, 1}
    assert batch["void"].dtype == torch.bool and batch["labelled"].all()
    assert batch["object_ids"].tolist() == [[1]] * 3 and batch["object_valid"].all()
    assert len(set(batch["sequence"])) == 3
    steps = batch["frame_indices"].diff(dim=1)
    assert (steps == batch["stride"].view(3, 1)).all() and ((1 <= steps) & (steps <= 3)).all()
    assert (batch["masks"][:, 0] == 1).flatten(1).sum(1).min() >= ds.min_pixels


def test_items_are_aligned_shaped_and_sparse(ytvos):
    ds = ClipDataset(ytvos, clip_length=6, stride=(1, 2), size=OUT, objects="all", augment=STRONG, seed=0,
                     samples_per_epoch=8, min_pixels=4)
    for i in range(len(ds)):
        item = ds[i]
        T = 6
        assert item["frames"].shape == (T, 3, *OUT) and item["masks"].shape == (T, *OUT)
        assert item["void"].shape == (T, *OUT) and item["labelled"].shape == (T,)
        labelled = item["labelled"]
        # sparse labels: exactly the annotated (every 5th) frames, always the first one
        assert labelled.tolist() == (item["frame_indices"] % 5 == 0).tolist() and labelled[0]
        assert (item["masks"][~labelled] == 0).all() and not item["void"][~labelled].any()
        ids = item["object_ids"][item["object_valid"]].tolist()
        colour_of = {0: 0, **{k + 1: original for k, original in enumerate(ids)}}
        f, m, v = item["frames"][labelled], item["masks"][labelled].clone(), item["void"][labelled]
        if 2 not in ids:  # an object that is not a target is background although painted green
            m[(colour_labels(f) == 2) & (m == 0)] = 9
            colour_of[9] = 2
        assert_aligned(f, m, colour_of, void=v)


def test_determinism_and_variety(ytvos):
    def make(seed=7):
        return ClipDataset(ytvos, clip_length=3, size=OUT, objects="one", seed=seed, samples_per_epoch=12)

    ds, twin = make(), make()

    def same(a, b):
        return all(torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a)

    assert same(ds.sample(2, 5), twin.sample(2, 5))
    twin.set_epoch(2)
    assert same(ds.sample(2, 5), twin[5]) and same(ds.sample(2, 5), ds[(2, 5)])
    items = [ds.sample(0, i) for i in range(12)]
    keys = {(it["sequence"], tuple(it["frame_indices"].tolist()), int(it["object_ids"][0])) for it in items}
    assert len(keys) >= 8
    assert len({it["sequence"] for it in items[:4]}) == 4  # every video once per block of 4
    assert sum(not torch.equal(a["frames"], b["frames"]) for a, b in zip(items, [ds.sample(1, i) for i in range(12)])) >= 10
    other_seed = make(seed=8)
    assert sum(not same(other_seed.sample(0, i), items[i]) for i in range(4)) >= 3


def test_late_object_never_starts_before_it_appears(ytvos_root):
    index = YouTubeVOSIndex(ytvos_root, split="train", sequences=["vid00"])
    ds = ClipDataset(index, clip_length=3, stride=(1, 3), size=OUT, objects="one", augment=False,
                     samples_per_epoch=40, seed=3)
    starts = {1: [], 2: []}
    for i in range(len(ds)):
        item = ds[i]
        obj = int(item["object_ids"][0])
        starts[obj].append(int(item["frame_indices"][0]))
        assert item["object_valid"][0] and (item["masks"][0] == 1).any()
        colour = colour_labels(item["frames"][:1])[0]
        core = interior(colour.unsqueeze(0))[0]  # the binary mask is the chosen object's colour
        assert torch.equal((item["masks"][0] == 1)[core], (colour == (2 if obj == 2 else 1))[core])
    assert starts[2] and min(starts[2]) >= 10
    assert starts[1] and min(starts[1]) < 10
    assert all(s % 5 == 0 for s in starts[1] + starts[2])


def test_all_objects_remapping_and_later_objects(ytvos_root):
    index = YouTubeVOSIndex(ytvos_root, split="train", sequences=["vid00"])
    start_only = ClipDataset(index, clip_length=11, stride=1, size=OUT, objects="all", augment=False,
                             samples_per_epoch=12, seed=0, max_objects=4)
    seen_two = False
    for i in range(len(start_only)):
        item = start_only[i]
        start = int(item["frame_indices"][0])
        valid = item["object_valid"]
        assert item["object_ids"].shape == (4,) and int(item["num_objects"]) == int(valid.sum())
        expected = [1, 2] if start >= 10 else [1]
        assert item["object_ids"][valid].tolist() == expected and (item["object_first"][valid] == 0).all()
        assert (item["object_ids"][~valid] == 0).all() and (item["object_first"][~valid] == -1).all()
        assert set(item["masks"].unique().tolist()) <= set(range(len(expected) + 1))
        lab = item["labelled"]
        colours = colour_labels(item["frames"][lab])
        if start < 10:  # object 2 appears inside the clip but is not a target: background
            assert (item["masks"][lab][colours == 2] == 0).all()
            seen_two |= bool((colours == 2).any())
    assert seen_two
    later = ClipDataset(index, clip_length=11, stride=1, size=OUT, objects="all", later_objects=True,
                        augment=False, samples_per_epoch=12, seed=0)
    for i in range(len(later)):
        item = later[i]
        fi = item["frame_indices"].tolist()
        if fi[0] < 10 and fi[-1] >= 10:
            first_labelled_with_2 = min(t for t, f in enumerate(fi) if f >= 10 and f % 5 == 0)
            assert item["object_ids"][:2].tolist() == [1, 2]
            assert item["object_first"][:2].tolist() == [0, first_labelled_with_2]
            assert (item["masks"][first_labelled_with_2] == 2).any()
    single = ClipDataset(index, clip_length=2, size=OUT, objects="all", max_objects=1, augment=False,
                         samples_per_epoch=6, seed=0)
    for i in range(len(single)):
        assert int(single[i]["num_objects"]) == 1 and single[i]["masks"].max() == 1


def test_labelled_only_and_stride_clamp(ytvos, ytvos_root):
    ds = ClipDataset(ytvos, clip_length=3, stride=(1, 2), size=OUT, labelled_only=True, augment=False, seed=0,
                     samples_per_epoch=8)
    for i in range(len(ds)):
        item = ds[i]
        fi = item["frame_indices"]
        assert item["labelled"].all() and (fi % 5 == 0).all()
        assert (fi.diff() == 5 * item["stride"]).all()
    # 6 labelled frames at most (0..25), clip of 6 labelled frames -> stride clamped to 1 and start 0
    long = ClipDataset(ytvos, clip_length=6, stride=(2, 3), size=OUT, labelled_only=True, augment=False,
                       samples_per_epoch=4, objects="all")
    for i in range(4):
        item = long[i]
        assert int(item["stride"]) == 1 and item["frame_indices"].tolist() == [0, 5, 10, 15, 20, 25]
    # a plain list of VideoSequence is an index too; a short video clamps the stride
    seq = ytvos.sequence("vid01")
    short = replace(seq, frame_names=seq.frame_names[:6], frame_paths=seq.frame_paths[:6],
                    mask_paths={k: v for k, v in seq.mask_paths.items() if int(k) < 6})
    clamp = ClipDataset([short], clip_length=5, stride=(2, 3), size=OUT, augment=False, samples_per_epoch=3)
    assert [int(clamp[i]["stride"]) for i in range(3)] == [1, 1, 1]
    assert [clamp[i]["frame_indices"].tolist() for i in range(3)] == [[0, 1, 2, 3, 4]] * 3


def test_variable_length_clips_are_padded_by_collate(ytvos):
    ds = ClipDataset(ytvos, clip_length=(2, 6), size=OUT, augment=False, seed=1, samples_per_epoch=16)
    items = [ds[i] for i in range(16)]
    lengths = [int(it["length"]) for it in items]
    assert min(lengths) >= 2 and max(lengths) <= 6 and len(set(lengths)) > 1
    batch = collate_clips(items)
    T = max(lengths)
    assert batch["frames"].shape[:2] == (16, T)
    assert batch["frame_valid"].sum(1).tolist() == lengths
    pad = ~batch["frame_valid"]
    assert not batch["labelled"][pad].any() and (batch["frame_indices"][pad] == -1).all()


def test_normalize_option(ytvos):
    plain = ClipDataset(ytvos, clip_length=2, size=OUT, seed=4, samples_per_epoch=2)
    norm = ClipDataset(ytvos, clip_length=2, size=OUT, seed=4, samples_per_epoch=2, normalize=True)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert torch.allclose(norm[0]["frames"], (plain[0]["frames"] - mean) / std, atol=1e-6)


def test_mixture_weights_and_determinism(ytvos, ytvos_root):
    a = ClipDataset(ytvos, clip_length=2, size=OUT, augment=False, name="yt", seed=1)
    b = ClipDataset(YouTubeVOSIndex(ytvos_root, split="train", sequences=["vid00"]), clip_length=2, size=OUT,
                    augment=False, name="late", seed=2)
    mix = ConcatClipDataset([a, b], weights=[3, 1], samples_per_epoch=400, seed=9)
    parts, within = mix.assignment(0)
    assert np.bincount(parts).tolist() == [300, 100]
    assert 0.15 < (parts[:100] == 1).mean() < 0.35 and 0.15 < (parts[300:] == 1).mean() < 0.35  # shuffled
    assert sorted(within[parts == 1].tolist()) == list(range(100))
    again = ConcatClipDataset([a, b], weights=[3, 1], samples_per_epoch=400, seed=9)
    assert np.array_equal(again.assignment(0)[0], parts)
    assert not np.array_equal(mix.assignment(1)[0], parts)
    three = ConcatClipDataset([a, b, a], weights=[0.7, 0.2, 0.1], samples_per_epoch=1000)
    assert np.bincount(three.assignment(3)[0]).tolist() == [700, 200, 100]
    for i in range(4):
        item = mix[i]
        d, j = int(parts[i]), int(within[i])
        assert int(item["source"]) == d and item["dataset"] == ["yt", "late"][d]
        assert torch.equal(item["frames"], [a, b][d].sample(0, j)["frames"])
    # empirical proportions over several epochs and a padded distributed tail stay within tolerance
    blocks = np.concatenate([mix.assignment(e, blk)[0] for e in range(3) for blk in range(2)])
    assert abs((blocks == 1).mean() - 0.25) < 0.01
    with pytest.raises(ValueError, match="weights"):
        ConcatClipDataset([a, b], weights=[1, -1])


def test_dataloader_workers_give_the_same_batches(ytvos):
    ds = ClipDataset(ytvos, clip_length=3, size=OUT, seed=11, samples_per_epoch=6)

    def batches(workers):
        sampler = ClipSampler(ds)
        loader = DataLoader(ds, batch_size=3, sampler=sampler, num_workers=workers, collate_fn=collate_clips,
                            persistent_workers=workers > 0)
        out = []
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            out.extend(loader)
        return out

    serial, parallel = batches(0), batches(2)
    assert len(serial) == len(parallel) == 4
    for s, p in zip(serial, parallel):
        assert s["sequence"] == p["sequence"]
        for key, value in s.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, p[key]), key
    assert not torch.equal(serial[0]["frames"], serial[2]["frames"])  # epochs differ
    assert serial[2]["epoch"].tolist() == [1, 1, 1]


def test_clip_sampler_shards_and_resumes():
    ranks = [list(ClipSampler(10, rank=r, world_size=3, epoch=2)) for r in range(3)]
    assert all(len(r) == 4 for r in ranks)
    flat = sorted(i for r in ranks for _, i in r)
    assert flat[:10] == list(range(10)) and all(e == 2 for r in ranks for e, _ in r)
    sampler = ClipSampler(10, rank=1, world_size=3)
    sampler.set_epoch(4, start=2)
    assert list(sampler) == [(4, 7), (4, 10)] and len(sampler) == 2


def test_bad_input_is_one_clear_error(tmp_path, ytvos):
    with pytest.raises(VidsegError, match="no sequences"):
        ClipDataset([], size=OUT)
    empty_split = YouTubeVOSIndex(ytvos.root, split="train", sequences=["not-a-video"])
    with pytest.raises(VidsegError, match="no sequences") as info:
        ClipDataset(empty_split, size=OUT)
    assert str(ytvos.root) in str(info.value)
    unannotated = tmp_path / "unannotated"
    make_ytvos(unannotated, n_videos=1, n_frames=6)
    meta = json.loads((unannotated / "train" / "meta.json").read_text())
    meta["videos"]["vid00"]["objects"] = {}
    (unannotated / "train" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(VidsegError, match="no sequence has an annotated object"):
        ClipDataset(YouTubeVOSIndex(unannotated, split="train"), size=OUT, clip_length=2)
    with pytest.raises(VidsegError, match="clip length 40 is longer than every video"):
        ClipDataset(ytvos, clip_length=40, size=OUT)
    with pytest.raises(VidsegError, match="labelled frames"):
        ClipDataset(ytvos, clip_length=7, size=OUT, labelled_only=True)
    gt_only = make_ytvos(tmp_path / "gt", n_videos=2, n_frames=6, frames=False)
    with pytest.raises(VidsegError, match="has annotations but no frames") as info:
        ClipDataset(YouTubeVOSIndex(gt_only, split="train"), size=OUT, clip_length=2)
    assert "JPEGImages" in str(info.value) and "\n" not in str(info.value)
    truncated = make_ytvos(tmp_path / "cut", n_videos=1, n_frames=12)
    (truncated / "train" / "JPEGImages" / "vid00" / "00010.jpg").unlink()
    with pytest.raises(VidsegError, match="00010.*has no frame"):
        ClipDataset(YouTubeVOSIndex(truncated, split="train"), size=OUT, clip_length=2)
    with pytest.raises(ValueError, match="divisible by 32"):
        ClipDataset(ytvos, size=(100, 200))
    with pytest.raises(ValueError, match="objects"):
        ClipDataset(ytvos, size=OUT, objects="some")
