"""Training OVSNet: detector targets and identities from clips, the loss (every part) goes down on a clip, and the
run goes through `vidseg train` with SGD, resume and DDP with 2 gloo processes."""

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
from conftest import TINY_OVSNET, clip_batch, moving_squares, tiny_ovsnet

from vidseg.cli.main import main
from vidseg.data.synth import SynthConfig, write_davis
from vidseg.models.checkpoint import read_checkpoint
from vidseg.training.ovsnet import frame_targets, ovsnet_loss

REPO = Path(__file__).resolve().parents[1]


def test_frame_targets_carry_boxes_masks_and_one_identity_per_object():
    frames, masks = moving_squares(num_frames=3)
    batch = clip_batch(frames, masks)
    batch["labelled"][0, 1] = False  # an unlabelled frame is no detector image
    images, targets, voids = frame_targets(batch)
    assert len(images) == len(targets) == len(voids) == 2
    for target, mask in zip(targets, (masks[0], masks[2])):
        assert target["labels"].tolist() == [1, 1] and target["identity"].tolist() == [0, 1]
        for box, object_mask in zip(target["boxes"], target["masks"]):
            ys, xs = np.nonzero(object_mask.numpy())
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert np.array_equal(target["masks"][0].numpy(), mask == 1)


def test_loss_and_each_part_go_down_on_a_clip():
    frames, masks = moving_squares(num_frames=3)
    batch = clip_batch(frames, masks)
    model = tiny_ovsnet()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 2e-3)
    generator = torch.Generator().manual_seed(0)
    history = []
    for _ in range(30):
        loss, parts = ovsnet_loss(model, batch, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(parts)
    first, last = history[:5], history[-5:]
    for key in ("total", "classifier", "mask", "rpn_objectness", "reid", "refine"):
        assert np.mean([p[key] for p in last]) < np.mean([p[key] for p in first]), key


def _config(tmp_path: Path, steps: int = 4, optimizer: str = "sgd") -> Path:
    write_davis(tmp_path / "train", 2, SynthConfig(seed=1, num_frames=6, height=64, width=96, num_objects=3))
    write_davis(tmp_path / "val", 1, SynthConfig(seed=2, num_frames=4, height=64, width=96, num_objects=2))
    model = {key: list(value) if isinstance(value, tuple) else value for key, value in TINY_OVSNET.items()}
    values = {
        "model": {"method": "ovsnet", **model},
        "data": {"size": [64, 96], "batch_size": 2, "workers": 0, "clip_length": 2, "samples_per_epoch": 8,
                 "train": [{"type": "synth", "root": str(tmp_path / "train")}],
                 "val": {"type": "synth", "root": str(tmp_path / "val")}},
        "train": {"steps": steps, "optimizer": optimizer, "lr": 1e-3, "log_every": 1, "checkpoint_every": 2,
                  "out_dir": str(tmp_path / "run"), "progress": False},
    }
    path = tmp_path / "ovsnet.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.mark.slow
def test_vidseg_train_runs_ovsnet_with_sgd_and_resumes(tmp_path):
    config = _config(tmp_path, steps=2)
    assert main(["train", str(config)]) == 0
    assert main(["train", str(config), "train.steps=4", "--resume"]) == 0
    with (tmp_path / "run" / "log.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows if r["loss"]] == [1, 2, 3, 4]
    assert {"classifier", "mask", "reid", "refine"} <= set(rows[0])
    assert 0 <= float(rows[-1]["val_JF"]) <= 1
    last = read_checkpoint(tmp_path / "run" / "last.pt")
    assert last["method"] == "ovsnet" and last["progress"]["step"] == 4
    assert last["optimizer"]["param_groups"][0]["momentum"] == 0.9  # SGD, as the paper


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_process_ddp(tmp_path):
    config = _config(tmp_path, steps=2)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "vidseg.cli.main", "train", str(config), "data.batch_size=1", "--out", str(tmp_path / "ddp")]
    done = subprocess.run(command, check=False, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    last = read_checkpoint(tmp_path / "ddp" / "last.pt")
    assert last["progress"]["world_size"] == 2 and last["progress"]["step"] == 2
    with (tmp_path / "ddp" / "log.csv").open(newline="") as f:
        assert all(np.isfinite(float(row["loss"])) for row in csv.DictReader(f))
