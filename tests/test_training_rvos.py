"""Training RVOS: the loss goes down on a clip, zero-shot slots are matched once per clip on its first frame,
one-shot slot k follows object k, the run goes through `vidseg train` (and DDP with 2 gloo processes)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import clip_batch, moving_squares, overfit_rvos, tiny_rvos

from vidseg.cli.main import main
from vidseg.data.synth import SynthConfig, write_davis
from vidseg.models.checkpoint import read_checkpoint
from vidseg.models.rvos import DecodeOutput, RVOSConfig
from vidseg.training.rvos import _assign, unroll_rvos

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("mode", "recurrence"), [("zero-shot", "st"), ("one-shot", "st"), ("one-shot", "t")])
def test_loss_goes_down_on_a_clip(mode, recurrence):
    frames, masks = moving_squares(num_frames=4)
    model = tiny_rvos(mode, recurrence=recurrence)
    losses = overfit_rvos(model, clip_batch(frames, masks), steps=25, sampling_probability=0.5)
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


def test_zero_shot_slots_are_matched_on_the_first_frame_and_kept():
    size = (8, 8)
    first = torch.zeros(1, 3, *size)
    first[0, 0, :4] = 1  # object 1: top half
    first[0, 1, 4:] = 1  # object 2: bottom half
    probabilities = torch.zeros(1, 4, *size)
    probabilities[0, 2, :4] = 0.9  # slot 2 covers object 1
    probabilities[0, 0, 4:] = 0.8  # slot 0 covers object 2
    valid = torch.tensor([[True, True, False]])
    void = torch.zeros(1, *size, dtype=torch.bool)
    assignment = _assign(probabilities, first, valid, void, one_shot=False)
    assert assignment[0, :2].tolist() == [2, 0]
    assert assignment[0, 2].item() in (1, 3)  # an invalid object gets a leftover slot (and no loss)
    assert _assign(probabilities, first, valid, void, one_shot=True)[0].tolist() == [0, 1, 2]


class _Scripted(torch.nn.Module):
    """A stand-in network whose slots output given masks, frame after frame."""

    def __init__(self, outputs: list[torch.Tensor]):
        super().__init__()
        self.cfg = RVOSConfig(mode="zero-shot", slots=outputs[0].shape[0], backbone="convnet-tiny")
        self.outputs, self.calls = outputs, 0

    def encode(self, frame):
        return [frame]

    def decode(self, features, temporal, previous, slots=None, output_size=None):
        logits = (self.outputs[self.calls] * 40 - 20)[None]
        self.calls += 1
        return DecodeOutput(logits, None, {})


def test_zero_shot_matching_is_made_on_the_first_frame_and_kept_for_the_clip():
    masks = [np.zeros((8, 8), np.uint8) for _ in range(3)]
    masks[0][:4], masks[1][:4], masks[2][:4] = 1, 1, 1
    top = torch.zeros(2, 8, 8)
    top[0, :4] = 1  # frame 0: slot 0 holds the object
    moved = torch.zeros(2, 8, 8)
    moved[1, :4] = 1  # later frames: slot 1 holds it, slot 0 is empty
    frames = [np.zeros((8, 8, 3), np.uint8)] * 3
    _, parts = unroll_rvos(_Scripted([top, moved, moved]), clip_batch(frames, masks, slots=2))
    assert parts["soft_iou"] == pytest.approx(2 / 3, abs=1e-3)  # perfect on frame 0, then slot 0 is scored: 1
    _, parts = unroll_rvos(_Scripted([top, top, top]), clip_batch(frames, masks, slots=2))
    assert parts["soft_iou"] == pytest.approx(0, abs=1e-3)


def _config(tmp_path: Path, mode: str, steps: int = 12) -> Path:
    write_davis(tmp_path / "train", 2, SynthConfig(seed=1, num_frames=6, height=64, width=96, num_objects=3))
    write_davis(tmp_path / "val", 1, SynthConfig(seed=2, num_frames=5, height=64, width=96, num_objects=2))
    values = {
        "model": {"method": "rvos", "mode": mode, "backbone": "convnet-tiny", "slots": 4,
                  "projections": [16, 16, 8, 8], "hidden": [16, 8, 8, 4], "objectness": True},
        "data": {"size": [64, 96], "batch_size": 4, "workers": 0, "clip_length": 3, "samples_per_epoch": 8,
                 "train": [{"type": "synth", "root": str(tmp_path / "train")}],
                 "val": {"type": "synth", "root": str(tmp_path / "val")}},
        "train": {"steps": steps, "lr": 1e-2, "log_every": 1, "checkpoint_every": 100, "out_dir": str(tmp_path / "run"),
                  "progress": False, "sampling": {"teacher_steps": 4, "max_probability": 1.0}},
    }
    path = tmp_path / f"{mode}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["zero-shot", "one-shot"])
def test_vidseg_train_runs_rvos(tmp_path, mode):
    assert main(["train", str(_config(tmp_path, mode))]) == 0
    with (tmp_path / "run" / "log.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[4:7] == ["soft_iou", "objectness", "matched"]
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert 0 <= float(rows[-1]["val_JF"]) <= 1  # zero-shot: the unsupervised protocol
    last = read_checkpoint(tmp_path / "run" / "last.pt")
    assert last["method"] == "rvos" and last["model_config"]["mode"] == mode
    assert [group["lr"] for group in last["optimizer"]["param_groups"]] == pytest.approx([1e-5, 1e-2])


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_process_ddp(tmp_path):
    config = _config(tmp_path, "zero-shot", steps=4)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "vidseg.cli.main", "train", str(config), "data.batch_size=2", "--out", str(tmp_path / "ddp")]
    done = subprocess.run(command, check=False, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    last = read_checkpoint(tmp_path / "ddp" / "last.pt")
    assert last["progress"]["world_size"] == 2 and last["progress"]["step"] == 4
    with (tmp_path / "ddp" / "log.csv").open(newline="") as f:
        assert all(np.isfinite(float(row["loss"])) for row in csv.DictReader(f))
