"""``match_refine``: the untrained refiner reproduces match exactly (model and session), training lowers its loss on
a clip, and a checkpoint builds the method with its trained matching settings and resumes exactly."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import clip_batch, moving_squares

from vidseg.cli.main import main
from vidseg.data.synth import SynthConfig, write_davis
from vidseg.inference.match import (
    REFINE_MARGIN,
    REFINE_STEP,
    MatchPropagator,
    RefinedMatchPropagator,
    _region,
    refine_in_regions,
)
from vidseg.inference.methods import build_propagator
from vidseg.inference.session import InferenceSession
from vidseg.models.checkpoint import read_checkpoint, save_checkpoint
from vidseg.models.match_refine import (
    LABEL_EPS,
    MatchRefineConfig,
    build_model,
    object_labels,
)
from vidseg.training.match_refine import unroll_match_refine


@pytest.fixture(scope="module")
def clip():
    return moving_squares(num_frames=6, size=(128, 224), side=44, step=4)


@pytest.fixture(scope="module")
def untrained():
    torch.manual_seed(0)
    return build_model({"memory": 3, "max_side": 224, "widths": (16, 16, 8)}).eval()


def test_refining_object_regions_equals_the_whole_frame_where_the_labels_are():
    torch.manual_seed(1)
    model = build_model({"memory": 3, "max_side": 224, "widths": (16, 16, 8)}).eval()
    torch.nn.init.normal_(model.head.weight, std=0.5)  # a refiner that changes the labels
    frames = torch.rand(1, 3, 192, 320)
    labels = torch.zeros(2, 24, 40)
    labels[0, 5:11, 6:15] = 0.9
    labels[1, 14:20, 26:35] = 0.7
    with torch.no_grad():
        _, levels = model.encode(frames)
        whole = model.refine(levels, torch.zeros(2, dtype=torch.long), object_labels(labels), (192, 320))[:, 0]
        regions = refine_in_regions(model, levels, labels, (192, 320))
    for k in range(2):
        near = F.interpolate(F.max_pool2d(labels[k][None, None], 3, 1, 1), size=(192, 320))[0, 0] > 0.01
        torch.testing.assert_close(regions[k][near], whole[k][near], atol=2e-3, rtol=1e-3)  # kernels by shape
        top, bottom, left, right = (8 * side for side in _region(labels[k] > 0.01, REFINE_MARGIN))
        far = torch.ones(192, 320, dtype=torch.bool)
        far[top:bottom, left:right] = False  # outside the refined box: match's labels (0 here) as logits
        assert far.any() and torch.equal(regions[k][far], torch.logit(torch.tensor(LABEL_EPS)).expand(int(far.sum())))


def test_refined_regions_cover_the_labels_with_few_sizes():
    sizes = set()
    for top, bottom, left, right in [(0, 1, 0, 1), (3, 9, 7, 30), (40, 44, 70, 80), (0, 44, 0, 80), (13, 14, 41, 42)]:
        inside = torch.zeros(44, 80, dtype=torch.bool)
        inside[top:bottom, left:right] = True
        y0, y1, x0, x1 = _region(inside, REFINE_MARGIN)
        assert y0 <= max(0, top - REFINE_MARGIN) and y1 >= min(44, bottom + REFINE_MARGIN)
        assert x0 <= max(0, left - REFINE_MARGIN) and x1 >= min(80, right + REFINE_MARGIN)
        assert y0 % 2 == x0 % 2 == 0 and y1 <= 44 and x1 <= 80
        sizes.add((y1 - y0, x1 - x0))
    assert all(h % REFINE_STEP == 0 or h == 44 for h, _ in sizes) and all(w % REFINE_STEP == 0 for _, w in sizes)
    assert _region(torch.zeros(44, 80, dtype=torch.bool), REFINE_MARGIN) is None


def test_untrained_refiner_returns_the_labels(untrained):
    frames = torch.rand(1, 3, 64, 96)
    _, levels = untrained.encode(frames)
    labels = torch.rand(2, 8, 12)
    with torch.no_grad():
        logits = untrained.refine(levels, torch.zeros(2, dtype=torch.long), object_labels(labels), (64, 96))
    expected = F.interpolate(labels[:, None], size=(64, 96), mode="bilinear", align_corners=False)
    assert torch.allclose(torch.sigmoid(logits), expected.clamp(LABEL_EPS, 1 - LABEL_EPS), atol=1e-5)
    assert torch.allclose(object_labels(labels)[0, 1], labels[1])


def test_untrained_refiner_segments_like_match(clip, untrained):
    frames, masks = clip
    first = np.where(masks[0] == 1, 1, 0).astype(np.uint8)
    refined = InferenceSession(RefinedMatchPropagator(untrained))
    plain = InferenceSession(MatchPropagator(max_side=224, memory=3))
    for t, frame in enumerate(frames):
        assert (refined.step(frame, first if t == 0 else None) == plain.step(frame, first if t == 0 else None)).all()


def test_with_match_feedback_a_trained_refiner_leaves_the_memory_as_match_keeps_it(clip):
    frames, masks = clip
    torch.manual_seed(1)
    model = build_model({"memory": 3, "max_side": 224, "widths": (16, 16, 8), "feedback": "match"}).eval()
    torch.nn.init.normal_(model.head.weight, std=0.5)  # a refiner that changes the masks
    refined = InferenceSession(RefinedMatchPropagator(model))
    plain = InferenceSession(MatchPropagator(max_side=224, memory=3))
    changed = False
    for t, frame in enumerate(frames):
        given = masks[0] if t == 0 else None
        changed |= not np.array_equal(refined.step(frame, given), plain.step(frame, given))
    assert changed
    assert all(torch.equal(a[1], b[1]) for a, b in zip(refined.state.memory.recent, plain.state.memory.recent))
    losses = [unroll_match_refine(model.train(), clip_batch(*clip))[1]["total"] for _ in range(2)]
    assert losses[0] == pytest.approx(losses[1])  # nothing random in the unroll


def test_training_lowers_the_loss(clip):
    torch.manual_seed(0)
    model = build_model({"memory": 3, "widths": (16, 16, 8)})
    batch = clip_batch(*clip)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(20):
        loss, parts = unroll_match_refine(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(parts["total"])
    assert set(parts) == {"bce", "soft_iou", "total"}
    assert np.mean(losses[-3:]) < 0.7 * losses[0]
    assert all(not p.requires_grad for p in model.features.parameters())


def test_checkpoint_builds_the_method_and_resumes_exactly(tmp_path, clip, untrained):
    frames, masks = clip
    path = save_checkpoint(tmp_path / "refine.pt", {"method": "match_refine", "model_config": untrained.cfg.to_dict(),
                                                    "model": untrained.state_dict()})
    propagator = build_propagator("match_refine", path)
    assert isinstance(propagator, RefinedMatchPropagator)
    assert (propagator.max_side, propagator.memory) == (224, 3)

    def run(session, start, stop):
        return [session.step(frames[t], masks[0] if t == 0 else None) for t in range(start, stop)]

    expected = run(InferenceSession(propagator), 0, 6)
    part = InferenceSession(propagator)
    run(part, 0, 3)
    resumed = InferenceSession(propagator)
    resumed.load_state_dict(part.state_dict())
    assert all((a == b).all() for a, b in zip(run(resumed, 3, 6), expected[3:]))


@pytest.mark.parametrize("values, message", [({"widths": (8, 8)}, "widths"), ({"temperature": 0}, "temperature"),
                                             ({"method": "match"}, "method"),
                                             ({"feedback": "both"}, "feedback"), ({"long_term": -1}, "long_term"),
                                             ({"key_width": -8}, "key_width"),
                                             ({"background_stride": 0}, "background_stride")])
def test_bad_config_is_rejected(values, message):
    with pytest.raises(ValueError, match=message):
        MatchRefineConfig(**values)


def test_vidseg_train_runs_match_refine_validates_and_resumes(tmp_path):
    write_davis(tmp_path / "train", 2, SynthConfig(seed=1, num_frames=6, height=64, width=96, num_objects=2))
    write_davis(tmp_path / "val", 1, SynthConfig(seed=2, num_frames=4, height=64, width=96, num_objects=2))
    values = {
        "model": {"method": "match_refine", "widths": [8, 8, 8], "memory": 2},
        "data": {"size": [64, 96], "batch_size": 2, "workers": 0, "clip_length": 3, "samples_per_epoch": 4,
                 "train": [{"type": "synth", "root": str(tmp_path / "train")}],
                 "val": {"type": "synth", "root": str(tmp_path / "val"), "max_side": 96}},
        "train": {"steps": 2, "lr": 1e-3, "log_every": 1, "val_every": 2, "checkpoint_every": 2,
                  "loss": {"iou_weight": 0.5}, "out_dir": str(tmp_path / "run"), "progress": False},
    }
    config = tmp_path / "refine.yaml"
    config.write_text(yaml.safe_dump(values))
    assert main(["train", str(config)]) == 0
    assert main(["train", str(config), "train.steps=3", "--resume"]) == 0
    with (tmp_path / "run" / "log.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows if r["loss"]] == [1, 2, 3]
    assert 0 <= float(next(r["val_JF"] for r in rows if r["val_JF"])) <= 1
    last = read_checkpoint(tmp_path / "run" / "last.pt")
    assert last["method"] == "match_refine" and last["progress"]["step"] == 3


def test_online_steps_adapt_a_copy_deterministically_and_resume_exactly(tmp_path, clip, untrained):
    from vidseg.io.state_file import load_state, save_state

    frames, masks = clip
    path = save_checkpoint(tmp_path / "refine.pt", {"method": "match_refine", "model_config": untrained.cfg.to_dict(),
                                                    "model": untrained.state_dict()})
    shared = {k: v.clone() for k, v in untrained.state_dict().items()}
    propagator = build_propagator("match_refine", path, online_steps=3, online_lr=1e-2)
    plain = build_propagator("match_refine", path)
    before = {k: v.clone() for k, v in propagator.model.state_dict().items()}

    def run(session, start=0, stop=6):
        return [session.step(frames[t], masks[0] if t == 0 else None) for t in range(start, stop)]

    session = InferenceSession(propagator)
    adapted = run(session)
    assert session.state.model is not None and session.state.model is not propagator.model
    head = session.state.model.head.weight
    assert head.abs().sum() > 0 and not head.requires_grad  # the zero head learned, then was frozen again
    assert all(torch.equal(v, before[k]) for k, v in propagator.model.state_dict().items())  # the shared one is not
    assert all(torch.equal(v, shared[k]) for k, v in untrained.state_dict().items())
    assert any((a != b).any() for a, b in zip(adapted, run(InferenceSession(plain))))  # adapting changed the masks
    assert all((a == b).all() for a, b in zip(adapted, run(InferenceSession(propagator))))  # deterministic
    part = InferenceSession(propagator)
    run(part, 0, 3)
    save_state(tmp_path / "state.npz", part.state_dict())
    resumed = InferenceSession(build_propagator("match_refine", path, online_steps=3, online_lr=1e-2))
    resumed.load_state_dict(load_state(tmp_path / "state.npz"))
    assert all((a == b).all() for a, b in zip(run(resumed, 3, 6), adapted[3:]))
    with pytest.raises(ValueError, match="same --online-steps"):
        InferenceSession(plain).load_state_dict(part.state_dict())


def test_untrained_key_head_matches_as_the_frozen_features_and_learns_through_the_read(clip, untrained):
    torch.manual_seed(0)
    model = build_model({"memory": 3, "max_side": 224, "widths": (16, 16, 8), "key_width": 8})
    model.load_state_dict(untrained.state_dict(), strict=False)  # the same refiner, plus a new key head
    frames, masks = clip
    x = clip_batch(*clip)["frames"][0]
    with torch.no_grad():
        torch.testing.assert_close(model.encode(x)[0], untrained.features.encode(x)[0])
    keyed = InferenceSession(RefinedMatchPropagator(model.eval()))
    plain = InferenceSession(RefinedMatchPropagator(untrained))
    for t, frame in enumerate(frames):
        given = masks[0] if t == 0 else None
        assert np.array_equal(keyed.step(frame, given), plain.step(frame, given))

    loss, _ = unroll_match_refine(model.train(), clip_batch(*clip))
    loss.backward()
    assert model.key_head.out.weight.grad.abs().sum() > 0  # the refiner's loss reaches the keys through the read
    assert all(p.grad is None for p in model.features.parameters())


def test_train_init_from_starts_from_a_checkpoint_on_lookalike_and_crossing_clips(tmp_path, capsys):
    from vidseg.config.schema import load_config
    from vidseg.data.davis import DavisIndex
    from vidseg.io.masks import read_mask
    from vidseg.training.engine import Trainer

    write_davis(tmp_path / "real", 3, SynthConfig(seed=3, num_frames=16, height=64, width=112, num_objects=1,
                                                  num_distractors=0, occlusion=False), val_fraction=0.1,
                years=("2016",))
    torch.manual_seed(2)
    start = build_model({"widths": (8, 8, 8), "memory": 2})
    torch.nn.init.normal_(start.head.weight, std=0.5)  # a refiner unlike a new one
    path = save_checkpoint(tmp_path / "start.pt", {"method": "match_refine", "model_config": start.cfg.to_dict(),
                                                   "model": start.state_dict()})
    two_object = {"source": str(tmp_path / "real"), "year": "2016"}
    values = {
        "model": {"method": "match_refine", "widths": [8, 8, 8], "memory": 2, "key_width": 4},
        "data": {"size": [64, 96], "batch_size": 1, "workers": 0, "clip_length": 3, "samples_per_epoch": 2,
                 "train": [{"type": "lookalike", "root": str(tmp_path / "look"), **two_object},
                           {"type": "crossing", "root": str(tmp_path / "cross"), **two_object}]},
        "train": {"steps": 1, "log_every": 1, "out_dir": str(tmp_path / "run"), "progress": False,
                  "init_from": str(path)},
    }
    config = tmp_path / "keys.yaml"
    config.write_text(yaml.safe_dump(values))
    trainer = Trainer(load_config(config))
    weights = trainer.model.state_dict()
    assert all(torch.equal(weights[name], value) for name, value in start.state_dict().items())
    assert not trainer.model.key_head.out.weight.any()  # the new part keeps its own (zero) start
    assert "initialised anew: key_head" in capsys.readouterr().out
    for folder in ("look", "cross"):  # generated from the real videos: two objects in each clip's frames
        video = next(iter(DavisIndex(tmp_path / folder, "2017", "val", "480p")))
        assert set(np.unique(read_mask(video.mask_paths[video.frame_names[0]]))) == {0, 1, 2}
    assert main(["train", str(config), "--out", str(tmp_path / "run2")]) == 0

    other = build_model({"widths": (8, 8, 16), "memory": 2})
    save_checkpoint(tmp_path / "other.pt", {"method": "match_refine", "model_config": other.cfg.to_dict(),
                                            "model": other.state_dict()})
    capsys.readouterr()
    assert main(["train", str(config), f"train.init_from={tmp_path / 'other.pt'}", "--out", str(tmp_path / "r3")]) == 2
    err = capsys.readouterr().err
    assert "do not fit this model" in err and "other.pt" in err and "Traceback" not in err


def test_long_term_memory_keeps_confident_frames_and_resumes_exactly(clip, untrained):
    frames, masks = clip
    propagator = RefinedMatchPropagator(untrained, long_term=2, long_term_every=1)

    def run(session, start, stop):
        return [session.step(frames[t], masks[0] if t == 0 else None) for t in range(start, stop)]

    whole = InferenceSession(propagator)
    expected = run(whole, 0, 6)
    assert len(whole.state.memory.long_term) == 2  # frames 1 and 2 left the 3 recent ones, sure of their squares
    part = InferenceSession(propagator)
    run(part, 0, 5)
    resumed = InferenceSession(propagator)
    resumed.load_state_dict(part.state_dict())
    assert np.array_equal(run(resumed, 5, 6)[0], expected[5])
    assert [f.shape for f, _ in resumed.state.memory.long_term] == [f.shape for f, _ in whole.state.memory.long_term]
    with pytest.raises(ValueError, match="long_term"):
        RefinedMatchPropagator(untrained, long_term=-1)


def test_background_stride_comes_from_the_network_and_resumes_exactly(clip, untrained):
    frames, masks = clip
    assert RefinedMatchPropagator(untrained).background_stride == 1
    torch.manual_seed(0)  # a network exported with it carries it in its config (the bundled card's model_config)
    sparse = build_model({"memory": 3, "max_side": 224, "widths": (16, 16, 8), "long_term": 2,
                          "background_stride": 2}).eval()
    propagator = RefinedMatchPropagator(sparse, long_term_every=1)
    assert propagator.background_stride == 2
    assert RefinedMatchPropagator(sparse, background_stride=1).background_stride == 1
    whole = InferenceSession(propagator)
    expected = [whole.step(frames[t], masks[0] if t == 0 else None) for t in range(6)]
    part = InferenceSession(propagator)
    for t in range(4):
        part.step(frames[t], masks[0] if t == 0 else None)
    resumed = InferenceSession(propagator)
    resumed.load_state_dict(part.state_dict())
    assert resumed.state.memory.background_stride == 2
    assert all((resumed.step(frames[t]) == expected[t]).all() for t in (4, 5))
    with pytest.raises(ValueError, match="background_stride"):
        RefinedMatchPropagator(untrained, background_stride=0)


def test_a_frame_is_confident_when_its_objects_are_sure():
    from vidseg.inference.match import confident

    maps = torch.zeros(2, 20, 30)
    maps[0, 2:12, 3:13] = 0.95
    assert confident(maps)
    maps[1, 8:18, 10:25] = 0.6  # a second object claimed without conviction
    assert not confident(maps)
    assert not confident(torch.zeros(1, 20, 30)) and not confident(torch.zeros(0, 20, 30))


def test_previous_masks_start_as_the_refiner_learn_and_resume_exactly(tmp_path, clip, untrained):
    from vidseg.io.state_file import load_state, save_state

    frames, masks = clip
    torch.manual_seed(1)
    base = build_model({"memory": 3, "max_side": 224, "widths": (16, 16, 8)}).eval()
    torch.nn.init.normal_(base.head.weight, std=0.5)  # a trained refiner, as train.init_from would load
    model = build_model({**base.cfg.to_dict(), "previous": True}).eval()
    missing = model.load_state_dict(base.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["previous4.bias", "previous4.weight", "previous8.bias", "previous8.weight"]

    def run(session, start=0, stop=6):
        return [session.step(frames[t], masks[0] if t == 0 else None) for t in range(start, stop)]

    with_previous = InferenceSession(RefinedMatchPropagator(model))
    assert all(np.array_equal(a, b) for a, b in zip(run(with_previous), run(InferenceSession(RefinedMatchPropagator(
        base)))))  # zero-started inputs: the same masks
    assert with_previous.state.previous.shape == (2, 2, 128 // 4, 224 // 4)  # two squares, own and others

    loss, _ = unroll_match_refine(model.train(), clip_batch(*clip))
    loss.backward()
    assert model.previous8.weight.grad.abs().sum() > 0 and model.previous4.weight.grad.abs().sum() > 0
    model.eval()
    for conv in (model.previous8, model.previous4):
        torch.nn.init.normal_(conv.weight, std=0.5)  # a refiner that reads the previous masks
    propagator = RefinedMatchPropagator(model)
    expected = run(InferenceSession(propagator))
    part = InferenceSession(propagator)
    run(part, 0, 3)
    save_state(tmp_path / "state.npz", part.state_dict())
    resumed = InferenceSession(propagator)
    resumed.load_state_dict(load_state(tmp_path / "state.npz"))
    assert all(np.array_equal(a, b) for a, b in zip(run(resumed, 3, 6), expected[3:]))
    without = InferenceSession(RefinedMatchPropagator(base))
    run(without, 0, 3)
    with pytest.raises(ValueError, match="no previous masks"):  # a state saved by a refiner without them
        propagator.load_state_dict(without.propagator.state_dict(without.state))
    with pytest.raises(ValueError, match="previous"):
        model.refine([torch.zeros(1, 8, 4, 4)] * 4, torch.zeros(1, dtype=torch.long), torch.zeros(1, 2, 1, 1), (8, 8))
