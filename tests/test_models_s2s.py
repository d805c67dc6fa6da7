"""S2S / S2S++ / HS2S networks, clip unrolling, checkpoints and online learning (tiny sizes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import overfit_recurrent, tiny_network

from vidseg.config.schema import SamplingSchedule
from vidseg.errors import VidsegError
from vidseg.inference.online import online_finetune
from vidseg.models.checkpoint import load_model, read_checkpoint, save_checkpoint
from vidseg.models.s2s import S2SConfig, build_model, count_parameters, preset
from vidseg.training.recurrent import unroll_clip

PRESETS = ["s2s", "s2s++", "hs2s", "hs2s_0", "hs2s_t-1", "hs2s_sim", "hs2s_match"]



def square_batch(batch: int = 2, length: int = 4, size: tuple[int, int] = (64, 96)) -> dict:
    height, width = size
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    masks = torch.stack([((yy - 24).abs() < 10) & ((xx - 20 - 6 * t).abs() < 10) for t in range(length)])
    masks = masks[None].expand(batch, -1, -1, -1).long()
    frames = 0.15 + 0.7 * masks[:, :, None].float().expand(-1, -1, 3, -1, -1)
    return {
        "frames": frames,
        "masks": masks,
        "void": torch.zeros(batch, length, height, width, dtype=torch.bool),
        "labelled": torch.ones(batch, length, dtype=torch.bool),
        "frame_valid": torch.ones(batch, length, dtype=torch.bool),
        "object_valid": torch.ones(batch, 1, dtype=torch.bool),
    }


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("size", [(64, 96), (96, 160)])
def test_every_method_runs_at_any_size_divisible_by_32(name, size):
    model = tiny_network(name)
    frame = torch.rand(1, 3, *size)
    mask = (torch.rand(3, 1, *size) > 0.5).float()
    with torch.no_grad():
        state = model.init_state(frame, mask)
        out, state = model.step(frame, mask, state)
        out, state = model.step(frame, mask, state)
    assert out.logits.shape == (3, 1, *size)
    has_border = name != "s2s"
    assert (out.border_logits is not None) == has_border
    if has_border:
        assert out.border_logits.shape == (3, 42, *size)
    assert all(v.shape[0] == 3 for v in state.values())
    assert state["h"].shape[-2:] == (size[0] // 32, size[1] // 32)


def test_sizes_not_divisible_by_32_are_rejected():
    model = tiny_network("hs2s")
    with pytest.raises(ValueError, match="multiple of 32"):
        model.init_state(torch.rand(1, 3, 60, 96), torch.zeros(1, 1, 60, 96))


def test_objects_in_a_batch_match_objects_run_alone():
    model = tiny_network("hs2s")
    frames = torch.rand(3, 1, 3, 64, 96)
    masks = (torch.rand(2, 1, 64, 96) > 0.6).float()
    with torch.no_grad():
        both = model.init_state(frames[0], masks)
        out_both, _ = model.step(frames[1], masks, both)
        for k in range(2):
            alone = model.init_state(frames[0], masks[k : k + 1])
            out_alone, _ = model.step(frames[1], masks[k : k + 1], alone)
            torch.testing.assert_close(out_both.logits[k : k + 1], out_alone.logits, atol=1e-5, rtol=1e-4)


def test_hs2s_encodes_the_first_frame_reference_once_per_video():
    from vidseg.inference.recurrent import RecurrentPropagator
    from vidseg.inference.session import InferenceSession

    model = tiny_network("hs2s_0")
    calls = []
    model.ref_encoder.register_forward_hook(lambda *_: calls.append(1))
    session = InferenceSession(RecurrentPropagator(model, max_side=96, optimize=False))
    first = np.zeros((64, 96), np.uint8)
    first[10:30, 10:30], first[40:60, 50:80] = 1, 2
    for t in range(6):
        session.step(np.full((64, 96, 3), 40 * t, np.uint8), first if t == 0 else None)
    assert len(calls) == 1  # at the first frame, for both objects at once


def test_parameter_counts_of_the_paper_configurations():
    # HS2S with ResNet-50: ~379 M (the official code has 396 M); the 5x5 skip ConvLSTM alone has 210 M.
    with torch.device("meta"):
        hs2s = build_model(preset("hs2s"))
        s2s = build_model(preset("s2s"))
    assert 370e6 < count_parameters(hs2s) < 400e6
    assert 205e6 < count_parameters(hs2s.decoder.skip_lstm) < 215e6
    assert 55e6 < count_parameters(s2s) < 65e6


def test_config_rejects_unknown_and_bad_options():
    with pytest.raises(ValueError, match=r"unknown model option\(s\) \['hiden'\]"):
        S2SConfig.from_dict({"hiden": 3})
    with pytest.raises(ValueError, match="references must be one of"):
        S2SConfig(references="last")
    with pytest.raises(ValueError, match="skip_memory needs skips"):
        S2SConfig(skips=False, skip_memory=True)
    assert S2SConfig.from_dict(S2SConfig().to_dict()) == S2SConfig()


def test_sampling_schedule():
    schedule = SamplingSchedule(teacher_steps=10, ramp_steps=4, max_probability=0.5)
    assert [schedule.probability(s) for s in (0, 9, 10, 11, 13, 100)] == [0.0, 0.0, 0.125, 0.25, 0.5, 0.5]
    assert SamplingSchedule().probability(1000) == 0.0


def test_unroll_uses_only_labelled_frames_and_teacher_forcing():
    model = tiny_network("hs2s")
    batch = square_batch()
    loss, parts = unroll_clip(model, batch)
    assert loss.requires_grad and set(parts) == {"bce", "border", "total"}
    # Teacher forcing is deterministic; sampling with probability 1 feeds predictions and changes the loss.
    again, _ = unroll_clip(model, batch)
    sampled, _ = unroll_clip(model, batch, sampling_probability=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loss, again) and not torch.equal(loss, sampled)
    unlabelled = dict(batch, labelled=torch.tensor([[True, False, False, False]] * 2))
    none, parts = unroll_clip(model, unlabelled)
    assert parts == {} and not none.requires_grad


def test_unroll_rejects_multi_object_clips():
    batch = square_batch()
    batch["masks"] = batch["masks"] * 2
    with pytest.raises(ValueError, match="objects='one'"):
        unroll_clip(tiny_network("s2s"), batch)


def clip_iou(model, batch) -> float:
    """Mean IoU of the model's own rollout (no ground truth after frame 0) on the batch's frames 1..T-1."""
    frames, gt = batch["frames"], (batch["masks"] == 1).float().unsqueeze(2)
    ious = []
    with torch.no_grad():
        state, previous = model.init_state(frames[:, 0], gt[:, 0]), gt[:, 0]
        for t in range(1, frames.shape[1]):
            out, state = model.step(frames[:, t], previous, state)
            previous = torch.sigmoid(out.logits)
            pred, target = out.logits > 0, gt[:, t] > 0
            ious.append(((pred & target).sum() / (pred | target).sum()).item())
    return float(np.mean(ious))


@pytest.mark.parametrize("name", ["s2s", "s2s++", "hs2s", "hs2s_match"])
def test_tiny_model_overfits_a_clip(name):
    model = tiny_network(name).train()
    batch = square_batch()
    losses = overfit_recurrent(model, batch, steps=60)
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
    if name == "hs2s":  # S2S's 2x3-cell state at this size cannot place a small square precisely
        assert clip_iou(model.eval(), batch) > 0.8


def test_checkpoint_round_trip(tmp_path):
    model = tiny_network("hs2s")
    path = save_checkpoint(tmp_path / "m.pt", {"model_config": model.cfg.to_dict(), "model": model.state_dict()})
    loaded = load_model(path)
    frame, mask = torch.rand(1, 3, 64, 96), (torch.rand(1, 1, 64, 96) > 0.5).float()
    with torch.no_grad():
        a, _ = model.step(frame, mask, model.init_state(frame, mask))
        b, _ = loaded.step(frame, mask, loaded.init_state(frame, mask))
    assert torch.equal(a.logits, b.logits)
    assert not list(tmp_path.glob(".*tmp*"))


class _Payload:
    def __reduce__(self):
        return (print, ("code ran",))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not a torch file", "cannot read checkpoint: not a PyTorch checkpoint file"),
        ("pickle", "cannot read checkpoint: it holds Python objects besides tensors and plain values, and vidseg "
                   "never runs pickled code"),
        ({"format": "other"}, "not a vidseg checkpoint"),
        ({"format": "vidseg-checkpoint/1", "model": {}}, "no 'model_config'"),
    ],
)
def test_bad_checkpoints_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "pickle":
        torch.save({"format": "vidseg-checkpoint/1", "model_config": {}, "model": _Payload()}, path)
    else:
        torch.save(content, path)
    with pytest.raises(VidsegError, match=message) as info:
        read_checkpoint(path)
    assert str(path) in str(info.value)
    assert "weights_only" not in str(info.value) and "\x1b" not in str(info.value)  # never torch's advice or escapes


def test_truncated_checkpoint_and_mismatched_weights(tmp_path):
    model = tiny_network("s2s")
    good = save_checkpoint(tmp_path / "m.pt", {"model_config": model.cfg.to_dict(), "model": model.state_dict()})
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(VidsegError, match="cannot read checkpoint: the file is truncated"):
        read_checkpoint(truncated)
    other = dict(model.cfg.to_dict(), hidden=8)
    save_checkpoint(tmp_path / "x.pt", {"model_config": other, "model": model.state_dict()})
    with pytest.raises(VidsegError, match="does not match its model config"):
        load_model(tmp_path / "x.pt")


def test_online_finetune_improves_the_first_frame_and_leaves_the_model_alone():
    model = tiny_network("hs2s")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    frame = np.full((64, 96, 3), 30, np.uint8)
    mask = np.zeros((64, 96), np.uint8)
    frame[16:44, 30:62] = (220, 60, 40)
    mask[16:44, 30:62] = 1

    def iou(net):
        x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
        y = torch.from_numpy(mask)[None, None].float()
        with torch.no_grad():
            out, _ = net.step(x, y, net.init_state(x, y))
        pred, target = out.logits[0, 0].numpy() > 0, mask > 0
        return (pred & target).sum() / (pred | target).sum()

    tuned = online_finetune(model, frame, mask, steps=40, lr=3e-3, batch_size=2)
    assert iou(tuned) > max(0.6, iou(model) + 0.3)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_match_merge_reads_the_reference_mask_at_the_matching_cells():
    model = tiny_network("hs2s_match")
    assert not hasattr(model, "ref_encoder") and not any(p.requires_grad for p in model.match_features.parameters())
    # Features that equal a one-hot position code: each query cell matches only the same key cell.
    key = torch.eye(12).reshape(1, 12, 3, 4)
    mask = torch.zeros(1, 1, 3, 4)
    mask[..., 1, 2] = 1.0
    shifted = torch.roll(key, shifts=1, dims=-1)  # the scene moved one cell to the right
    read = model.merge.read_mask(shifted, key, mask)
    assert read.shape == (1, 1, 3, 4) and read[0, 0, 1, 3] > 0.9 and read.sum() < 1.1 + 0.1 * 11
