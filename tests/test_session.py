import numpy as np
import pytest
import torch
from conftest import moving_squares

from vidseg.errors import VidsegError
from vidseg.inference import InferenceSession, build_propagator
from vidseg.inference.flow import FlowPropagator
from vidseg.inference.session import aggregate


def iou(a, b):
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


def test_aggregate_is_exclusive_and_keeps_confident_objects():
    p = torch.tensor([[[0.9, 0.1]], [[0.8, 0.05]]])  # (K=2, 1, 2)
    out = aggregate(p).numpy()
    assert out.shape == (3, 1, 2)
    np.testing.assert_allclose(out.sum(axis=0), 1.0, atol=1e-5)
    assert out[:, 0, 0].argmax() == 1 and out[:, 0, 1].argmax() == 0


def test_flow_tracks_two_moving_objects():
    frames, masks = moving_squares(num_frames=12, size=(96, 128), side=32)
    session = InferenceSession(FlowPropagator())
    outputs = [session.step(f, masks[0] if t == 0 else None) for t, f in enumerate(frames)]
    np.testing.assert_array_equal(outputs[0], masks[0])
    for object_id in (1, 2):
        scores = [iou(o == object_id, m == object_id) for o, m in zip(outputs, masks)]
        assert min(scores) > 0.6, (object_id, scores)
    # object 1 moves 22 px, more than its width: only following the motion keeps it
    assert iou(outputs[-1] == 1, masks[-1] == 1) > iou(masks[0] == 1, masks[-1] == 1) + 0.3
    assert session.object_ids == [1, 2]


def test_object_added_later_and_reinitialised():
    frames, masks = moving_squares(num_frames=8, size=(96, 128), side=32)
    only_first = np.where(masks[0] == 1, 1, 0).astype(np.uint8)
    session = InferenceSession(FlowPropagator())
    out0 = session.step(frames[0], only_first)
    assert set(np.unique(out0)) == {0, 1}
    out1 = session.step(frames[1])
    assert 2 not in out1
    second = np.where(masks[2] == 2, 2, 0).astype(np.uint8)
    out2 = session.step(frames[2], second)
    assert iou(out2 == 2, masks[2] == 2) == 1.0 and iou(out2 == 1, masks[2] == 1) > 0.7
    out3 = session.step(frames[3])
    assert iou(out3 == 2, masks[3] == 2) > 0.7
    # re-giving object 1 with a different mask replaces it entirely
    moved = np.zeros_like(masks[4])
    moved[0:5, 0:5] = 1
    out4 = session.step(frames[4], moved)
    np.testing.assert_array_equal(out4 == 1, moved == 1)


def test_frames_before_first_mask_are_empty_and_size_changes_rejected():
    frames, masks = moving_squares(num_frames=3)
    session = InferenceSession(FlowPropagator())
    assert not session.step(frames[0]).any()
    with pytest.raises(ValueError, match="differs from the first frame"):
        session.step(frames[1][:32])


def test_working_resolution_and_back():
    propagator = FlowPropagator(max_side=96)
    assert propagator.working_size(128, 192) == (64, 96)
    frames, masks = moving_squares(num_frames=6, size=(128, 192), side=40)
    session = InferenceSession(propagator)
    outputs = [session.step(f, masks[0] if t == 0 else None) for t, f in enumerate(frames)]
    assert outputs[-1].shape == (128, 192)
    assert iou(outputs[-1] == 1, masks[-1] == 1) > 0.7


def test_state_does_not_grow_with_video_length():
    frames, masks = moving_squares(num_frames=30)
    session = InferenceSession(FlowPropagator())
    sizes = []
    for t, frame in enumerate(frames):
        session.step(frame, masks[0] if t == 0 else None)
        state = session.state
        sizes.append(state.previous_gray.nbytes + state.probabilities.nbytes)
    assert len(set(sizes[1:])) == 1


def test_unknown_method_is_a_clear_error():
    with pytest.raises(VidsegError, match=r"unknown method .nope.*use one of: flow, match, match_refine, hs2s, s2s\+\+, s2s"):
        build_propagator("nope")
