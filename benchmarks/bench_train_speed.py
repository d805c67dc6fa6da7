"""Training steps per minute of ``vidseg train`` configs, side by side on one machine.

Each ``--run NAME=CONFIG [OVERRIDE ...]`` builds the same :class:`~vidseg.training.engine.Trainer` as
``vidseg train CONFIG OVERRIDE ...`` (no validation, a throw-away output folder) and times ``--steps`` full training
steps after ``--warmup`` ones: the next batch from the data stream (its loader workers as the config says), the
forward, the backward and the optimizer step. The runs take turns, ``--rounds`` times, in one process with
``--threads`` torch threads, so a busy moment of the machine is spread over all of them; the figure is the median
over rounds. Nothing else should run meanwhile.

    VIDSEG_SHARED=../shared python benchmarks/bench_train_speed.py \\
        --run "s2s++=cpu/s2s++_lite0" --run "s2s++ fast=cpu/s2s++_fast" --steps 10 --rounds 2
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from vidseg.config.schema import load_config
from vidseg.machine import format_machine_info
from vidseg.training.engine import Trainer


def build(config: str, overrides: list[str], out_dir: Path) -> Trainer:
    cfg = load_config(config, [*overrides, f"train.out_dir={out_dir}", "data.val=null", "train.progress=false"])
    return Trainer(cfg)


def time_steps(trainer: Trainer, first: int, count: int) -> float:
    """Seconds per step over ``count`` steps from step ``first`` (data included)."""
    start = time.perf_counter()
    for step in range(first, first + count):
        trainer.train_step(step, trainer.stream.next(step))
    return (time.perf_counter() - start) / count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, metavar="NAME=CONFIG [OVERRIDE ...]",
                        help="a config (path or shipped name) with its overrides, as vidseg train takes them")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per run and round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(format_machine_info(), file=sys.stderr)
    runs: list[tuple[str, Trainer]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, spec in enumerate(args.run):
            name, _, rest = spec.partition("=")
            config, *overrides = shlex.split(rest)
            trainer = build(config, overrides, Path(tmp) / f"run{k}")
            trained = sum(p.numel() for p in trainer.params)
            print(f"{name}: {config} {' '.join(overrides)} ({trained / 1e6:.2f} M trained parameters)", file=sys.stderr)
            time_steps(trainer, 0, args.warmup)
            runs.append((name, trainer))
        seconds: dict[str, list[float]] = {name: [] for name, _ in runs}
        for r in range(args.rounds):
            for name, trainer in runs:
                seconds[name].append(time_steps(trainer, args.warmup + r * args.steps, args.steps))
        data = runs[0][1].config.data
        print(f"\n{args.steps} steps x {args.rounds} rounds, {args.threads} threads, batch {data.batch_size}, "
              f"clip {data.clip_length}, {data.size[0]}x{data.size[1]}; median over rounds\n")
        print("| run | s/step | steps/min | vs first |\n|---|---|---|---|")
        base = statistics.median(seconds[runs[0][0]])
        for name, _ in runs:
            s = statistics.median(seconds[name])
            print(f"| {name} | {s:.3f} | {60 / s:.1f} | {base / s:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
