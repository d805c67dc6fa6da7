"""The weights shipped in the package, the choice of the default method, export, and bad checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import moving_squares, tiny_network

from vidseg import weights
from vidseg.cli.main import main
from vidseg.errors import VidsegError
from vidseg.inference.hybrid import HybridMatchPropagator
from vidseg.inference.methods import (
    build_propagator,
    choose_default_method,
    runnable_methods,
)
from vidseg.inference.session import InferenceSession
from vidseg.models.checkpoint import (
    export_weights,
    load_model,
    read_checkpoint,
    save_checkpoint,
)


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    """An empty stand-in for the package's weights folder."""
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setattr(weights, "WEIGHTS_DIR", folder)
    caches = (weights.bundled_content, weights._card, weights.heldout_table)
    for cached in caches:
        cached.cache_clear()
    yield folder
    for cached in caches:
        cached.cache_clear()


def write_bundle(folder, jf: float, flow_jf: float, name="s2s++"):
    model = tiny_network(name)
    save_checkpoint(folder / "raw.pt", {"model_config": model.cfg.to_dict(), "model": model.state_dict()})
    card = {"max_side": 96, "heldout": {"J&F": jf, "flow J&F": flow_jf, "videos": "test videos"}}
    return export_weights(folder / "raw.pt", folder / "s2s++_cpu.pt", meta=card)


def read_shipped(file_name: str):
    """A weights file shipped in the package: at most 20 MB, float16 tensors. Returns its path and content."""
    path = weights.WEIGHTS_DIR / file_name
    assert path.is_file() and path.stat().st_size <= 20 * 1024 * 1024
    content = read_checkpoint(path)
    assert {t.dtype for t in content["model"].values() if t.is_floating_point()} == {torch.float16}
    return path, content


def test_the_bundled_model_is_small_documented_and_runs():
    path, content = read_shipped("s2s++_cpu.pt")
    assert content["model_config"]["method"] == "s2s++"
    card = weights.bundled_card("s2s++")
    assert card == json.loads(path.with_suffix(".json").read_text())
    assert "CC BY-NC 4.0" in card["licence"] and card["command"].startswith("VIDSEG_SHARED=")
    for key in ("heldout", "heldout_synthetic"):
        assert 0 < card[key]["J&F"] < 1 and 0 < card[key]["flow J&F"] < 1
    assert "s2s++" in runnable_methods()
    propagator = build_propagator("s2s++")
    assert propagator.name == "s2s++" and propagator.max_side == card["max_side"]
    frames, masks = moving_squares(num_frames=4)
    session = InferenceSession(propagator)
    outputs = [session.step(frame, masks[0] if t == 0 else None) for t, frame in enumerate(frames)]
    assert outputs[-1].shape == masks[0].shape and set(np.unique(outputs[-1])) <= {0, 1, 2}


def assert_follows_two_squares(propagator) -> None:
    """Two moving squares given on the first frame keep more than 80 % of their area on the last one."""
    frames, masks = moving_squares(num_frames=4, size=(128, 224), side=44, step=4)
    session = InferenceSession(propagator)
    outputs = [session.step(frame, masks[0] if t == 0 else None) for t, frame in enumerate(frames)]
    for object_id in (1, 2):
        overlap = (outputs[-1] == object_id) & (masks[-1] == object_id)
        assert overlap.sum() > 0.8 * (masks[-1] == object_id).sum()


def test_the_bundled_match_refiner_is_small_documented_beats_match_and_runs():
    path, content = read_shipped("match_refine_cpu.pt")
    assert content["model_config"]["method"] == "match_refine"
    config = content["model_config"]  # trained keys, long-term memory and the previous frame's masks
    assert config["key_width"] > 0 and config["long_term"] == 4 and config["previous"]
    card = weights.bundled_card("match_refine")
    assert card == json.loads(path.with_suffix(".json").read_text())
    for key in ("heldout", "heldout_synthetic"):  # the bar: a learned model above match and flow on both
        assert card[key]["J&F"] > max(card[key]["match J&F"], card[key]["flow J&F"])
    assert choose_default_method().name == "match_refine"
    propagator = build_propagator("match_refine")  # at the 640 px it was trained for
    assert_follows_two_squares(propagator)


