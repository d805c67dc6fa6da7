"""The training engine reproduces recorded runs bit for bit: a fixed-seed tiny S2S++ and HS2S run gives the
losses, parameters and optimizer state recorded in ``tests/data/training_reference.json`` (written by the
engine before it became method-agnostic). Set ``VIDSEG_RECORD_REFERENCE=1`` to record it anew."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from vidseg.config import parse_config
from vidseg.data.synth import SynthConfig, write_davis
from vidseg.machine import native_precisions
from vidseg.models.checkpoint import read_checkpoint
from vidseg.training.engine import train

REFERENCE = Path(__file__).parent / "data" / "training_reference.json"
TINY = {"backbone": "convnet-tiny", "bottleneck": 32, "hidden": 32, "decoder_widths": [32, 16, 16, 8, 8],
        "decoder_kernel": 3, "skip_memory_kernel": 3, "gc_kernel": 3, "gc_inner": 16}
MODELS = {
    "s2s++": {"method": "s2s++", **TINY, "border_classes": 6},
    "hs2s": {"method": "hs2s", **TINY, "border_classes": 0},
}


def _machine() -> dict:
    """What the float results depend on: oneDNN picks other kernels (other rounding) by the CPU's instruction sets,
    and two AVX-512 CPUs with and without native bfloat16 gave different bits."""
    return {"torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability(), "native": native_precisions()}


def _digest(tensors: dict) -> dict[str, str]:
    out = {}
    for name, value in sorted(tensors.items()):
        if isinstance(value, torch.Tensor):
            out[name] = hashlib.sha256(value.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]
    return out


def _run(method: str, data: Path, out: Path) -> dict:
    config = parse_config({
        "model": dict(MODELS[method]),
        "data": {"size": [64, 96], "batch_size": 2, "workers": 0, "clip_length": 3, "stride": [1, 2],
                 "samples_per_epoch": 6, "train": [{"type": "synth", "root": str(data)}]},
        "train": {"steps": 6, "lr": 1e-3, "log_every": 1, "checkpoint_every": 6, "out_dir": str(out),
                  "progress": False, "seed": 3, "loss": {"iou_weight": 0.2},
                  "sampling": {"teacher_steps": 2, "ramp_steps": 2, "max_probability": 0.5}},
    })
    train(config)
    with (out / "log.csv").open(newline="") as f:
        rows = [{k: v for k, v in row.items() if v not in ("", None) and k != "it_s"} for row in csv.DictReader(f)]
    last = read_checkpoint(out / "last.pt")
    optimizer = {f"{i}.{k}": v for i, s in last["optimizer"]["state"].items() for k, v in s.items()}
    return {"log": rows, "model": _digest(last["model"]), "optimizer": _digest(optimizer)}


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(MODELS))
def test_fixed_seed_run_matches_the_recorded_one(method, tmp_path):
    torch.set_num_threads(2)
    write_davis(tmp_path / "data", 3, SynthConfig(seed=1, num_frames=8, height=64, width=96))
    result = _run(method, tmp_path / "data", tmp_path / "run")
    recorded = json.loads(REFERENCE.read_text()) if REFERENCE.is_file() else {}
    if os.environ.get("VIDSEG_RECORD_REFERENCE"):
        recorded[method] = {"machine": _machine(), **result}
        REFERENCE.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
        return
    expected = recorded[method]
    if expected["machine"] != _machine():
        pytest.skip(f"recorded on {expected['machine']}, this machine is {_machine()}: float results may differ")
    assert result["log"] == expected["log"]
    assert result["model"] == expected["model"]
    assert result["optimizer"] == expected["optimizer"]
