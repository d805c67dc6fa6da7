"""Training engine: config files, the `vidseg train` CLI, checkpoints, exact resume after SIGKILL, overfitting."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from vidseg.cli.main import main
from vidseg.config import apply_overrides, clip_phases, load_config, parse_config
from vidseg.data.synth import SynthConfig, write_davis
from vidseg.errors import VidsegError
from vidseg.inference.recurrent import RecurrentPropagator
from vidseg.models.checkpoint import load_model, read_checkpoint
from vidseg.training.data import load_val_sequences
from vidseg.training.engine import Trainer, train
from vidseg.training.validation import validate

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = {
    "method": "hs2s", "backbone": "convnet-tiny", "bottleneck": 32, "hidden": 32, "decoder_widths": [32, 16, 16, 8, 8],
    "decoder_kernel": 3, "skip_memory_kernel": 3, "gc_kernel": 3, "gc_inner": 16, "border_classes": 0, "freeze_bn": True,
}


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory) -> Path:
    """Three 8-frame training videos and two validation videos, 64x96."""
    root = tmp_path_factory.mktemp("synth")
    write_davis(root / "train", 3, SynthConfig(seed=1, num_frames=8, height=64, width=96))
    write_davis(root / "val", 2, SynthConfig(seed=2, num_frames=6, height=64, width=96))
    return root


def tiny_config(data: Path, out: Path, **train) -> dict:
    return {
        "model": dict(TINY_MODEL),
        "data": {
            "size": [64, 96], "batch_size": 2, "workers": 0, "clip_length": [[0, 3], [6, 4]], "stride": [1, 2],
            "samples_per_epoch": 6,
            "train": [{"type": "synth", "root": str(data / "train")}],
            "val": {"type": "synth", "root": str(data / "val"), "max_frames": 5},
        },
        "train": {"steps": 8, "lr": 1e-3, "log_every": 2, "val_every": 4, "checkpoint_every": 4,
                  "out_dir": str(out), "progress": False,
                  "sampling": {"teacher_steps": 2, "ramp_steps": 4, "max_probability": 0.5}, **train},
    }


def write_yaml(path: Path, values: dict) -> Path:
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def log_rows(run: Path) -> list[dict]:
    with (run / "log.csv").open(newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------- config


def test_config_errors_name_the_key_and_file(tmp_path, synth_data):
    values = tiny_config(synth_data, tmp_path / "run")
    values["train"]["lrr"] = 0.1
    path = write_yaml(tmp_path / "bad.yaml", values)
    with pytest.raises(VidsegError, match=r"bad\.yaml.*train\.lrr"):
        load_config(path)
    good = write_yaml(tmp_path / "good.yaml", tiny_config(synth_data, tmp_path / "run"))
    with pytest.raises(VidsegError, match=r"good\.yaml.*data\.train\.0\.year"):
        load_config(good, ["data.train.0.year=2016"])  # a DAVIS option on a synth source
    with pytest.raises(VidsegError, match=r"train\.lr must be a number"):
        load_config(good, ["train.lr=fast"])
    with pytest.raises(VidsegError, match=r"model: .*decoder_widths"):
        load_config(good, ["model.decoder_widths=[8,8]"])
    with pytest.raises(VidsegError, match="VIDSEG_NOT_SET"):
        load_config(good, ["train.out_dir=${VIDSEG_NOT_SET}/run"])
    assert main(["train", str(path)]) == 2


def test_config_overrides_paths_and_phases(tmp_path, synth_data, monkeypatch):
    monkeypatch.setenv("VIDSEG_TEST_ROOT", str(synth_data))
    monkeypatch.chdir(tmp_path)
    values = tiny_config(synth_data, Path("relative-run"))
    apply_overrides(values, ["data.train.0.root=${VIDSEG_TEST_ROOT}/train", "train.loss.lam=0.5",
                             "data.labelled_only_steps=3", "data.size=[32, 64]"])
    config = parse_config(values, "x.yaml")
    assert config.data.train[0].root == str(synth_data / "train")
    assert config.train.out_dir == str(tmp_path / "relative-run")
    assert config.train.loss.lam == 0.5 and config.data.size == (32, 64)
    assert clip_phases(config.data) == [(0, (3, 3), True), (3, (3, 3), False), (6, (4, 4), False)]
    assert parse_config(config.to_dict()).to_dict() == config.to_dict()


@pytest.mark.parametrize("name", ["s2s", "s2s++", "hs2s", "hs2s_0", "hs2s_t-1", "hs2s_sim", "rvos", "cpu/s2s",
                                  "cpu/s2s++", "cpu/hs2s", "cpu/s2s_synth", "cpu/s2s++_synth", "cpu/hs2s_synth",
                                  "cpu/rvos_zero_shot", "cpu/rvos_one_shot", "ovsnet", "cpu/ovsnet"])
def test_shipped_configs_are_valid(name, monkeypatch):
    monkeypatch.setenv("VIDSEG_DATA", "/data")
    monkeypatch.setenv("VIDSEG_SHARED", "/shared")
    config = load_config(REPO / "configs" / f"{name}.yaml")
    assert config.model.method == name.split("/")[-1].split("_")[0]
    if name.startswith("cpu/"):
        if name != "cpu/ovsnet":  # a detector needs larger frames: 224x384, batch 2 clips of 3 frames
            assert config.data.size == (128, 224) and config.data.batch_size == 4
        assert config.model.backbone == ("efficientnet_lite0" if "rvos" in name or "ovsnet" in name else "convnet-small")
        if not name.endswith("_synth"):
            train, val = config.data.train[0].sequences, config.data.val.sequences
            assert len(train) == 21 and len(val) == 6 and not set(train) & set(val)


@pytest.mark.parametrize("path", sorted((REPO / "configs").rglob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_config_parses_and_keeps_the_held_out_videos_out_of_training(path, monkeypatch):
    monkeypatch.setenv("VIDSEG_DATA", "/data")
    monkeypatch.setenv("VIDSEG_SHARED", "/shared")
    config = load_config(path)
    assert parse_config(config.to_dict()).to_dict() == config.to_dict()
    held_out = set(config.data.val.sequences or []) if config.data.val is not None else set()
    for source in config.data.train:
        assert not held_out & set(source.sequences or []), source.type


# ---------------------------------------------------------------------------------------------- CLI run


def test_train_cli_writes_run_and_refuses_overwrite(tmp_path, synth_data, capsys):
    run = tmp_path / "run"
    path = write_yaml(tmp_path / "tiny.yaml", tiny_config(synth_data, tmp_path / "unused"))
    assert main(["train", str(path), "train.steps=8", "--out", str(run)]) == 0
    for name in ("last.pt", "best.pt", "log.csv", "config.yaml"):
        assert (run / name).is_file(), name
    assert (run / "tb").is_dir()
    rows = log_rows(run)
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8]
    assert rows[1]["val_JF"] and rows[3]["val_JF"] and not rows[0]["val_JF"]
    last = read_checkpoint(run / "last.pt")
    assert last["progress"]["step"] == 8 and last["train_config"]["train"]["steps"] == 8
    assert {"optimizer", "scheduler", "scaler", "rng"} <= set(last)
    assert load_model(run / "best.pt").cfg.method == "hs2s"
    assert load_config(run / "config.yaml").train.steps == 8
    capsys.readouterr()
    assert main(["train", str(path), "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--resume" in err and str(run) in err
    with pytest.raises(VidsegError, match="already exists"):
        train(load_config(path, [f"train.out_dir={run}"]))
    with pytest.raises(VidsegError, match="nothing to resume"):
        train(load_config(path, [f"train.out_dir={tmp_path / 'new'}"]), resume=True)


def test_loss_goes_down_on_one_repeated_clip(tmp_path):
    data = tmp_path / "one"
    write_davis(data, 1, SynthConfig(seed=5, num_frames=3, height=64, width=96, num_objects=1, num_distractors=0,
                                     occlusion=False), val_fraction=0.0)
    values = tiny_config(tmp_path, tmp_path / "run", steps=30, log_every=1, lr=3e-3, checkpoint_every=100)
    values["data"].update(clip_length=3, stride=1, batch_size=1, samples_per_epoch=1, augment=False,
                          train=[{"type": "synth", "root": str(data)}])
    del values["data"]["val"]
    values["train"]["sampling"] = {}
    train(parse_config(values))
    losses = [float(r["loss"]) for r in log_rows(tmp_path / "run")]
    assert len(losses) == 30
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5])


# ---------------------------------------------------------------------------------------------- resume


def _run_cli(log: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with log.open("a") as stderr:  # a file, not a pipe: nothing can block on a full pipe
        return subprocess.Popen([sys.executable, "-m", "vidseg.cli.main", "train", *args], env=env, cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=stderr)


@pytest.mark.slow
def test_sigkill_resume_is_exact(tmp_path, synth_data):
    steps = 16
    reference = tiny_config(synth_data, tmp_path / "reference", steps=steps)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the runs below: sums differ between thread counts; earlier tests may change it
    try:
        train(parse_config(reference))  # uninterrupted, in process, no workers
    finally:
        torch.set_num_threads(threads)
    expected = read_checkpoint(tmp_path / "reference" / "last.pt")

    run = tmp_path / "killed"
    config = write_yaml(tmp_path / "killed.yaml", tiny_config(synth_data, run, steps=steps))
    log = tmp_path / "stderr.txt"
    process = _run_cli(log, str(config), "data.workers=2", "--threads", "1")
    killed_at = None
    deadline = time.monotonic() + 300
    while killed_at is None and time.monotonic() < deadline and process.poll() is None:
        try:
            step = read_checkpoint(run / "last.pt")["progress"]["step"]
        except VidsegError:
            step = 0
        if 4 <= step < steps:
            os.kill(process.pid, signal.SIGKILL)
            killed_at = step
        time.sleep(0.02)
    process.wait(timeout=60)
    assert killed_at is not None, f"run ended before it could be killed: {log.read_text()[-2000:]}"
    assert process.returncode == -signal.SIGKILL

    resumed = _run_cli(log, str(config), "data.workers=2", "--threads", "1", "--resume")
    assert resumed.wait(timeout=600) == 0, log.read_text()[-3000:]
    final = read_checkpoint(run / "last.pt")
    assert final["progress"]["step"] == steps
    for key, value in expected["model"].items():
        assert torch.equal(value, final["model"][key]), key
    for a, b in zip(expected["optimizer"]["state"].values(), final["optimizer"]["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    ours, theirs = log_rows(run), log_rows(tmp_path / "reference")
    assert [r["step"] for r in ours] == [r["step"] for r in theirs]  # no duplicate rows after the resume
    assert [r["loss"] for r in ours] == [r["loss"] for r in theirs]
    assert [r["val_JF"] for r in ours] == [r["val_JF"] for r in theirs]


# ---------------------------------------------------------------------------------------------- learning


def test_tiny_hs2s_overfits_one_clip(tmp_path):
    data = tmp_path / "clip"
    write_davis(data, 1, SynthConfig(seed=3, num_frames=6, height=64, width=96, num_objects=1, num_distractors=0,
                                     occlusion=False), val_fraction=0.0)
    values = tiny_config(tmp_path, tmp_path / "run", steps=100, lr=5e-3, log_every=50, checkpoint_every=1000)
    values["model"]["freeze_bn"] = False
    values["data"].update(clip_length=6, stride=1, batch_size=1, samples_per_epoch=1, augment=False,
                          train=[{"type": "synth", "root": str(data)}])
    del values["data"]["val"]
    values["train"]["sampling"] = {"teacher_steps": 50, "ramp_steps": 50, "max_probability": 1.0}
    values["train"]["loss"] = {"iou_weight": 0.5}
    config = parse_config(values)
    train(config)
    model = load_model(tmp_path / "run" / "last.pt")
    sequences = load_val_sequences(parse_config({**values, "data": {**values["data"], "val": {
        "type": "synth", "root": str(data)}}}).data.val)
    metrics = validate(RecurrentPropagator(model, max_side=96, optimize=False), sequences)
    assert metrics["J"] > 0.9, metrics


def test_shipped_configs_load_by_name_from_anywhere(tmp_path, monkeypatch):
    from vidseg.config import config_path, shipped_configs

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VIDSEG_SHARED", "/shared")
    assert {"hs2s", "cpu/ovsnet", "cpu/rvos_zero_shot"} <= set(shipped_configs())
    assert load_config("cpu/rvos_zero_shot").model.method == "rvos"
    assert config_path("hs2s.yaml").name == "hs2s.yaml"
    with pytest.raises(VidsegError, match="shipped config: cpu/bundled"):
        load_config("no-such-config")


def test_cpu_bf16_on_a_cpu_that_emulates_it_warns(tmp_path, synth_data, monkeypatch):
    import warnings

    import vidseg.machine

    path = write_yaml(tmp_path / "tiny.yaml", tiny_config(synth_data, tmp_path / "run", cpu_bf16=True))
    monkeypatch.setattr(vidseg.machine, "cpu_flags", lambda: {"avx2", "fma"})
    with pytest.warns(UserWarning, match="no native bfloat16.*train.cpu_bf16=false"):
        assert Trainer(load_config(path, [f"train.out_dir={tmp_path / 'a'}"])).amp_dtype == torch.bfloat16
    monkeypatch.setattr(vidseg.machine, "cpu_flags", lambda: {"avx512_bf16"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trainer(load_config(path, [f"train.out_dir={tmp_path / 'b'}"]))