def test_the_bundled_hs2s_is_the_hybrid_on_match_beats_match_and_flow_held_out_and_runs():
    path, content = read_shipped("hs2s_cpu.pt")
    config = content["model_config"]
    assert (config["method"], config["merge"], config["freeze_encoder"]) == ("hs2s", "readout", True)
    card = weights.bundled_card("hs2s")
    assert card == json.loads(path.with_suffix(".json").read_text())
    assert "CC BY-NC 4.0" in card["licence"] and "hs2s_readout_448.yaml" in card["command"]
    heldout = card["heldout"]  # the paper's hybrid claim on the held-out DAVIS videos: above matching and flow alone
    assert heldout["J&F"] > max(heldout["match J&F"], heldout["flow J&F"])
    assert choose_default_method().name == "match_refine"  # still below the default, which stays chosen
    propagator = build_propagator("hs2s", dtype="float32")  # at the 640 px it was trained for
    assert isinstance(propagator, HybridMatchPropagator)
    assert_follows_two_squares(propagator)


def test_the_bundled_zero_shot_rvos_is_small_documented_and_discovers_objects(tmp_path, square_clip, capsys):
    _, content = read_shipped("rvos_cpu.pt")
    assert content["model_config"]["mode"] == "zero-shot"
    card = weights.bundled_card("rvos")
    assert card["mode"] == "zero-shot" and "CC BY-NC 4.0" in card["licence"]
    for key in ("heldout", "heldout_composite"):
        assert 0 < card[key]["J&F"] < 1 and 0 < card[key]["first-frame J&F"] < 1
    assert "rvos" in runnable_methods(zero_shot=True)
    assert choose_default_method(zero_shot=True).name == "rvos"
    assert choose_default_method().name != "rvos"  # its held-out score is not a one-shot score
    frame_dir, masks, _ = square_clip
    assert main(["segment", str(frame_dir), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "method: rvos -- discovers objects without a mask" in captured.err and "with 'rvos'" in captured.out
    assert len(list((tmp_path / "o").glob("*.png"))) == len(masks)


def test_the_default_is_the_best_held_out_score(weights_dir):
    assert runnable_methods() == ["flow", "match"]  # no weights installed: the weightless methods
    assert choose_default_method().name == "flow"
    write_bundle(weights_dir, jf=0.6, flow_jf=0.4)
    choice = choose_default_method()
    assert choice.name == "s2s++" and "best held-out J&F 0.600 (vs flow 0.400) on test videos" in choice.reason
    weights._card.cache_clear()
    write_bundle(weights_dir, jf=0.2, flow_jf=0.4)
    choice = choose_default_method()
    assert choice.name == "flow" and "best held-out J&F 0.400 (vs s2s++ 0.200)" in choice.reason
    (weights_dir / "heldout.json").write_text(json.dumps(
        {"videos": "test videos", "methods": {"flow": {"J&F": 0.45}, "match": {"J&F": 0.5}, "nope": {"J&F": 0.9}}}))
    weights.heldout_table.cache_clear()
    choice = choose_default_method()
    assert choice.name == "match" and choice.reason == (
        "best held-out J&F 0.500 (vs flow 0.450, s2s++ 0.200) on test videos")


def test_segment_says_which_method_it_chose(weights_dir, square_clip, tmp_path, capsys):
    frame_dir, _, first = square_clip
    write_bundle(weights_dir, jf=0.6, flow_jf=0.4)
    assert main(["segment", str(frame_dir), "--mask", str(first), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "method: s2s++ -- best held-out J&F 0.600 (vs flow 0.400) on test videos" in captured.err
    assert "with 's2s++'" in captured.out


def test_missing_or_corrupt_bundled_weights_are_one_clear_line(weights_dir, square_clip, tmp_path, capsys):
    frame_dir, _, first = square_clip
    args = ["segment", str(frame_dir), "--mask", str(first), "--out", str(tmp_path / "o"), "--quiet"]
    assert main([*args, "--method", "s2s++"]) == 2
    err = capsys.readouterr().err
    assert "needs trained weights" in err and "--checkpoint" in err and len(err.strip().splitlines()) == 1
    (weights_dir / "s2s++_cpu.pt").write_bytes(b"\x00" * 100)
    with pytest.raises(VidsegError, match="bundled s2s\\+\\+ weights are unusable.*reinstall vidseg"):
        build_propagator("s2s++")
    assert main([*args, "--method", "s2s++"]) == 2
    err = capsys.readouterr().err
    assert "s2s++_cpu.pt: cannot read checkpoint" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert main(args) == 2  # the default choice reads the same broken file
    assert "reinstall vidseg" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_demo_falls_back_to_flow_without_bundled_weights(weights_dir, capsys):
    from vidseg.demo import demo_method

    assert demo_method() == "flow"
    assert "no bundled network weights" in capsys.readouterr().err


def test_export_halves_the_file_and_keeps_predictions(tmp_path):
    model = tiny_network("hs2s")
    raw = save_checkpoint(tmp_path / "raw.pt", {"model_config": model.cfg.to_dict(), "model": model.state_dict(),
                                                "optimizer": {"state": {}}, "meta": {"step": 7}})
    assert main(["export", str(raw), str(tmp_path / "small.pt")]) == 0
    small = read_checkpoint(tmp_path / "small.pt")
    assert "optimizer" not in small and small["meta"]["step"] == 7
    assert json.loads((tmp_path / "small.json").read_text()) == small["meta"]
    assert (tmp_path / "small.pt").stat().st_size < 0.6 * raw.stat().st_size
    frame, mask = torch.rand(1, 3, 64, 96), (torch.rand(1, 1, 64, 96) > 0.5).float()
    logits = []
    with torch.no_grad():
        for network in (model, load_model(tmp_path / "small.pt")):
            logits.append(network.step(frame, mask, network.init_state(frame, mask))[0].logits)
    assert (logits[0] - logits[1]).abs().max() < 1e-2 * logits[0].abs().max()  # float16 rounding only
    (tmp_path / "card.json").write_text("[1, 2]")
    assert main(["export", str(raw), str(tmp_path / "x.pt"), "--card", str(tmp_path / "card.json")]) == 2


def test_compressed_export_is_read_transparently_and_a_cut_one_is_one_error(tmp_path):
    model = tiny_network("s2s++")
    raw = save_checkpoint(tmp_path / "raw.pt", {"model_config": model.cfg.to_dict(), "model": model.state_dict()})
    assert main(["export", str(raw), str(tmp_path / "plain.pt")]) == 0
    assert main(["export", str(raw), str(tmp_path / "packed.pt"), "--compress"]) == 0
    packed = (tmp_path / "packed.pt").read_bytes()
    assert packed[:2] == b"\x1f\x8b" and len(packed) < (tmp_path / "plain.pt").stat().st_size
    plain, unpacked = read_checkpoint(tmp_path / "plain.pt"), read_checkpoint(tmp_path / "packed.pt")
    assert all(torch.equal(plain["model"][k], unpacked["model"][k]) for k in plain["model"])
    assert main(["export", str(raw), str(tmp_path / "again.pt"), "--compress"]) == 0
    assert (tmp_path / "again.pt").read_bytes() == packed  # deterministic: no time stamp
    (tmp_path / "cut.pt").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(VidsegError, match="the file is truncated"):
        read_checkpoint(tmp_path / "cut.pt")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"format": "vidseg-checkpoint/2"}, "format 'vidseg-checkpoint/2' is not the one this vidseg"),
        ({"model_config": {"method": "no-such-method"}}, "unknown method 'no-such-method'"),
    ],
)
def test_checkpoints_of_another_version_or_method(tmp_path, change, message):
    model = tiny_network("s2s")
    path = tmp_path / "m.pt"
    torch.save({"format": "vidseg-checkpoint/1", "model_config": model.cfg.to_dict(), "model": model.state_dict(),
                **change}, path)
    with pytest.raises(VidsegError, match=message):
        read_checkpoint(path)


def test_a_checkpoint_for_another_method_on_the_command_line(tmp_path, square_clip, capsys):
    frame_dir, _, first = square_clip
    model = tiny_network("s2s")
    path = save_checkpoint(tmp_path / "s2s.pt", {"model_config": model.cfg.to_dict(), "model": model.state_dict()})
    assert main(["segment", str(frame_dir), "--mask", str(first), "--out", str(tmp_path / "o"), "--method", "hs2s",
                 "--checkpoint", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "s2s.pt: checkpoint holds a s2s network, not hs2s (use --method s2s)" in err and len(err.splitlines()) == 1

