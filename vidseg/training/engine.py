"""The training loop of ``vidseg train``: Adam (or SGD) + LR schedule + gradient clipping + AMP, checkpoints that
resume bit-exactly, validation with best-checkpoint tracking, CSV / TensorBoard logs, and DDP under
``torchrun``. It is the same for every method; the method's :class:`~vidseg.training.adapter.TrainingAdapter`
(named in :mod:`vidseg.registry`) supplies the network, the clip loss and the validation method.

Exact resume: the data depend only on (seed, epoch, index) and the step (:class:`ClipStream`), scheduled
sampling draws from a generator seeded by (seed, step, rank), and ``last.pt`` holds the model, optimizer,
scheduler, scaler and RNG states plus the data position. A run killed at any point and resumed from its
last checkpoint therefore ends with the same parameters as an uninterrupted one (bit-exact on CPU).

``last.pt`` keys: ``method``, ``model_config``, ``model``, ``train_config`` (the resolved config as plain values),
``optimizer``, ``scheduler``, ``scaler``, ``rng``, ``progress`` (``step``, ``epoch``, ``position``,
``world_size``, ``best_metric``, ``best_step``) and ``meta``. ``best.pt`` holds ``method``,
``model_config``, ``model`` and ``meta`` (step and validation metrics).
"""

from __future__ import annotations

import csv
import math
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import Tensor, nn

from vidseg.config.schema import GENERATED_FROM_VIDEOS, RunConfig
from vidseg.errors import VidsegError
from vidseg.io.atomic import atomic_write_text
from vidseg.machine import native_line, warn_if_emulated_bf16
from vidseg.models.checkpoint import read_checkpoint, save_checkpoint
from vidseg.registry import get_method
from vidseg.training.adapter import TrainingAdapter
from vidseg.training.data import ClipStream, load_val_sequences
from vidseg.training.validation import validate


def log_fields(adapter: TrainingAdapter) -> tuple[str, ...]:
    """The columns of ``log.csv`` for a method."""
    return ("step", "epoch", "lr", "loss", *adapter.part_keys, "sampling_p", "it_s", "val_J", "val_F", "val_JF")


@dataclass
class TrainResult:
    """What a finished run left: its folder, checkpoints, final step and metrics."""

    out_dir: Path
    step: int
    last_checkpoint: Path
    best_checkpoint: Path | None
    best_metric: float | None
    metrics: dict[str, float] = field(default_factory=dict)


class _ClipLoss(nn.Module):
    """The model with the adapter's clip loss as ``forward`` (what DistributedDataParallel wraps)."""

    def __init__(self, model: nn.Module, adapter: TrainingAdapter):
        super().__init__()
        self.model = model
        self.adapter = adapter

    def forward(self, batch: dict, probability: float, generator: torch.Generator) -> tuple[Tensor, dict]:
        return self.adapter.loss(self.model, batch, probability, generator)


def _seed_of(*values: int) -> int:
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1)[0])


