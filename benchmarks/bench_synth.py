"""Speed of the synthetic VOS benchmark generator (vidseg.data.synth).

Prints the machine (CPU, threads, library versions), then frames/s for generation alone and for
generation + writing the DAVIS layout (JPEG frames + palette PNG masks), at 256x448 and 480x854.

    python benchmarks/bench_synth.py [--frames 300] [--objects 3] [--distractors 2] [--sizes 256x448 480x854]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import PIL

from vidseg.data.synth import SynthClip, SynthConfig, write_davis
from vidseg.machine import format_machine_info


def bench_generate(config: SynthConfig) -> tuple[float, float]:
    """(seconds to plan the clip, frames/s rendering it)."""
    start = time.perf_counter()
    clip = SynthClip(config)
    plan = time.perf_counter() - start
    start = time.perf_counter()
    for _ in clip:
        pass
    return plan, config.num_frames / (time.perf_counter() - start)


def bench_write(config: SynthConfig, sequences: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = write_davis(Path(tmp) / "davis", sequences, config)
        return out.num_frames / out.seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300, help="frames per clip")
    parser.add_argument("--objects", type=int, default=3)
    parser.add_argument("--distractors", type=int, default=2)
    parser.add_argument("--sequences", type=int, default=2, help="sequences written in the DAVIS benchmark")
    parser.add_argument("--sizes", nargs="+", default=["256x448", "480x854"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(format_machine_info())
    print(f"pillow   : {PIL.__version__}")
    print(f"clips      : {args.frames} frames, {args.objects} objects, {args.distractors} distractors, all effects on")
    print()
    print(f"{'size':>9}  {'plan s':>7}  {'generate f/s':>12}  {'no-blur f/s':>11}  {'gen+write DAVIS f/s':>19}")
    for size in args.sizes:
        height, width = (int(v) for v in size.lower().split("x"))
        config = SynthConfig(
            seed=args.seed,
            num_frames=args.frames,
            height=height,
            width=width,
            num_objects=args.objects,
            num_distractors=args.distractors,
        )
        plan, fps = bench_generate(config)
        _, fps_sharp = bench_generate(SynthConfig(**{**config.__dict__, "motion_blur": False}))
        short = SynthConfig(**{**config.__dict__, "num_frames": max(1, args.frames // args.sequences)})
        fps_write = bench_write(short, args.sequences)
        print(f"{size:>9}  {plan:7.2f}  {fps:12.0f}  {fps_sharp:11.0f}  {fps_write:19.0f}")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
