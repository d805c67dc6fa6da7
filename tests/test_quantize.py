"""int8 convolutions: calibration, accuracy against float32, which layers are quantised, sessions and resume, int8
exports (saved as plain tensors, loaded without float weights) and RVOS in int8."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import moving_squares, tiny_network, tiny_rvos
from torch import nn

from vidseg.errors import VidsegError
from vidseg.inference.int8_export import export_int8, synthetic_clips
from vidseg.inference.methods import build_propagator
from vidseg.inference.recurrent import RecurrentPropagator
from vidseg.inference.rvos import RVOSPropagator
from vidseg.inference.session import FrameUpdate, InferenceSession
from vidseg.models import quantize
from vidseg.models.checkpoint import is_int8_checkpoint, read_checkpoint, save_checkpoint
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


def test_int8_network_saves_as_plain_tensors_and_loads_into_a_meta_shell(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(32, 48, 3, padding=1), nn.ReLU(), nn.Conv2d(48, 16, 1, bias=False)).eval()
    x = torch.randn(1, 32, 10, 14)
    int8 = quantize_convs(model, calibrate_convs(model, lambda: model(x), min_weights=1))
    saved = int8.state_dict()
    assert saved["0.weight"].dtype == torch.int8 and saved["0.weight_scale"].shape == (48,)
    assert "2.bias" not in saved and not any(t.is_quantized for t in saved.values())
    torch.save(saved, tmp_path / "int8.pt")
    with torch.device("meta"):
        shell = nn.Sequential(nn.Conv2d(32, 48, 3, padding=1), nn.ReLU(), nn.Conv2d(48, 16, 1, bias=False))
    quantize.int8_shells(shell, quantize.int8_names(saved))
    shell.load_state_dict(torch.load(tmp_path / "int8.pt", weights_only=True), assign=True)
    assert quantize.is_int8(shell) and not quantize.is_int8(model)
    with torch.inference_mode():
        assert torch.equal(shell(x), int8(x))
        assert torch.equal(copy.deepcopy(int8)(x), int8(x))
    monkeypatch.setattr(quantize, "PACK_VALUES", 1000)  # packed in slices of 3 output channels: the same numbers
    sliced = copy.deepcopy(shell)
    sliced.load_state_dict(saved)
    assert len(sliced[0]._packed) == 16
    with torch.inference_mode():
        assert torch.equal(sliced(x), int8(x))
    assert all(torch.equal(sliced.state_dict()[k], v) for k, v in saved.items())
    broken = {**saved, "0.weight": saved["0.weight"].float()}
    with pytest.raises(RuntimeError, match="needs int8 weights"):
        copy.deepcopy(shell).load_state_dict(broken)


@pytest.fixture
def hs2s_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(quantize, "MIN_WEIGHTS", 1)  # the tiny network's convolutions are all small
    model = tiny_network("hs2s")
    return model, save_checkpoint(tmp_path / "raw.pt", {"model_config": model.cfg.to_dict(), "model": model.state_dict(),
                                                        "meta": {"max_side": 96}})


def test_int8_export_runs_without_float_weights_and_follows_float32(tmp_path, hs2s_checkpoint):
    model, raw = hs2s_checkpoint
    frames, masks = moving_squares(num_frames=6)
    clips, described = synthetic_clips(videos=1, frames=3)
    out = export_int8(raw, tmp_path / "int8.pt", clips, described)
    content = read_checkpoint(out)
    assert is_int8_checkpoint(content) and content["meta"]["calibration"] == described
    assert content["inference"]["dropped"] == ["decoder.border_head"]
    assert {v.dtype for k, v in content["model"].items() if k.endswith(".weight")} <= {torch.int8, torch.float16}
    propagator = build_propagator(checkpoint=out)
    assert propagator.precision == ("int8", "auto: an int8 export")
    convs = [m for m in propagator.model.modules() if type(m) is nn.Conv2d]
    assert not convs and quantize.is_int8(propagator.model)  # every convolution is int8, no float copy kept
    first = np.stack([(masks[0] == k).astype(np.float32) for k in (1, 2)])
    float32, _ = run_frames(RecurrentPropagator(model, max_side=96), frames, first)
    int8, state = run_frames(propagator, frames, first, resume_at=3)
    assert state.int8 is None and state.model is propagator.model  # calibrated once, at export
    assert ((int8 > 0.5) == (float32 > 0.5)).mean() > 0.98
    with pytest.raises(VidsegError, match="holds int8 weights"):
        build_propagator(checkpoint=out, dtype="float32")
    with pytest.raises(VidsegError, match="an int8 export already"):
        export_int8(out, tmp_path / "again.pt", clips, described)


def test_export_command_calibrates_on_davis_videos_and_checks_its_options(tmp_path, hs2s_checkpoint, davis_240p, capsys):
    from vidseg.cli.main import main

    _, raw = hs2s_checkpoint
    out = tmp_path / "int8.pt"
    assert main(["export", str(raw), str(out), "--dtype", "int8", "--calibrate", str(davis_240p),
                 "--calibrate-sequences", "bear", "--calibrate-frames", "2"]) == 0
    assert "first 2 frames of 1 videos" in capsys.readouterr().out
    assert "(bear)" in read_checkpoint(out)["meta"]["calibration"]
    assert main(["export", str(raw), str(tmp_path / "x.pt"), "--calibrate", str(davis_240p)]) == 2
    assert "--calibrate applies to --dtype int8 only" in capsys.readouterr().err
    assert main(["export", str(raw), str(tmp_path / "x.pt"), "--dtype", "int8", "--calibrate-frames", "0"]) == 2


@pytest.mark.parametrize("mode", ["zero-shot", "one-shot"])
def test_rvos_int8_follows_float32_and_resumes_exactly(monkeypatch, mode):
    monkeypatch.setattr(quantize, "MIN_WEIGHTS", 1)
    frames, masks = moving_squares(num_frames=6)
    model = tiny_rvos(mode).eval()
    given = masks[0] if mode == "one-shot" else None

    def segment(dtype: str, resume_at: int | None = None) -> tuple[np.ndarray, InferenceSession]:
        session = InferenceSession(RVOSPropagator(model, max_side=96, dtype=dtype))
        out = []
        for t, frame in enumerate(frames):
            if t == resume_at:
                saved = session.state_dict()
                session = InferenceSession(RVOSPropagator(model, max_side=96, dtype=dtype))
                session.load_state_dict(saved)
            out.append(session.step(frame, given if t == 0 else None))
        return np.stack(out), session

    float32, _ = segment("float32")
    int8, session = segment("int8")
    state = session.state
    assert state.int8 and all(isinstance(state.model.get_submodule(n), Int8Conv2d) for n in state.int8)
    assert (int8 == float32).mean() > 0.95  # an untrained network: many pixels near 0.5
    resumed, _ = segment("int8", resume_at=3)
    np.testing.assert_array_equal(resumed, int8)


def test_auto_precision_gives_a_method_only_what_it_takes(monkeypatch):
    from vidseg import machine
    from vidseg.inference.methods import _resolve_precision
    from vidseg.registry import get_method

    monkeypatch.setattr(machine, "cpu_flags", lambda: {"avx512_bf16"})
    ovsnet, rvos = get_method("ovsnet"), get_method("rvos")
    assert _resolve_precision(rvos, "auto", "cpu", None, None)[0] == "bfloat16"
    assert _resolve_precision(ovsnet, "auto", "cpu", None, None) == ("float32", "auto: ovsnet runs in float32")
    assert _resolve_precision(ovsnet, "int8", "cpu", None, None)[0] == "int8"
    with pytest.raises(VidsegError, match="--dtype bfloat16 does not apply to ovsnet"):
        _resolve_precision(ovsnet, "bfloat16", "cpu", None, None)
