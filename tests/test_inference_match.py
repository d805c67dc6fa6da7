"""The ``match`` method: label propagation on frozen EfficientNet-Lite features follows objects, takes objects
given later and removed ones, resumes exactly, and is a registered method without a checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import moving_squares

from vidseg.cli.main import main
from vidseg.inference.match import MatchPropagator
from vidseg.inference.methods import runnable_methods
from vidseg.inference.session import InferenceSession


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


@pytest.fixture(scope="module")
def clip():
    return moving_squares(num_frames=8, size=(128, 224), side=44, step=4)


@pytest.fixture(scope="module")
def propagator():
    return MatchPropagator(max_side=224, memory=3)


def test_match_follows_two_objects(clip, propagator):
    frames, masks = clip
    session = InferenceSession(propagator)
    outputs = [session.step(frame, masks[0] if t == 0 else None) for t, frame in enumerate(frames)]
    for object_id in (1, 2):
        assert iou(outputs[-1] == object_id, masks[-1] == object_id) > 0.6


def test_later_and_removed_objects_and_exact_resume(clip, propagator):
    frames, masks = clip
    frames = frames.copy()
    for t in range(3):  # object 2 enters at frame 3: before, a flat grey patch stands where it will be
        frames[t][masks[t] == 2] = 128
    first_only = np.where(masks[0] == 1, 1, 0).astype(np.uint8)
    later = np.where(masks[3] == 2, 2, 0).astype(np.uint8)

    def run(session, start, stop):
        return [session.step(frames[t], first_only if t == 0 else later if t == 3 else None) for t in range(start, stop)]

    whole = InferenceSession(propagator)
    expected = run(whole, 0, 8)
    assert 2 not in expected[2] and iou(expected[-1] == 2, masks[-1] == 2) > 0.5
    part = InferenceSession(propagator)
    run(part, 0, 5)
    resumed = InferenceSession(propagator)
    resumed.load_state_dict(part.state_dict())
    assert all((a == b).all() for a, b in zip(run(resumed, 5, 8), expected[5:]))
    resumed.remove_object(1)
    assert 1 not in resumed.step(frames[0])


def test_match_is_runnable_without_weights_and_refuses_network_options(tmp_path, capsys):
    assert "match" in runnable_methods()
    assert main(["segment", str(tmp_path), "--mask", "m.png", "--out", str(tmp_path / "o"), "--method", "match",
                 "--online-steps", "3"]) == 2
    assert "--online-steps does not apply to match" in capsys.readouterr().err


def test_match_takes_a_float_dtype_and_bfloat16_stays_close_to_float32():
    frames, masks = moving_squares(num_frames=6, size=(96, 128), side=32)
    outputs = {}
    for dtype in ("float32", "bfloat16"):
        session = InferenceSession(MatchPropagator(max_side=224, memory=3, dtype=dtype))
        outputs[dtype] = [session.step(f, masks[0] if t == 0 else None) for t, f in enumerate(frames)]
        assert session.propagator.features.backbone.conv_stem.weight.dtype == getattr(torch, dtype)
    agree = np.mean([(a == b).mean() for a, b in zip(outputs["float32"], outputs["bfloat16"])])
    assert agree > 0.98
    with pytest.raises(ValueError, match="dtype must be one of"):
        MatchPropagator(dtype="int8")
