"""RVOS in the inference session: zero-shot slots become stable tracks, one-shot objects take slots (later ones
too), given masks bind a zero-shot network's slots, removed objects stay removed, and runs resume exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import clip_batch, moving_squares, overfit_rvos, tiny_rvos
from test_segment_resume import assert_same_masks, interrupt_at, write_clip

from vidseg.inference.runner import segment_video
from vidseg.inference.rvos import RVOSPropagator
from vidseg.inference.session import InferenceSession
from vidseg.models.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def squares():
    return moving_squares(num_frames=12)


@pytest.fixture(scope="module")
def zero_shot(squares):
    frames, masks = squares
    model = tiny_rvos("zero-shot")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the overfit's outcome depends on the reduction order: not on what ran before
    try:
        # lr 3e-3 for 300 steps converges on every seed and thread count tried; 1e-2 for 80 steps (until 2026-12-07)
        # left object 2 unlearnt on 3 of 7 slightly perturbed starts
        overfit_rvos(model, clip_batch(frames[:4], masks[:4]), steps=300, lr=3e-3)
    finally:
        torch.set_num_threads(threads)
    return model.eval()


@pytest.fixture(scope="module")
def one_shot(squares):
    frames, masks = squares
    model = tiny_rvos("one-shot")
    overfit_rvos(model, clip_batch(frames[:4], masks[:4]), steps=40, sampling_probability=0.5)
    return model.eval()


def _majority(prediction: np.ndarray, region: np.ndarray) -> int:
    values, counts = np.unique(prediction[region], return_counts=True)
    return int(values[np.argmax(counts)])


def test_zero_shot_discovers_the_objects_with_ids_stable_over_the_clip(zero_shot, squares):
    frames, masks = squares
    session = InferenceSession(RVOSPropagator(zero_shot, max_side=96, min_area=16))
    outputs = [session.step(frame) for frame in frames[:4]]  # the frames the tiny network was fit on: what is
    # tested is the session keeping each slot's track, not a 4-frame overfit's reach to unseen frames
    for object_id in (1, 2):
        ids = {_majority(out, gt == object_id) for out, gt in zip(outputs, masks)}
        assert len(ids) == 1 and ids != {0}, (object_id, ids)  # one discovered id, the same in every frame
    first = {_majority(outputs[0], masks[0] == k) for k in (1, 2)}
    assert len(first) == 2  # two different objects
    overlap = [np.mean((out > 0) == (gt > 0)) for out, gt in zip(outputs, masks)]
    assert min(overlap) > 0.9


def test_given_masks_bind_zero_shot_slots_and_removed_objects_stay_away(zero_shot, squares):
    frames, masks = squares
    session = InferenceSession(RVOSPropagator(zero_shot, max_side=96, min_area=16))
    given = np.where(masks[0] == 1, 7, np.where(masks[0] == 2, 9, 0)).astype(np.uint8)
    outputs = [session.step(frames[0], given)] + [session.step(frame) for frame in frames[1:4]]
    assert all(set(np.unique(out)) <= {0, 7, 9} for out in outputs)
    assert _majority(outputs[3], masks[3] == 1) == 7 and _majority(outputs[3], masks[3] == 2) == 9
    session.remove_object(9)
    later = [session.step(frame) for frame in frames[4:8]]
    assert all(9 not in np.unique(out) for out in later)
    assert all(_majority(out, gt == 1) == 7 for out, gt in zip(later, masks[4:8]))


def test_one_shot_follows_given_objects_and_a_later_object_joins_a_free_slot(one_shot, squares):
    frames, masks = squares
    propagator = RVOSPropagator(one_shot, max_side=96)
    session = InferenceSession(propagator)
    only_first = np.where(masks[0] == 1, 1, 0).astype(np.uint8)
    outputs = [session.step(frames[0], only_first), session.step(frames[1])]
    assert set(np.unique(outputs[1])) <= {0, 1}
    later = np.where(masks[2] == 2, 2, 0).astype(np.uint8)
    outputs += [session.step(frames[2], later)] + [session.step(frame) for frame in frames[3:8]]
    assert session.state.slot_tracks[:2] == [1, 2] and set(session.state.slot_tracks[2:]) == {0}
    for out, gt in zip(outputs[3:], masks[3:8]):
        assert _majority(out, gt == 1) == 1 and _majority(out, gt == 2) == 2
    with pytest.raises(ValueError, match="does not match|more than|at most"):
        crowd = np.arange(64 * 96, dtype=np.int64).reshape(64, 96) % 6 + 1
        InferenceSession(propagator).step(frames[0], crowd.astype(np.uint8))


def test_one_shot_needs_masks_and_zero_shot_does_not(one_shot, zero_shot):
    assert not RVOSPropagator(one_shot).discovers_objects
    assert RVOSPropagator(zero_shot).discovers_objects


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["zero-shot", "one-shot"])
def test_interrupted_run_resumes_to_the_same_masks(tmp_path, mode, zero_shot, one_shot):
    model = zero_shot if mode == "zero-shot" else one_shot
    frames, first = write_clip(tmp_path, num_frames=10)
    masks = [] if mode == "zero-shot" else [first]
    segment_video(frames, masks, tmp_path / "full", method=RVOSPropagator(model, max_side=96), progress=False)
    with pytest.raises(KeyboardInterrupt):
        segment_video(frames, masks, tmp_path / "out", progress=False,
                      method=interrupt_at(RVOSPropagator(model, max_side=96), 5))
    resumed = segment_video(frames, masks, tmp_path / "out", method=RVOSPropagator(model, max_side=96),
                            progress=False, resume=True)
    assert resumed.resumed_at > 0
    assert_same_masks(tmp_path / "out", tmp_path / "full")


@pytest.mark.slow
def test_segment_command_runs_a_zero_shot_checkpoint_without_a_mask(tmp_path, zero_shot, capsys):
    from vidseg.cli.main import main

    checkpoint = save_checkpoint(tmp_path / "rvos.pt", {
        "method": "rvos", "model_config": zero_shot.cfg.to_dict(), "model": zero_shot.state_dict(),
        "meta": {"max_side": 96}})
    frames, _ = write_clip(tmp_path, num_frames=6)
    assert main(["segment", str(frames), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "masks"),
                 "--quiet"]) == 0
    written = sorted((tmp_path / "masks").glob("*.png"))
    assert len(written) == 6
    assert "with 'rvos'" in capsys.readouterr().out
