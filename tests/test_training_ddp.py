"""DistributedDataParallel: 2 processes x batch 2 (gloo, CPU) train like 1 process x batch 4."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from vidseg.config import load_config
from vidseg.data.synth import SynthConfig, write_davis
from vidseg.models.checkpoint import read_checkpoint
from vidseg.training.engine import train

REPO = Path(__file__).resolve().parents[1]


def _losses(run: Path) -> list[float]:
    with (run / "log.csv").open(newline="") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_process_ddp_matches_one_process(tmp_path):
    data = tmp_path / "synth"
    write_davis(data, 3, SynthConfig(seed=4, num_frames=8, height=64, width=96))
    values = {
        "model": {"method": "hs2s", "backbone": "convnet-tiny", "bottleneck": 16, "hidden": 16,
                  "decoder_widths": [32, 16, 16, 8, 8], "decoder_kernel": 3, "skip_memory_kernel": 3,
                  "gc_kernel": 3, "gc_inner": 16, "border_classes": 0, "freeze_bn": True},
        "data": {"size": [64, 96], "batch_size": 4, "workers": 0, "clip_length": 3, "stride": [1, 2],
                 "samples_per_epoch": 8, "train": [{"type": "synth", "root": str(data)}]},
        "train": {"steps": 6, "lr": 1e-3, "grad_clip": 1.0, "log_every": 1, "checkpoint_every": 100,
                  "out_dir": str(tmp_path / "single"), "progress": False},
    }
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(values))
    train(load_config(config))

    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "vidseg.cli.main", "train", str(config), "data.batch_size=2", "--out", str(tmp_path / "ddp")]
    done = subprocess.run(command, check=False, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]

    single, ddp = _losses(tmp_path / "single"), _losses(tmp_path / "ddp")
    assert len(single) == len(ddp) == 6
    for a, b in zip(single, ddp):
        assert abs(a - b) <= 1e-4 * abs(a), (single, ddp)
    expected = read_checkpoint(tmp_path / "single" / "last.pt")["model"]
    got = read_checkpoint(tmp_path / "ddp" / "last.pt")["model"]
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-5, rtol=0, msg=key)
    assert read_checkpoint(tmp_path / "ddp" / "last.pt")["progress"]["world_size"] == 2
