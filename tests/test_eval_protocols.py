"""Semi-supervised / unsupervised DAVIS protocols on arrays, YouTube-VOS on a tiny on-disk fixture,
and the HS2S analyses."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vidseg.errors import VidsegError
from vidseg.evaluation import evaluate, evaluate_sequence_arrays
from vidseg.evaluation.analyses import length_analysis, occlusion_analysis, reappearance_start
from vidseg.evaluation.results import ObjectResult, SequenceResult
from vidseg.io.masks import write_mask

H, W = 60, 200


def frame(*objects):
    """(H, W) id map; each object is (id, y0, y1, x0, x1)."""
    out = np.zeros((H, W), dtype=np.uint8)
    for object_id, y0, y1, x0, x1 in objects:
        out[y0:y1, x0:x1] = object_id
    return out


O1 = (10, 50, 10, 60)  # far apart: a mask of one never touches the other's boundary tolerance
O2 = (10, 50, 130, 180)


# ---------------------------------------------------------------------------------------------- semi


def test_semi_excludes_first_and_last_frames_and_scores_missing_objects_as_empty():
    gt = np.stack([frame((1, *O1), (2, *O2))] * 5)
    pred = gt.copy()
    pred[0] = 0  # first and last frames are not scored
    pred[4] = 0
    pred[2][pred[2] == 2] = 0  # object 2 missing in frame 2: an empty mask
    seq = evaluate_sequence_arrays(gt, pred, task="semi-supervised", name="s")
    assert [o.name for o in seq.objects] == ["s_1", "s_2"]
    o1, o2 = seq.objects
    np.testing.assert_array_equal(o1.t, [1, 2, 3])
    np.testing.assert_array_equal(o1.J, [1, 1, 1])
    np.testing.assert_array_equal(o2.J, [1, 0, 1])
    np.testing.assert_array_equal(o2.F, [1, 0, 1])
    assert o2.stats["J-Mean"] == pytest.approx(2 / 3)


def test_semi_objects_are_one_to_the_max_id_of_the_first_annotation():
    # first annotation holds id 3 only: objects 1..3 are scored (as the toolkit does)
    gt = np.stack([frame((3, *O1))] + [frame((1, *O2), (3, *O1))] * 3)
    seq = evaluate_sequence_arrays(gt, gt.copy(), task="semi-supervised", name="lab")
    assert [o.object_id for o in seq.objects] == [1, 2, 3]
    absent = seq.objects[1]
    np.testing.assert_array_equal(absent.J, [1, 1])  # empty in GT and result: J = F = 1
    np.testing.assert_array_equal(absent.F, [1, 1])


def test_semi_result_id_not_in_ground_truth_is_an_error():
    gt = np.stack([frame((1, *O1))] * 4)
    pred = gt.copy()
    pred[2][0:5, 0:5] = 2
    with pytest.raises(VidsegError, match=r"sequence 'x' frame 00002: result id 2 is not a ground-truth object"):
        evaluate_sequence_arrays(gt, pred, name="x")


# ---------------------------------------------------------------------------------------------- unsupervised


def test_unsupervised_hungarian_beats_the_greedy_choice():
    # per-pair means over 5 frames: (p1,o1) = 0.6, (p1,o2) = 0.4, (p2,o1) = 0.4, (p2,o2) = 0.
    # Greedy takes (p1,o1) first and leaves o2 with p2: total 0.6. The optimum is p1->o2, p2->o1: 0.8.
    gt = np.stack([frame((1, *O1), (2, *O2))] * 5)
    type_a = frame((1, *O1))  # p1 = o1, no p2
    type_b = frame((1, *O2), (2, *O1))  # p1 = o2, p2 = o1
    pred = np.stack([type_a, type_a, type_a, type_b, type_b])
    seq = evaluate_sequence_arrays(gt, pred, task="unsupervised", name="u")
    pairs = [(o.proposal_id, o.object_id) for o in seq.objects]
    assert pairs == [(1, 2), (2, 1)]
    assert [o.name for o in seq.objects] == ["u_1", "u_2"]  # toolkit naming: rows in proposal order
    assert [o.stats["J-Mean"] for o in seq.objects] == [pytest.approx(0.4), pytest.approx(0.4)]
    assert [o.stats["F-Mean"] for o in seq.objects] == [pytest.approx(0.4), pytest.approx(0.4)]


def test_unsupervised_unmatched_object_is_scored_against_an_empty_proposal():
    gt = np.stack([frame((1, *O1), (2, *O2))] * 3 + [frame((1, *O1))])  # o2 gone in the last frame
    pred = np.stack([frame((1, *O1))] * 4)  # one proposal only
    seq = evaluate_sequence_arrays(gt, pred, task="unsupervised", name="u")
    by_object = {o.object_id: o for o in seq.objects}
    assert by_object[1].stats["J-Mean"] == 1.0
    assert by_object[2].proposal_id == 2  # an added empty proposal
    np.testing.assert_array_equal(by_object[2].J, [0, 0, 0, 1])  # 1 where both are empty


def test_unsupervised_more_than_20_proposals_is_an_error():
    gt = np.stack([frame((1, *O1))] * 2)
    pred = gt.copy()
    pred[1][0:3, 0:3] = 21
    with pytest.raises(VidsegError, match="result id 21 is above the 20 proposals allowed"):
        evaluate_sequence_arrays(gt, pred, task="unsupervised")


# ---------------------------------------------------------------------------------------------- first-frame matching


def first_frame(gt, pred, **kwargs):
    return evaluate_sequence_arrays(gt, pred, task="unsupervised", name="u", matching="first-frame", **kwargs)


def test_first_frame_matching_follows_the_first_frame_whatever_the_ids():
    gt = np.stack([frame((1, *O1), (2, *O2))] * 5)
    pred = np.stack([frame((2, *O1), (1, *O2))] * 5)  # ids swapped on every frame
    seq = first_frame(gt, pred)
    assert [o.name for o in seq.objects] == ["u_1", "u_2"]  # semi-supervised naming, object order
    assert [(o.object_id, o.proposal_id) for o in seq.objects] == [(1, 2), (2, 1)]
    for o in seq.objects:
        np.testing.assert_array_equal(o.t, [1, 2, 3])
        np.testing.assert_array_equal(o.J, [1, 1, 1])
        np.testing.assert_array_equal(o.F, [1, 1, 1])


def test_first_frame_matching_keeps_the_assignment_when_a_proposal_drifts():
    # p1 = o1 and p2 = o2 on frame 0; from frame 1 on, p1 drifts onto o2 and p2 is gone.
    gt = np.stack([frame((1, *O1), (2, *O2))] * 5)
    pred = np.stack([frame((1, *O1), (2, *O2))] + [frame((1, *O2))] * 4)
    seq = first_frame(gt, pred)
    assert [o.proposal_id for o in seq.objects] == [1, 2]
    assert [o.stats["J-Mean"] for o in seq.objects] == [0.0, 0.0]  # frames 1..3: p1 off o1, p2 empty
    # the DAVIS protocol matches on all 5 frames: (p1,o2) = 0.8 + (p2,o1) = 0 beats (p1,o1) = 0.2 + (p2,o2) = 0.2
    davis = {o.object_id: o for o in evaluate_sequence_arrays(gt, pred, task="unsupervised", name="u").objects}
    assert (davis[1].proposal_id, davis[1].stats["J-Mean"]) == (2, 0.0)
    assert (davis[2].proposal_id, davis[2].stats["J-Mean"]) == (1, pytest.approx(0.8))


def test_first_frame_matching_unmatched_object_is_scored_against_an_empty_mask():
    gt = np.stack([frame((1, *O1), (2, *O2))] * 2 + [frame((2, *O2))] + [frame((1, *O1), (2, *O2))] * 2)
    pred = np.stack([frame((1, *O2))] * 5)  # one proposal, on object 2
    o1, o2 = first_frame(gt, pred).objects
    assert (o1.proposal_id, o2.proposal_id) == (2, 1)  # o1 gets an added empty proposal
    np.testing.assert_array_equal(o1.J, [0, 1, 0])  # 0 where visible, 1 where absent (frame 2)
    np.testing.assert_array_equal(o2.J, [1, 1, 1])


def test_first_frame_matching_excludes_the_first_and_last_frames():
    gt = np.stack([frame((1, *O1), (2, *O2))] * 5)
    pred = gt.copy()
    pred[0] = frame((1, 10, 50, 10, 35), (2, *O2))  # half of o1 on the matching frame: J = 0.5
    pred[4] = 0  # the last frame is lost
    o1, o2 = first_frame(gt, pred).objects
    assert (o1.proposal_id, o2.proposal_id) == (1, 2)
    np.testing.assert_array_equal(o1.t, [1, 2, 3])
    assert o1.stats["J-Mean"] == 1.0 and o2.stats["J-Mean"] == 1.0
    kept = first_frame(gt, pred, exclude_first_last=False).objects[0]
    np.testing.assert_array_equal(kept.J, [0.5, 1, 1, 1, 0])


def test_first_frame_matching_errors():
    gt = np.stack([frame((1, *O1))] * 3)
    pred = gt.copy()
    with pytest.raises(VidsegError, match="first-frame matching applies to the unsupervised task only"):
        evaluate_sequence_arrays(gt, pred, task="semi-supervised", matching="first-frame")
    with pytest.raises(VidsegError, match="unknown matching 'last-frame'"):
        evaluate_sequence_arrays(gt, pred, task="unsupervised", matching="last-frame")
    pred[1][0:3, 0:3] = 21
    with pytest.raises(VidsegError, match="result id 21 is above the 20 proposals allowed"):
        first_frame(gt, pred)


# ---------------------------------------------------------------------------------------------- YouTube-VOS


def build_youtube_vos(root, with_extra_id=False):
    """train/ meta (seen categories: dog, cat) and valid/ with one video: a dog from frame 00000 and a
    zebra (unseen) appearing in 00010; annotations every 5th frame; results for every frame."""
    (root / "train").mkdir(parents=True)
    (root / "train" / "meta.json").write_text(
        json.dumps({"videos": {"t1": {"objects": {"1": {"category": "dog", "frames": ["00000"]},
                                                   "2": {"category": "cat", "frames": ["00000"]}}}}})
    )
    annotated = ["00000", "00005", "00010", "00015", "00020"]
    meta = {"videos": {"v1": {"objects": {
        "1": {"category": "dog", "frames": annotated},
        "2": {"category": "zebra", "frames": annotated[2:]},
    }}}}
    valid = root / "valid"
    (valid / "Annotations" / "v1").mkdir(parents=True)
    (valid / "meta.json").write_text(json.dumps(meta))
    results = root / "results"
    for i, name in enumerate(annotated):
        gt = frame((1, *O1), (2, *O2)) if i >= 2 else frame((1, *O1))
        write_mask(valid / "Annotations" / "v1" / f"{name}.png", gt)
        pred = gt.copy()
        if name in ("00015", "00020"):
            pred[pred == 1] = 0  # the dog is lost in the last two annotated frames
        if name == "00010":
            pred[pred == 2] = 0  # the zebra's first frame is not scored, whatever the result
        if with_extra_id and name == "00015":
            pred[0:3, 0:3] = 7
        write_mask(results / "v1" / f"{name}.png", pred)
    for name in ("00001", "00002", "00003"):  # unannotated frames are ignored
        write_mask(results / "v1" / f"{name}.png", np.full((H, W), 9, np.uint8))
    return results


def test_youtube_vos_seen_unseen_and_late_objects(tmp_path):
    results = build_youtube_vos(tmp_path)
    result = evaluate(tmp_path, results, dataset="youtube-vos", split="valid", analyses=False)
    objects = {o.object_id: o for o in result.objects}
    assert objects[1].frames == ("00005", "00010", "00015", "00020")
    assert objects[2].frames == ("00015", "00020")
    assert objects[1].seen is True and objects[2].seen is False
    np.testing.assert_array_equal(objects[1].J, [1, 1, 0, 0])
    g = result.global_metrics
    assert g["J-Seen"] == pytest.approx(0.5) and g["F-Seen"] == pytest.approx(0.5)
    assert g["J-Unseen"] == 1.0 and g["F-Unseen"] == 1.0
    assert g["Overall"] == pytest.approx(0.75)
    assert g["J-Mean"] == pytest.approx(0.75)


def test_youtube_vos_result_id_outside_meta_is_an_error(tmp_path):
    results = build_youtube_vos(tmp_path, with_extra_id=True)
    with pytest.raises(VidsegError, match=r"sequence 'v1' frame 00015: result id 7 is not a ground-truth object"):
        evaluate(tmp_path, results, dataset="youtube-vos", split="valid")


def test_youtube_vos_first_frame_matching_uses_each_objects_first_annotated_frame(tmp_path):
    from vidseg.io.masks import read_mask

    results = build_youtube_vos(tmp_path)
    for name in ("00000", "00005", "00010", "00015", "00020"):  # swap ids 1 and 2 on the annotated frames
        path = results / "v1" / f"{name}.png"
        write_mask(path, np.choose(read_mask(path), [0, 2, 1]).astype(np.uint8))
    result = evaluate(tmp_path, results, task="unsupervised", dataset="youtube-vos", split="valid",
                      analyses=False, matching="first-frame")
    assert result.settings["matching"] == "first-frame"
    objects = {o.object_id: o for o in result.objects}
    # the dog is matched on 00000 (p2 covers it); the zebra on 00010 (no proposal covers it): p1 is left
    assert (objects[1].proposal_id, objects[2].proposal_id) == (2, 1)
    assert objects[1].frames == ("00005", "00010", "00015", "00020")  # the semi-supervised windows
    assert objects[2].frames == ("00015", "00020")
    np.testing.assert_array_equal(objects[1].J, [1, 1, 0, 0])
    np.testing.assert_array_equal(objects[2].J, [1, 1])
    assert result.global_metrics["Overall"] == pytest.approx(0.75)


# ---------------------------------------------------------------------------------------------- analyses


def test_reappearance_start():
    assert reappearance_start(np.array([5, 0, 5, 5]), 0) == 2
    assert reappearance_start(np.array([0, 0, 5]), 0) is None  # appears late, never occluded
    assert reappearance_start(np.array([5, 5, 5]), 0) is None
    assert reappearance_start(np.array([80, 40, 60, 5, 70]), 50) == 2
    assert reappearance_start(np.array([60, 70, 5, 0, 55]), 50) == 4


def make_object(name, t, j, f, area):
    return ObjectResult("s", name, 1, tuple(str(v) for v in t), np.asarray(t), np.asarray(j, float),
                        np.asarray(f, float), np.asarray(area))


def test_length_and_occlusion_analyses():
    t = np.arange(30)
    j = np.where(t < 10, 0.8, np.where(t > 20, 0.4, 0.6))
    area = np.where((t >= 12) & (t < 15), 0, 100)
    obj = make_object("s_1", t, j, j / 2, area)
    long_seq = SequenceResult("s", 30, [obj])
    short_seq = SequenceResult("short", 15, [make_object("short_1", t[:15], np.zeros(15), np.zeros(15), np.ones(15))])
    length = length_analysis([long_seq, short_seq])
    assert length["n_sequences"] == 1
    assert length["J-early"] == pytest.approx(0.8) and length["J-late"] == pytest.approx(0.4)
    assert length["F-early"] == pytest.approx(0.4) and length["F-late"] == pytest.approx(0.2)
    occlusion = occlusion_analysis([long_seq, short_seq])
    assert occlusion["0"]["n_objects"] == 1
    after = np.arange(15, 30)
    expected_j = j[after].mean()
    assert occlusion["0"]["J-Mean"] == pytest.approx(expected_j)
    assert occlusion["0"]["J&F-Mean"] == pytest.approx((expected_j + expected_j / 2) / 2)
    assert occlusion["100"]["n_objects"] == 0  # area 100 is never above 100
