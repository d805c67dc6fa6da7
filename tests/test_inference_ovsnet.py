"""OVSNet's cascade: each path in constructed cases (a candidate on the warped mask, an occluded object re-found by
its embedding, no candidate -> the refined warped mask), candidates used once; the propagator in a session follows
objects, resumes exactly and runs from `vidseg segment`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import clip_batch, moving_squares, tiny_ovsnet
from test_segment_resume import assert_same_masks, interrupt_at, write_clip

from vidseg.cli.main import main
from vidseg.evaluation.metrics import jaccard
from vidseg.inference.ovsnet import (
    OVSNetPropagator,
    cascade,
    first_frame_finetune,
    mask_iou,
)
from vidseg.inference.runner import segment_video
from vidseg.inference.session import InferenceSession
from vidseg.models.checkpoint import save_checkpoint
from vidseg.training.ovsnet import ovsnet_loss


def _box(y0: int, x0: int, size: int = 6, shape: tuple[int, int] = (20, 20)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[y0 : y0 + size, x0 : x0 + size] = True
    return mask


EMPTY = np.zeros((0, 2), np.float32)


def test_mask_iou():
    a = np.stack([_box(0, 0), np.zeros((20, 20), bool)])
    b = np.stack([_box(0, 3), _box(10, 10)])
    assert mask_iou(a, b) == pytest.approx(np.array([[18 / 54, 0], [0, 0]]))


def test_a_candidate_on_the_warped_mask_takes_the_iou_path():
    templates = np.stack([_box(2, 2), _box(12, 12)])
    candidates = np.stack([_box(12, 13), _box(2, 3)])  # in the other order, each overlapping its object by 5/7
    embeddings = np.zeros((2, 2), np.float32)
    assert cascade(templates, candidates, embeddings, [EMPTY, EMPTY]) == [("iou", 1), ("iou", 0)]
    assert cascade(templates, candidates, embeddings, [EMPTY, EMPTY], rho_iou=0.8) == [("flow", -1), ("flow", -1)]


def test_an_occluded_object_is_found_again_by_its_embedding():
    templates = np.zeros((1, 20, 20), bool)  # lost: its warped mask is empty
    candidates = np.stack([_box(2, 2), _box(12, 12)])
    embeddings = np.array([[5.0, 5.0], [0.2, 0.1]], np.float32)
    collection = np.array([[0.0, 0.0], [0.3, 0.0], [9.0, 9.0]], np.float32)  # 2 of 3 within 2.3 of candidate 1
    assert cascade(templates, candidates, embeddings, [collection]) == [("reid", 1)]
    assert cascade(templates, candidates, embeddings, [collection], reid=False) == [("absent", -1)]
    assert cascade(templates, candidates, embeddings, [collection], reid_fraction=0.7) == [("absent", -1)]
    assert cascade(templates, candidates, embeddings, [collection], rho_reid=0.1) == [("absent", -1)]


def test_without_a_candidate_the_warped_mask_takes_the_flow_path():
    templates = np.stack([_box(2, 2)])
    assert cascade(templates, np.zeros((0, 20, 20), bool), EMPTY, [EMPTY]) == [("flow", -1)]


def test_each_candidate_is_used_once():
    templates = np.stack([_box(2, 2), _box(2, 3)])  # two objects on the same spot, one candidate
    candidates = np.stack([_box(2, 2)])
    embeddings = np.zeros((1, 2), np.float32)
    collections = [np.zeros((1, 2), np.float32)] * 2  # both would also accept it by re-ID
    decisions = cascade(templates, candidates, embeddings, collections)
    assert sorted(decisions) == [("flow", -1), ("iou", 0)]


@pytest.fixture(scope="module")
def squares():
    return moving_squares(num_frames=10)


@pytest.fixture(scope="module")
def trained(squares):
    frames, masks = squares
    model = tiny_ovsnet(score_threshold=0.3)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 3e-3)
    generator = torch.Generator().manual_seed(0)
    batch = clip_batch(frames[:4], masks[:4])
    for _ in range(60):
        loss, _ = ovsnet_loss(model, batch, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.mark.slow
def test_session_follows_the_objects_through_the_cascade(squares, trained):
    frames, masks = squares
    propagator = OVSNetPropagator(trained, max_side=96)
    session = InferenceSession(propagator)
    predictions = [session.step(frame, masks[0] if t == 0 else None) for t, frame in enumerate(frames)]
    state = session.state
    assert sum(state.paths.values()) == 2 * (len(frames) - 1)  # one decision per object and frame
    assert state.paths["iou"] > 0
    assert all(len(c) <= trained.cfg.collection for c in state.collections.values())
    for object_id in (1, 2):
        scores = [jaccard(m == object_id, p == object_id) for m, p in zip(masks[1:], predictions[1:])]
        assert np.mean(scores) > 0.5, object_id


@pytest.mark.slow
def test_ablation_switches_and_settings(trained):
    propagator = OVSNetPropagator(trained, max_side=96, rho_iou=0.5, reid=False, refine=False, test_size=96)
    assert propagator.cfg.rho_iou == 0.5 and propagator.cfg.rho_reid == trained.cfg.rho_reid
    assert propagator.model.detector.transform.min_size == (96,)
    assert trained.detector.transform.min_size == (trained.cfg.test_size,)  # the caller's network is unchanged
    with pytest.raises(ValueError, match="flow"):
        OVSNetPropagator(trained, flow="farneback")


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_masks(tmp_path, trained):
    frames, first = write_clip(tmp_path, num_frames=8)
    segment_video(frames, [first], tmp_path / "full", method=OVSNetPropagator(trained, max_side=96), progress=False)
    with pytest.raises(KeyboardInterrupt):
        segment_video(frames, [first], tmp_path / "out", progress=False,
                      method=interrupt_at(OVSNetPropagator(trained, max_side=96), 4))
    resumed = segment_video(frames, [first], tmp_path / "out", method=OVSNetPropagator(trained, max_side=96),
                            progress=False, resume=True)
    assert resumed.resumed_at > 0
    assert_same_masks(tmp_path / "out", tmp_path / "full")


@pytest.mark.slow
def test_segment_command_runs_an_ovsnet_checkpoint(tmp_path, trained, capsys):
    checkpoint = save_checkpoint(tmp_path / "ovsnet.pt", {
        "method": "ovsnet", "model_config": trained.cfg.to_dict(), "model": trained.state_dict(),
        "meta": {"max_side": 96}})
    frames, first = write_clip(tmp_path, num_frames=5)
    out = tmp_path / "masks"
    assert main(["segment", str(frames), "--mask", str(first), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--rho-iou", "0.4", "--quiet"]) == 0
    assert len(list(out.glob("*.png"))) == 5
    missing = tmp_path / "raft.pth"
    assert main(["segment", str(frames), "--mask", str(first), "--checkpoint", str(checkpoint), "--out",
                 str(tmp_path / "raft"), "--flow", "raft", "--flow-weights", str(missing), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "RAFT needs trained weights" in error and "--flow dis" in error
    assert main(["segment", str(frames), "--mask", str(first), "--method", "flow", "--out", str(tmp_path / "f"),
                 "--rho-iou", "0.4", "--quiet"]) == 2
    assert "--rho-iou" in capsys.readouterr().err


@pytest.mark.slow
def test_first_frame_fine_tuning_tunes_a_per_video_copy_and_resumes(tmp_path, squares, trained):
    frames, masks = squares
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    tuned = first_frame_finetune(trained, frames[0], masks[0], steps=2, lr=1e-3)
    assert any(not torch.equal(before[k], v) for k, v in tuned.state_dict().items())
    assert all(torch.equal(before[k], v) for k, v in trained.state_dict().items())
    clip, first = write_clip(tmp_path, num_frames=6)

    def online():
        return OVSNetPropagator(trained, max_side=96, online_steps=2, online_lr=1e-3)

    segment_video(clip, [first], tmp_path / "full", method=online(), progress=False)
    with pytest.raises(KeyboardInterrupt):
        segment_video(clip, [first], tmp_path / "out", progress=False, method=interrupt_at(online(), 3))
    segment_video(clip, [first], tmp_path / "out", method=online(), progress=False, resume=True)
    assert_same_masks(tmp_path / "out", tmp_path / "full")


@pytest.mark.slow
def test_without_detections_the_propagator_refines_the_warped_masks(squares, trained):
    import copy

    from vidseg.inference.flow import DISFlow, warp_maps

    frames, masks = squares
    blind = copy.deepcopy(trained)
    blind.detector.roi_heads.score_thresh = 1.1  # no candidate ever passes: every object takes the flow path
    outputs = {}
    for refine in (False, True):
        session = InferenceSession(OVSNetPropagator(blind, max_side=96, refine=refine))
        session.step(frames[0], masks[0])
        state = session.state
        previous = state.probabilities
        prediction = session.propagator.propagate(state, frames[1])
        assert state.pending["counts"] == ["flow", "flow"]
        outputs[refine] = prediction.probabilities
    warped, _ = warp_maps(previous, DISFlow()(frames[1], frames[0]))
    assert np.array_equal(outputs[False], warped)
    found = blind.eval().detect([torch.from_numpy(frames[1]).permute(2, 0, 1).float() / 255])[0]
    refined = blind.refine_masks(found, torch.from_numpy(warped)).numpy()
    assert np.allclose(outputs[True], refined, atol=1e-5)
    assert not np.allclose(outputs[True], warped, atol=1e-2)


@pytest.mark.slow
def test_int8_follows_float32_resumes_exactly_and_runs_as_an_int8_export(tmp_path, monkeypatch, squares, trained):
    from vidseg.inference.int8_export import export_int8
    from vidseg.inference.methods import build_propagator
    from vidseg.io.masks import read_mask
    from vidseg.models import quantize

    monkeypatch.setattr(quantize, "MIN_WEIGHTS", 1)  # the tiny network's convolutions are all small
    clip, first = write_clip(tmp_path, num_frames=6)

    def masks(folder: str) -> np.ndarray:
        return np.stack([read_mask(path) for path in sorted((tmp_path / folder).glob("*.png"))])

    def int8() -> OVSNetPropagator:
        return OVSNetPropagator(trained, max_side=96, dtype="int8")

    segment_video(clip, [first], tmp_path / "float", method=OVSNetPropagator(trained, max_side=96), progress=False)
    segment_video(clip, [first], tmp_path / "int8", method=int8(), progress=False)
    assert (masks("int8") == masks("float")).mean() > 0.95
    with pytest.raises(KeyboardInterrupt):
        segment_video(clip, [first], tmp_path / "out", progress=False, method=interrupt_at(int8(), 3))
    segment_video(clip, [first], tmp_path / "out", method=int8(), progress=False, resume=True)
    assert_same_masks(tmp_path / "out", tmp_path / "int8")

    raw = save_checkpoint(tmp_path / "ovsnet.pt", {"method": "ovsnet", "model_config": trained.cfg.to_dict(),
                                                   "model": trained.state_dict(), "meta": {"max_side": 96}})
    frames, labels = squares
    exported = export_int8(raw, tmp_path / "ovsnet-int8.pt", [(list(frames[:3]), labels[0])], "3 squares frames")
    propagator = build_propagator(checkpoint=exported)
    assert propagator.precision == ("int8", "auto: an int8 export") and quantize.is_int8(propagator.model)
    segment_video(clip, [first], tmp_path / "export", method=propagator, progress=False)
    assert (masks("export") == masks("float")).mean() > 0.9
    with pytest.raises(ValueError, match="does not combine with online learning"):
        OVSNetPropagator(trained, dtype="int8", online_steps=2)


@pytest.mark.slow
def test_the_candidates_taken_are_redrawn_by_mga(squares, trained):
    import copy

    frames, masks = squares
    outputs, decisions = {}, {}
    for redraw in (False, True):
        session = InferenceSession(OVSNetPropagator(trained, max_side=96, reid=False, refine_candidates=redraw))
        session.step(frames[0], masks[0])
        outputs[redraw] = session.propagator.propagate(session.state, frames[1]).probabilities
        decisions[redraw], detections = session.state.pending["counts"], session.state.pending["detections"]
    assert decisions[False] == decisions[True] and "iou" in decisions[True]  # the decisions do not change
    taken = [k for k, path in enumerate(decisions[True]) if path == "iou"]
    raw = outputs[False][taken]
    assert raw.max() > 0.5
    redrawn = copy.deepcopy(trained).eval().refine_masks(detections, torch.from_numpy(raw)).numpy()
    assert np.allclose(outputs[True][taken], redrawn, atol=1e-5)
    assert not np.allclose(outputs[True][taken], raw, atol=1e-2)
