"""Frames per second at 480p of trained checkpoints and weightless methods, side by side in one process.

A real clip (a DAVIS video of the shared data, up-scaled to 480x854 as 480p DAVIS is) is driven frame by frame
through an :class:`~vidseg.inference.session.InferenceSession`, as ``vidseg segment`` does, minus file I/O. The
methods run in turns (``--repeats`` rounds of every method) so that a change in the machine's load hits them
alike; each method's figure is the median over its rounds of (timed frames / seconds).

    python benchmarks/bench_480p.py --method s2s++=runs/ab-s2s++/best.pt --runnable flow --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from eval_trained import precision

from vidseg.inference.methods import build_propagator
from vidseg.inference.session import InferenceSession
from vidseg.io.masks import read_mask
from vidseg.machine import format_machine_info, set_threads
from vidseg.models.checkpoint import read_checkpoint


def load_clip(root: Path, sequence: str, frames: int, size: tuple[int, int]) -> tuple[list[np.ndarray], np.ndarray]:
    """The first ``frames`` frames of ``sequence`` (any resolution folder) resized to ``size``, and its first mask."""
    images = sorted(next((root / "JPEGImages").iterdir()).joinpath(sequence).glob("*.jpg"))[:frames]
    mask_file = sorted(next((root / "Annotations").iterdir()).joinpath(sequence).glob("*.png"))[0]
    height, width = size
    clip = [cv2.resize(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB), (width, height),
                       interpolation=cv2.INTER_CUBIC) for p in images]
    mask = cv2.resize(read_mask(mask_file), (width, height), interpolation=cv2.INTER_NEAREST)
    return clip, mask


def frames_per_second(propagator, clip: list[np.ndarray], mask: np.ndarray, warmup: int) -> float:
    session = InferenceSession(propagator)
    session.step(clip[0], mask)
    for frame in clip[1 : 1 + warmup]:
        session.step(frame)
    start = time.perf_counter()
    for frame in clip[1 + warmup :]:
        session.step(frame)
    return (len(clip) - 1 - warmup) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("../shared/data/davis2016-train-240p"))
    parser.add_argument("--sequence", default="rhino")
    parser.add_argument("--size", default="480x854")
    parser.add_argument("--frames", type=int, default=40, help="frames per round (the first takes the mask)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--method", action="append", default=[], metavar="NAME=CHECKPOINT")
    parser.add_argument("--runnable", action="append", default=[], metavar="NAME")
    parser.add_argument("--dtype", default="float32", help="precision of the networks (default float32)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    set_threads(args.threads)
    height, width = (int(v) for v in args.size.split("x"))
    clip, mask = load_clip(args.root, args.sequence, args.frames, (height, width))
    print(format_machine_info())
    print(f"settings : {args.sequence} up-scaled to {args.size}, {args.frames} frames per round ({args.warmup} warm-up),"
          f" {args.repeats} rounds, networks in {args.dtype}")
    methods = {}
    for item in args.method:
        name, _, checkpoint = item.partition("=")
        method = read_checkpoint(checkpoint)["method"]
        methods[name] = build_propagator(checkpoint=checkpoint, **precision(method, args.dtype))
    for name in args.runnable:
        methods[name] = build_propagator(name, **precision(name, args.dtype))
    rates: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.repeats):
        for name, propagator in methods.items():
            with torch.inference_mode():
                rates[name].append(frames_per_second(propagator, clip, mask, args.warmup))
    print("| method | frames/s at 480p (median of rounds) | rounds |")
    print("|---|---|---|")
    for name, values in rates.items():
        print(f"| {name} | {statistics.median(values):.1f} | {', '.join(f'{v:.1f}' for v in values)} |")


if __name__ == "__main__":
    main()