def _rng_state() -> dict[str, Any]:
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "gauss": float(gauss)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """One training run (see the module docstring). ``resume`` continues ``out_dir/last.pt``."""

    def __init__(self, config: RunConfig, resume: bool = False):
        self.config = config
        self.cfg = config.train
        self.out_dir = Path(self.cfg.out_dir)
        self.rank, self.world_size, local_rank = self._init_distributed()
        self.device = self._pick_device(local_rank)
        self.is_main = self.rank == 0
        self._check_out_dir(resume)
        seed = self.cfg.seed + self.rank
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)

        self.adapter: TrainingAdapter = get_method(config.model.method).load("trainer")(config)
        self.log_fields = log_fields(self.adapter)
        self.model = self.adapter.build_model().to(self.device)
        if self.cfg.init_from:
            self._init_from(Path(self.cfg.init_from))
        groups = self.adapter.parameter_groups(self.model)
        self.params = [p for group in groups for p in group["params"]]
        if self.cfg.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(groups, lr=self.cfg.lr, momentum=self.cfg.momentum,
                                             weight_decay=self.cfg.weight_decay)
        else:
            self.optimizer = torch.optim.Adam(groups, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        self.scheduler = self._build_scheduler()
        self.amp_dtype, use_scaler = self._amp_mode()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        generated = ("synth", *GENERATED_FROM_VIDEOS)
        if self.is_main and any(s.type in generated for s in config.data.train):
            from vidseg.training.data import build_index

            for source in config.data.train:  # generate missing folders once, before the other ranks
                if source.type in generated:
                    build_index(source)
        self._barrier()
        self.stream = ClipStream(config.data, self.cfg.seed, self.rank, self.world_size, self.adapter.objects)
        self.val_sequences = load_val_sequences(config.data.val) if self.is_main and config.data.val else []
        self.val_side = (config.data.val.max_side if config.data.val and config.data.val.max_side else max(config.data.size))
        self.step, self.best_metric, self.best_step = 0, -math.inf, None
        if resume:
            self._load(self.out_dir / "last.pt")
        self.unroll: nn.Module = _ClipLoss(self.model, self.adapter)
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.unroll = nn.parallel.DistributedDataParallel(self.unroll, device_ids=ids)

    # ------------------------------------------------------------------ setup
    @staticmethod
    def _init_distributed() -> tuple[int, int, int]:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return 0, 1, 0
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if not dist.is_initialized():
            cuda = torch.cuda.is_available()
            if cuda:
                torch.cuda.set_device(local_rank)
            dist.init_process_group("nccl" if cuda else "gloo")
        return dist.get_rank(), dist.get_world_size(), local_rank

    def _pick_device(self, local_rank: int) -> torch.device:
        wanted = self.cfg.device
        if wanted == "auto":
            wanted = "cuda" if torch.cuda.is_available() else "cpu"
        if wanted.startswith("cuda"):
            if not torch.cuda.is_available():
                raise VidsegError("train.device is cuda but no CUDA device is available", self.config.source,
                                  "set train.device=cpu or auto")
            if wanted == "cuda":
                wanted = f"cuda:{local_rank}"
        return torch.device(wanted)

    def _check_out_dir(self, resume: bool) -> None:
        if resume and not (self.out_dir / "last.pt").is_file():
            raise VidsegError("nothing to resume: no last.pt", self.out_dir, "start a new run without --resume")
        if not resume and self.out_dir.exists() and any(self.out_dir.iterdir()):
            raise VidsegError("run folder already exists", self.out_dir,
                              "pass --resume to continue it, or choose another --out / train.out_dir")
        self._barrier()  # every rank checked before rank 0 writes anything

    def _init_from(self, path: Path) -> None:
        """Start from ``path``'s weights: every parameter and buffer it holds under the same name and shape; the
        model's others (a part the checkpoint's model lacks, e.g. a new head) keep their initialisation."""
        content = read_checkpoint(path)
        if content["method"] != self.config.model.method or content.get("inference") is not None:
            raise VidsegError(f"train.init_from holds a {content['method']!r} network"
                              + (" exported for inference" if content.get("inference") is not None else ""), path,
                              f"pass a float checkpoint of {self.config.model.method!r} written by `vidseg train`")
        own = self.model.state_dict()
        weights = {name: value.float() if value.is_floating_point() else value for name, value in content["model"].items()}
        wrong = [name for name, value in weights.items() if name not in own or own[name].shape != value.shape]
        if wrong:
            raise VidsegError(f"train.init_from's weights do not fit this model ({len(wrong)} differ, e.g. "
                              f"{wrong[0]!r})", path, "start from a checkpoint of the same architecture")
        self.model.load_state_dict(weights, strict=False)
        if self.is_main:
            kept = sorted({name.split(".")[0] for name in own if name not in weights})
            print(f"vidseg: started from {path} ({len(weights)} tensors)"
                  + (f"; initialised anew: {', '.join(kept)}" if kept else ""), flush=True)

    def _build_scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        sched = torch.optim.lr_scheduler
        if self.cfg.lr_schedule == "step":
            return sched.MultiStepLR(self.optimizer, self.cfg.milestones, self.cfg.gamma)
        if self.cfg.lr_schedule == "cosine":
            return sched.CosineAnnealingLR(self.optimizer, T_max=self.cfg.steps)
        return sched.ConstantLR(self.optimizer, factor=1.0, total_iters=0)

    def _amp_mode(self) -> tuple[torch.dtype | None, bool]:
        """(autocast dtype or None, use a GradScaler). ``amp`` applies on CUDA, ``cpu_bf16`` on CPU."""
        if self.device.type != "cuda":
            if self.cfg.cpu_bf16:
                warn_if_emulated_bf16("set train.cpu_bf16=false", stacklevel=4)
            return (torch.bfloat16 if self.cfg.cpu_bf16 else None), False
        mode = self.cfg.amp
        if mode == "auto":
            mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if mode == "off":
            return None, False
        return (torch.bfloat16, False) if mode == "bf16" else (torch.float16, True)

    def _barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    # ------------------------------------------------------------------ checkpoints
    def _load(self, path: Path) -> None:
        ckpt = read_checkpoint(path)
        progress = ckpt.get("progress", {})
        if int(progress.get("world_size", 1)) != self.world_size:
            raise VidsegError(f"the run used {progress.get('world_size')} process(es), not {self.world_size}", path,
                              "resume with the same number of processes")
        try:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise VidsegError(f"checkpoint does not match the config ({str(exc).splitlines()[0][:200]})", path,
                              "resume with the config the run started with") from None
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.world_size == 1 and "rng" in ckpt:
            _set_rng_state(ckpt["rng"])
        self.step = int(progress["step"])
        self.stream.seek(int(progress["epoch"]), int(progress["position"]))
        best = progress.get("best_metric")
        self.best_metric = -math.inf if best is None else float(best)
        self.best_step = progress.get("best_step")

    def _save_last(self) -> Path:
        path = self.out_dir / "last.pt"
        if self.is_main:
            save_checkpoint(path, {
                "method": self.config.model.method,
                "model_config": self.config.model.to_dict(),
                "model": self.model.state_dict(),
                "train_config": self.config.to_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": _rng_state(),
                "progress": {
                    "step": self.step, "epoch": self.stream.epoch, "position": self.stream.position,
                    "world_size": self.world_size, "best_metric": None if self.best_step is None else self.best_metric,
                    "best_step": self.best_step,
                },
                "meta": {"method": self.config.model.method, "steps": self.cfg.steps, "saved": time.time()},
            })
        self._barrier()
        return path

    # ------------------------------------------------------------------ logs
    def _open_logs(self, resume: bool) -> None:
        self.log_path = self.out_dir / "log.csv"
        self.writer = None
        if not self.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out_dir / "config.yaml", yaml.safe_dump(self.config.to_dict(), sort_keys=False))
        if resume and self.log_path.is_file():
            with self.log_path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= self.step]
            self._write_rows(rows, mode="w")
        elif not self.log_path.is_file():
            self._write_rows([], mode="w")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out_dir / "tb"), purge_step=self.step + 1 if resume else None)
        except ImportError as exc:
            warnings.warn(f"TensorBoard logging is off ({exc})", stacklevel=2)

    def _write_rows(self, rows: list[dict], mode: str = "a") -> None:
        with self.log_path.open(mode, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.log_fields, extrasaction="ignore")
            if mode == "w":
                writer.writeheader()
            writer.writerows(rows)

    def _log(self, row: dict[str, Any]) -> None:
        if not self.is_main:
            return
        self._write_rows([row])
        if self.writer is not None:
            for key, value in row.items():
                if key not in ("step", "epoch") and isinstance(value, float) and not math.isnan(value):
                    self.writer.add_scalar(key.replace("val_", "val/").replace("JF", "J&F"), value, row["step"])
            self.writer.flush()

    # ------------------------------------------------------------------ the loop
    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}

    def _reduce(self, values: list[float]) -> list[float]:
        if self.world_size == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def train_step(self, step: int, batch: dict) -> tuple[float, dict[str, float]]:
        """One optimizer step on ``batch``; returns the (all-rank mean) loss and its parts (NaN: no labels)."""
        self.unroll.train()
        batch = self._to_device(batch)
        probability = self.cfg.sampling.probability(step)
        generator = torch.Generator().manual_seed(_seed_of(self.cfg.seed, step, self.rank))
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            loss, parts = self.unroll(batch, probability, generator)
        has_loss = bool(parts)
        part_keys = self.adapter.part_keys
        stats = self._reduce([float(has_loss), *(parts.get(k, 0.0) for k in ("total", *part_keys))])
        if stats[0] == 0:  # no labelled frame on any rank: no update, but the step counts
            self.scheduler.step()
            return math.nan, {}
        if not has_loss:  # another rank has labels: take part in the gradient all-reduce with zeros
            loss = sum(p.sum() for p in self.params) * 0.0
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        mean = [v / stats[0] for v in stats[1:]]
        return mean[0], {k: v for k, v in zip(part_keys, mean[1:]) if k in parts}

    def validate(self) -> dict[str, float]:
        """Validation metrics on rank 0 (empty elsewhere and without a ``val`` source)."""
        metrics: dict[str, float] = {}
        if self.is_main and self.val_sequences:
            propagator = self.adapter.propagator(self.model, self.val_side, self.device)
            metrics = validate(propagator, self.val_sequences, self.adapter.protocol, self.config.data.val.max_frames)
            if not math.isnan(metrics["J&F"]) and metrics["J&F"] > self.best_metric:
                self.best_metric, self.best_step = metrics["J&F"], self.step
                save_checkpoint(self.out_dir / "best.pt", {
                    "method": self.config.model.method, "model_config": self.config.model.to_dict(), "model": self.model.state_dict(),
                    "meta": {"step": self.step, "max_side": self.val_side, **metrics},  # max_side: size it was validated at
                })
        self._barrier()
        return metrics

    def summary(self) -> str:
        """What this run is about to do, in a few lines (printed at the start)."""
        data, cfg = self.config.data, self.cfg
        parameters = sum(p.numel() for p in self.model.parameters())
        trainable = sum(p.numel() for p in self.params)
        sources = ", ".join(f"{s.type} {Path(s.root).name} (weight {s.weight:g})" for s in data.train)
        if self.val_sequences:
            every = f"every {cfg.val_every} steps and " if cfg.val_every else ""
            validation = (f"{len(self.val_sequences)} held-out videos ({self.adapter.protocol}), {every}at the end "
                          f"(step {cfg.steps}), at {self.val_side} px")
        else:
            validation = "none (no data.val)"
        return "\n".join([
            f"train: {self.config.model.method}, {parameters / 1e6:.1f} M parameters ({trainable / 1e6:.1f} M trained) on "
            f"{self.device}, {torch.get_num_threads()} torch threads, {self.world_size} process(es)",
            f"precision: {'float32' if self.amp_dtype is None else 'autocast ' + str(self.amp_dtype).removeprefix('torch.')}"
            f" (train.amp: {self.cfg.amp}; this machine runs natively: {native_line()})",
            f"data: {sources}; clips of {data.size[0]}x{data.size[1]}, batch {data.batch_size} per process",
            f"steps: {cfg.steps} (from step {self.step}); validation: {validation}",
            f"output: {self.out_dir}",
        ])

    def run(self, resume: bool = False) -> TrainResult:
        """Train to ``train.steps`` (from the loaded checkpoint when resuming)."""
        from tqdm import tqdm

        self._open_logs(resume)
        if self.is_main:
            print(self.summary(), file=sys.stderr, flush=True)
        steps = self.cfg.steps
        bar = tqdm(total=steps, initial=self.step, desc="train", dynamic_ncols=True,
                   disable=not (self.is_main and self.cfg.progress))
        window: list[float] = []
        parts_window: dict[str, list[float]] = {}
        clock, counted = time.perf_counter(), 0
        metrics: dict[str, float] = {}
        try:
            while self.step < steps:
                step = self.step
                lr = self.optimizer.param_groups[0]["lr"]
                loss, parts = self.train_step(step, self.stream.next(step))
                self.step, counted = step + 1, counted + 1
                if not math.isnan(loss):
                    window.append(loss)
                    for key, value in parts.items():
                        parts_window.setdefault(key, []).append(value)
                bar.update(1)
                if not math.isnan(loss):
                    bar.set_postfix(loss=f"{loss:.4f}")
                done = self.step == steps
                val_due = bool(self.config.data.val) and (done or (self.cfg.val_every and self.step % self.cfg.val_every == 0))
                if val_due and done and self.is_main:
                    bar.write(f"final validation on {len(self.val_sequences)} held-out videos ...", file=sys.stderr)
                metrics = self.validate() if val_due else {}
                if done or metrics or self.step % self.cfg.log_every == 0:
                    now = time.perf_counter()
                    row = {"step": self.step, "epoch": self.stream.epoch, "lr": lr,
                           "loss": float(np.mean(window)) if window else math.nan,
                           "sampling_p": self.cfg.sampling.probability(step),
                           "it_s": counted / max(now - clock, 1e-9)}
                    row.update({k: float(np.mean(v)) for k, v in parts_window.items()})
                    row.update({f"val_{k.replace('&', '')}": v for k, v in metrics.items()})
                    self._log(row)
                    window, parts_window, clock, counted = [], {}, now, 0
                if done or self.step % self.cfg.checkpoint_every == 0:
                    self._save_last()
        finally:
            bar.close()
            if self.writer is not None:
                self.writer.close()
        best = self.out_dir / "best.pt"
        return TrainResult(self.out_dir, self.step, self.out_dir / "last.pt", best if best.is_file() else None,
                           None if self.best_step is None else self.best_metric, metrics)


def train(config: RunConfig, resume: bool = False) -> TrainResult:
    """Run (or with ``resume`` continue) the training described by ``config``."""
    trainer = Trainer(config, resume=resume)
    try:
        return trainer.run(resume=resume)
    finally:
        if trainer.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


__all__ = ["TrainResult", "Trainer", "log_fields", "train"]
