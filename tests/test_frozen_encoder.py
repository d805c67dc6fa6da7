"""Fast CPU training (issue 27): frozen ImageNet encoders run without autograd and stay unchanged, decoders that stop
at 1/4, and HS2S on match's memory (``merge: readout``): untrained it is match, it trains, runs in a session,
resumes exactly and loads from a checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import clip_batch, moving_squares, overfit_recurrent

from vidseg.errors import VidsegError
from vidseg.inference.hybrid import HybridMatchPropagator
from vidseg.inference.match import MatchPropagator
from vidseg.inference.recurrent import build_recurrent_propagator
from vidseg.inference.session import InferenceSession
from vidseg.models.losses import border_classes, border_loss, segmentation_loss
from vidseg.models.optimize import FrozenForward
from vidseg.models.rvos import RVOSConfig
from vidseg.models.rvos import build_model as build_rvos
from vidseg.models.s2s import S2SConfig, build_model
from vidseg.training.rvos import unroll_rvos

FAST = {"backbone": "efficientnet_lite0", "backbone_weights": "imagenet", "freeze_encoder": True, "bottleneck": 16,
        "hidden": 16, "decoder_widths": (16, 16, 8), "decoder_kernel": 3, "skip_memory_kernel": 3, "gc_inner": 8}
READOUT = {**FAST, "method": "hs2s", "merge": "readout", "match_top_k": 30, "match_temperature": 0.1,
           "match_memory": 3}


def fast_network(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(S2SConfig(**{**FAST, **overrides}))


def one_object_clip(length: int = 4):
    frames, masks = moving_squares(num_frames=length, size=(64, 96), side=20, step=3)
    return frames, [np.where(m == 1, 1, 0).astype(np.uint8) for m in masks]


def backbone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    backbone = model.encoder.backbone if hasattr(model, "encoder") else model.backbone
    return {k: v.clone() for k, v in backbone.state_dict().items()}


@pytest.mark.parametrize("method", ["s2s++", "s2s", "hs2s"])
def test_frozen_encoder_trains_the_rest_and_leaves_the_backbone(method):
    model = fast_network(method=method, **({"skips": False, "skip_memory": False} if method == "s2s" else {}))
    frozen = backbone_state(model)
    assert not any(p.requires_grad for p in model.encoder.backbone.parameters())
    assert not hasattr(model, "initializer") and not hasattr(model, "ref_encoder")  # both reuse the frozen features
    model.train()
    losses = overfit_recurrent(model, clip_batch(*one_object_clip(), slots=1), steps=12, lr=3e-3)
    assert losses[-1] < 0.8 * losses[0]
    after = backbone_state(model)
    assert all(torch.equal(frozen[k], after[k]) for k in frozen)  # weights and BatchNorm statistics


def test_short_decoder_gives_full_size_logits_and_coarse_border_logits():
    model = fast_network(method="hs2s").eval()
    frame, mask = torch.rand(1, 3, 64, 96), torch.zeros(2, 1, 64, 96)
    mask[0, :, 10:30, 10:40] = 1
    out, state = model.step(frame, mask, model.init_state(frame, mask))
    assert out.logits.shape == (2, 1, 64, 96) and out.border_logits.shape == (2, 42, 16, 24)
    assert state["prev_top"].shape == (2, 320, 2, 3)  # the previous frame's frozen features, not the frame


def test_border_loss_at_the_decoders_stride_compares_with_the_nearest_border_classes():
    target = torch.zeros(2, 64, 96)
    target[:, 16:48, 20:70] = 1
    logits, border = torch.randn(2, 64, 96), torch.randn(2, 42, 16, 24)
    _, parts = segmentation_loss(logits, target, border, lam=0.8)
    classes = F.interpolate(border_classes(target, num_classes=42)[:, None].float(), size=(16, 24), mode="nearest")
    assert torch.allclose(parts["border"], border_loss(border, classes[:, 0].long()))


def test_frozen_rvos_trains_without_touching_its_backbone():
    torch.manual_seed(0)
    model = build_rvos(RVOSConfig(mode="one-shot", slots=2, backbone="efficientnet_lite0", backbone_weights="imagenet",
                                  freeze_encoder=True, projections=(16, 16, 8, 8), hidden=(16, 8, 8, 4)))
    frozen = backbone_state(model)
    assert model.encoder_parameters() == []
    frames, masks = moving_squares(num_frames=3, size=(64, 96), side=20, step=3)
    batch = clip_batch(frames, masks, slots=2)
    optimizer = torch.optim.Adam(model.decoder_parameters(), 1e-2)
    model.train()
    for step in range(3):
        loss, _ = unroll_rvos(model, batch, 0.0, torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = backbone_state(model)
    assert all(torch.equal(frozen[k], after[k]) for k in frozen)


def test_training_runs_the_frozen_backbone_as_a_folded_copy_that_follows_its_weights():
    model = fast_network().train()
    backbone, x = model.encoder.backbone, torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        expected = backbone(x)  # eval mode (its BatchNorms are frozen)
    got = model.encoder.levels(x)
    assert all(torch.allclose(g, e, atol=1e-4, rtol=1e-4) for g, e in zip(got, expected))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.encoder.frozen_forward._copy.modules())
    assert set(model.state_dict()) == set(fast_network().state_dict())  # the copy is not part of the network
    with torch.no_grad():  # new weights (a checkpoint loaded after the first step): the copy is rebuilt
        backbone.conv_stem.weight.mul_(0.5)
        expected = backbone(x)
    assert all(torch.allclose(g, e, atol=1e-4, rtol=1e-4) for g, e in zip(model.encoder.levels(x), expected))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # under autocast the copy runs in its precision
        assert model.encoder.levels(x)[-1].dtype == torch.bfloat16
    assert FrozenForward()(torch.nn.Conv2d(3, 4, 1), x).shape == (2, 4, 64, 96)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"merge": "readout"}, "merge: readout is an HS2S variant on frozen features"),
    ({"decoder_widths": (16, 8)}, "decoder_widths needs 3 to 5 stages"),
])
def test_bad_fast_configs_are_refused(overrides, message):
    values = {**FAST, **overrides}
    if overrides.get("merge"):
        values.update(freeze_encoder=False, backbone_weights=None)
    with pytest.raises(ValueError, match=message):
        S2SConfig(**values)


def run_video(propagator, frames, first_mask, start=0, stop=None, session=None):
    session = session or InferenceSession(propagator)
    stop = len(frames) if stop is None else stop
    return session, [session.step(frames[t], first_mask if t == 0 else None) for t in range(start, stop)]


def test_untrained_readout_hs2s_is_match():
    frames, masks = moving_squares(num_frames=6, size=(128, 224), side=44, step=4)
    first = np.where(masks[0] == 1, 1, 0).astype(np.uint8)
    model = fast_network(**READOUT).eval()
    hybrid = HybridMatchPropagator(model, max_side=224)
    match = MatchPropagator(max_side=224, memory=3, top_k=30, temperature=0.1, radius=4)
    _, ours = run_video(hybrid, frames, first)
    _, theirs = run_video(match, frames, first)
    assert all((a == b).all() for a, b in zip(ours, theirs))
    assert (ours[-1] == 1).sum() > 0.6 * (masks[-1] == 1).sum()


def test_readout_hs2s_trains_resumes_and_loads_from_a_checkpoint(tmp_path):
    from vidseg.models.checkpoint import read_checkpoint, save_checkpoint

    model = fast_network(**READOUT)
    model.train()
    losses = overfit_recurrent(model, clip_batch(*one_object_clip(), slots=1), steps=10, lr=3e-3)
    assert losses[-1] < losses[0]
    model.eval()
    path = tmp_path / "hs2s.pt"
    save_checkpoint(path, {"method": "hs2s", "model_config": model.cfg.to_dict(), "model": model.state_dict()})
    propagator = build_recurrent_propagator(read_checkpoint(path), path, max_side=224)
    assert isinstance(propagator, HybridMatchPropagator)
    frames, masks = moving_squares(num_frames=8, size=(128, 224), side=44, step=4)
    _, whole = run_video(propagator, frames, masks[0])
    part, _ = run_video(propagator, frames, masks[0], stop=5)
    resumed = InferenceSession(propagator)
    resumed.load_state_dict(part.state_dict())
    _, rest = run_video(propagator, frames, masks[0], start=5, session=resumed)
    assert all((a == b).all() for a, b in zip(rest, whole[5:]))
    with pytest.raises(VidsegError, match="no online learning.*leave out --online-steps"):
        build_recurrent_propagator(read_checkpoint(path), path, online_steps=5)


@pytest.mark.parametrize("name", ["cpu/s2s++_fast", "cpu/hs2s_readout"])
def test_fast_configs_load(name, monkeypatch):
    from vidseg.config import load_config

    monkeypatch.setenv("VIDSEG_SHARED", "/shared")
    config = load_config(name)
    assert config.model.freeze_encoder and len(config.model.decoder_widths) == 3
    assert config.data.size == (128, 224) and config.data.batch_size == 4 and config.data.clip_length == 4


def test_frozen_readout_training_resumes_exactly(tmp_path):
    from vidseg.config import parse_config
    from vidseg.data.synth import SynthConfig, write_davis
    from vidseg.models.checkpoint import read_checkpoint
    from vidseg.training.engine import train

    write_davis(tmp_path / "data", 2, SynthConfig(seed=3, num_frames=6, height=64, width=96), val_fraction=0.0)

    def config(out: str, steps: int) -> dict:
        model = {k: list(v) if isinstance(v, tuple) else v for k, v in READOUT.items()}
        return parse_config({
            "model": model,
            "data": {"size": [64, 96], "batch_size": 2, "workers": 0, "clip_length": 3, "samples_per_epoch": 4,
                     "train": [{"type": "synth", "root": str(tmp_path / "data")}]},
            "train": {"steps": steps, "lr": 1e-3, "lr_schedule": "constant", "checkpoint_every": 2, "log_every": 2,
                      "out_dir": str(tmp_path / out), "progress": False,
                      "sampling": {"teacher_steps": 1, "ramp_steps": 2, "max_probability": 0.5}},
        })

    train(config("whole", 4))
    train(config("part", 2))
    train(config("part", 4), resume=True)
    whole, part = (read_checkpoint(tmp_path / run / "last.pt")["model"] for run in ("whole", "part"))
    assert all(torch.equal(whole[k], part[k]) for k in whole)
