"""The training engine is method-agnostic: a toy method unlike the S2S family (all objects per clip, two
parameter groups, its own loss parts, unsupervised validation) trains through ``vidseg train``, and its
checkpoint runs in ``segment`` through the registry."""

from __future__ import annotations

import csv

import pytest
import yaml

from vidseg.cli.main import main
from vidseg.data.synth import SynthConfig, write_davis
from vidseg.inference.methods import build_propagator
from vidseg.models.checkpoint import read_checkpoint


@pytest.fixture
def toy(plugin):
    return plugin("toy_foreground")


def test_a_non_s2s_method_trains_validates_and_segments(tmp_path, toy, capsys):
    write_davis(tmp_path / "train", 2, SynthConfig(seed=1, num_frames=6, height=64, width=96, num_objects=3))
    write_davis(tmp_path / "val", 1, SynthConfig(seed=2, num_frames=5, height=64, width=96, num_objects=2))
    config = {
        "model": {"method": "toy-foreground", "width": 8},
        "data": {"size": [64, 96], "batch_size": 2, "workers": 0, "clip_length": 2, "samples_per_epoch": 4,
                 "train": [{"type": "synth", "root": str(tmp_path / "train")}],
                 "val": {"type": "synth", "root": str(tmp_path / "val")}},
        "train": {"steps": 30, "lr": 0.05, "log_every": 5, "checkpoint_every": 30, "out_dir": str(tmp_path / "run"),
                  "progress": False},
    }
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(tmp_path / "toy.yaml")]) == 0
    started = capsys.readouterr().err
    assert "train: toy-foreground, 0.0 M parameters (0.0 M trained) on cpu" in started
    assert "precision: float32 (train.amp: " in started and "this machine runs natively: bfloat16 " in started
    assert "data: synth train (weight 1); clips of 64x96, batch 2 per process" in started
    assert "validation: 1 held-out videos (unsupervised), at the end (step 30), at 96 px" in started
    assert f"output: {tmp_path / 'run'}" in started
    assert "final validation on 1 held-out videos" in started
    with (tmp_path / "run" / "log.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["step", "epoch", "lr", "loss", "bce", "area", "sampling_p", "it_s", "val_J", "val_F",
                             "val_JF"]
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert 0 <= float(rows[-1]["val_JF"]) <= 1  # scored with the unsupervised protocol

    last = read_checkpoint(tmp_path / "run" / "last.pt")
    assert last["method"] == "toy-foreground"
    assert [group["lr"] for group in last["optimizer"]["param_groups"]] == pytest.approx([0.005, 0.05])
    propagator = build_propagator(checkpoint=tmp_path / "run" / "last.pt")
    assert isinstance(propagator, toy.NetworkSpots)
    video = next((tmp_path / "val" / "JPEGImages").glob("*/*"))
    assert main(["segment", str(video), "--checkpoint", str(tmp_path / "run" / "last.pt"), "--out",
                 str(tmp_path / "masks"), "--quiet"]) == 0
    assert "with 'toy-foreground'" in capsys.readouterr().out
