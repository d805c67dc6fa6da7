"""int8 convolutions: calibration, accuracy against float32, which layers are quantised, sessions and resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import moving_squares, tiny_network
from torch import nn

from vidseg.errors import VidsegError
from vidseg.inference.methods import build_propagator
from vidseg.inference.recurrent import RecurrentPropagator
from vidseg.inference.session import FrameUpdate
from vidseg.models import quantize
from vidseg.models.quantize import (
    Int8Conv2d,
    calibrate_convs,
    eligible_convs,
    quantize_convs,
)


def test_int8_conv_matches_float32_within_quantisation_error():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(64, 96, 3, padding=1), nn.ReLU(), nn.Conv2d(96, 32, 1)).eval()
    calibration, other = torch.randn(1, 64, 24, 24), torch.randn(1, 64, 20, 28)
    params = calibrate_convs(model, lambda: model(calibration), min_weights=1)
    assert set(params) == {"0", "2"}
    int8 = quantize_convs(model, params)
    assert isinstance(int8[0], Int8Conv2d) and isinstance(int8[2], Int8Conv2d)
    assert type(model[0]) is nn.Conv2d  # the float network is left as it was
    with torch.inference_mode():
        for x in (calibration, other):
            reference, out = model(x), int8(x)
            assert out.dtype == torch.float32 and out.shape == reference.shape
            assert (out - reference).norm() / reference.norm() < 0.04
            assert (out - reference).abs().max() / reference.abs().max() < 0.15
            assert not torch.equal(out, reference)  # really computed in int8


def test_only_large_plain_convolutions_are_quantised():
    model = nn.Sequential(nn.Conv2d(8, 8, 3), nn.Conv2d(256, 256, 3, groups=256), nn.Conv2d(256, 256, 3))
    assert list(eligible_convs(model)) == ["2"]


def run_frames(propagator, frames, first, resume_at=None):
    """Probabilities of frames 1.. after committing frame 0's masks; optionally save and reload the state."""
    state = propagator.new_state()
    propagator.commit(state, frames[0], FrameUpdate([1, 2], first, given=[1, 2]))
    out = []
    for t, frame in enumerate(frames[1:], start=1):
        if t == resume_at:
            saved = propagator.state_dict(state)
            state = propagator.load_state_dict(saved)
        prediction = propagator.propagate(state, frame)
        propagator.commit(state, frame, FrameUpdate([1, 2], prediction.probabilities, given=[]))
        out.append(prediction.probabilities)
    return np.stack(out), state


def test_int8_session_follows_float32_and_resumes_exactly(monkeypatch):
    monkeypatch.setattr(quantize, "MIN_WEIGHTS", 1)  # the tiny network's convolutions are all small
    frames, masks = moving_squares(num_frames=5)
    first = np.stack([(masks[0] == k).astype(np.float32) for k in (1, 2)])
    model = tiny_network("hs2s")
    float32, _ = run_frames(RecurrentPropagator(model, max_side=96), frames, first)
    int8 = RecurrentPropagator(model, max_side=96, dtype="int8")
    straight, state = run_frames(int8, frames, first)
    assert state.int8 and all(isinstance(state.model.get_submodule(n), Int8Conv2d) for n in state.int8)
    assert int8.model is not state.model  # the shared float network stays float
    assert np.abs(straight - float32).max() < 0.1
    assert ((straight > 0.5) == (float32 > 0.5)).mean() > 0.98
    resumed, _ = run_frames(RecurrentPropagator(model, max_side=96, dtype="int8"), frames, first, resume_at=2)
    np.testing.assert_array_equal(resumed, straight)
    with pytest.raises(ValueError, match="resume with --dtype int8"):
        RecurrentPropagator(model, max_side=96).load_state_dict(int8.state_dict(state))


def test_int8_is_refused_where_it_does_not_apply():
    with pytest.raises(VidsegError, match="--dtype int8 does not apply to flow"):
        build_propagator("flow", dtype="int8")
    with pytest.raises(ValueError, match="does not combine with online learning"):
        RecurrentPropagator(tiny_network("s2s"), dtype="int8", online_steps=2)
