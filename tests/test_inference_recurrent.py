"""The recurrent networks inside inference sessions and behind `vidseg segment --checkpoint`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import moving_squares, tiny_network

from vidseg.cli.main import main
from vidseg.errors import VidsegError
from vidseg.inference.methods import build_propagator
from vidseg.inference.network import scaled_size
from vidseg.inference.recurrent import RecurrentPropagator
from vidseg.inference.session import FrameUpdate, InferenceSession
from vidseg.io.masks import read_mask
from vidseg.models.checkpoint import save_checkpoint


def write_tiny_checkpoint(path, name="hs2s"):
    model = tiny_network(name)
    return save_checkpoint(path, {"model_config": model.cfg.to_dict(), "model": model.state_dict()})


def test_working_size_is_a_multiple_of_32():
    assert scaled_size(240, 427, 448) == (256, 448)
    assert scaled_size(480, 854, 448) == (256, 448)
    assert scaled_size(1080, 1920, 864) == (480, 864)
    assert scaled_size(10, 10, 448) == (448, 448)


@pytest.mark.parametrize("name", ["s2s", "s2s++", "hs2s", "hs2s_sim", "hs2s_match"])
def test_session_with_later_and_reinitialised_objects(name):
    frames, masks = moving_squares(num_frames=8)
    propagator = RecurrentPropagator(tiny_network(name), max_side=96)
    session = InferenceSession(propagator)
    only_first = np.where(masks[0] == 1, 1, 0).astype(np.uint8)
    outputs = []
    for t, frame in enumerate(frames):
        given = only_first if t == 0 else (masks[3] if t == 3 else None)  # object 2 joins at frame 3
        outputs.append(session.step(frame, given))
        state = session.state
        assert state.previous.shape[0] == len(session.object_ids)
        assert all(v.shape[0] == len(session.object_ids) for v in state.network.values())
    assert session.object_ids == [1, 2]
    np.testing.assert_array_equal(outputs[3], masks[3])
    assert set(np.unique(np.concatenate(outputs))) <= {0, 1, 2}
    # The state holds one frame: its size does not depend on how many frames were seen.
    sizes = {k: tuple(v.shape) for k, v in session.state.network.items()}
    session.step(frames[0])
    assert sizes == {k: tuple(v.shape) for k, v in session.state.network.items()}


def test_bfloat16_and_float32_propagation_agree():
    frames, masks = moving_squares(num_frames=2)
    model = tiny_network("hs2s")
    probabilities = {}
    for dtype in ("float32", "bfloat16"):
        propagator = RecurrentPropagator(model, max_side=96, dtype=dtype)
        state = propagator.new_state()
        first = np.stack([(masks[0] == k).astype(np.float32) for k in (1, 2)])
        propagator.commit(state, frames[0], FrameUpdate([1, 2], first, given=[1, 2]))
        probabilities[dtype] = propagator.propagate(state, frames[1]).probabilities
    assert probabilities["bfloat16"].dtype == torch.float32
    assert (probabilities["float32"] - probabilities["bfloat16"]).abs().max() < 0.05


def test_online_learning_gives_each_video_its_own_copy():
    frames, masks = moving_squares(num_frames=3)
    model = tiny_network("hs2s")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    propagator = RecurrentPropagator(model, max_side=96, online_steps=2, online_batch=2)
    session = InferenceSession(propagator)
    for t, frame in enumerate(frames):
        session.step(frame, masks[0] if t == 0 else None)
    assert session.state.model is not None and session.state.model is not propagator.model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_build_propagator_needs_a_matching_checkpoint(tmp_path):
    with pytest.raises(VidsegError, match="needs trained weights.*--checkpoint"):
        build_propagator("s2s")  # no weights are bundled for it
    path = write_tiny_checkpoint(tmp_path / "s2s.pt", "s2s")
    with pytest.raises(VidsegError, match="holds a s2s network, not hs2s.*--method s2s"):
        build_propagator("hs2s", checkpoint=str(path))
    assert build_propagator("s2s", checkpoint=str(path)).name == "s2s"


def test_cli_segment_with_a_checkpoint(tmp_path, square_clip, capsys):
    frame_dir, masks, first = square_clip
    checkpoint = write_tiny_checkpoint(tmp_path / "hs2s.pt")
    out = tmp_path / "out"
    code = main(["segment", str(frame_dir), "--mask", str(first), "--out", str(out), "--checkpoint", str(checkpoint),
                 "--max-side", "96", "--quiet"])
    assert code == 0
    captured = capsys.readouterr()
    assert "with 'hs2s'" in captured.out
    assert "precision: " in captured.err and "(auto: " in captured.err  # the start summary says what auto chose
    written = sorted(out.iterdir())
    assert len(written) == len(masks)
    np.testing.assert_array_equal(read_mask(written[0]), masks[0])
    assert read_mask(written[-1]).shape == masks[0].shape


def test_cli_segment_rejects_a_damaged_checkpoint(tmp_path, square_clip, capsys):
    frame_dir, _, first = square_clip
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 64)
    code = main(["segment", str(frame_dir), "--mask", str(first), "--out", str(tmp_path / "o"), "--checkpoint", str(bad)])
    err = capsys.readouterr().err
    assert code == 2 and "bad.pt: cannot read checkpoint" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_inference_copy_drops_the_training_only_border_head():
    frames, masks = moving_squares(num_frames=3)
    model = tiny_network("s2s++")
    propagator = RecurrentPropagator(model, max_side=96)
    assert propagator.model.decoder.border_head is None and model.decoder.border_head is not None
    first = (masks[0] == 1).astype(np.float32)[None]
    state = propagator.new_state()
    propagator.commit(state, frames[0], FrameUpdate([1], first, given=[1]))
    got = propagator.propagate(state, frames[1]).probabilities
    x = torch.from_numpy(frames[1]).permute(2, 0, 1)[None].float() / 255
    x0 = torch.from_numpy(frames[0]).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        out, _ = model.step(x, torch.from_numpy(first)[None], model.init_state(x0, torch.from_numpy(first)[None]))
    assert out.border_logits is not None
    np.testing.assert_allclose(got[0], torch.sigmoid(out.logits)[0, 0].numpy(), atol=1e-4)
