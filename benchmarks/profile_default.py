"""Where a frame of the default method goes at 480p: seconds and FLOPs per stage, against the machine's peak.

A real clip (a DAVIS-2016 training video of the shared data, up-scaled to 480x854) runs through an
:class:`~vidseg.inference.session.InferenceSession` as ``vidseg segment`` drives it (no file I/O). Each stage is timed
around its call, median over the timed frames: the frozen features, the memory read (matching products, top-k,
labels), the refiner, the memory update (commit), and the session's own work (merging, resizing, the decision).
FLOPs come from ``torch.utils.flop_counter`` (the top-k and copies count none); the peak is the best dense
convolution throughput measured in the same run (:func:`vidseg.roofline.calibrate_conv`).

    python benchmarks/profile_default.py --dtype bfloat16 --objects 1 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import torch

import vidseg.inference.match as match_module
from vidseg.data.davis import DavisIndex
from vidseg.inference.methods import build_propagator
from vidseg.inference.session import InferenceSession
from vidseg.io.masks import read_mask
from vidseg.machine import format_machine_info, set_threads
from vidseg.models.match_memory import MatchMemory
from vidseg.roofline import calibrate_conv, count_flops

SIZE = (480, 854)


def load_clip(root: Path, sequence: str, frames: int, objects: int) -> tuple[list[np.ndarray], np.ndarray]:
    """``frames`` frames up-scaled to 480p and a first mask of ``objects`` objects (the video's object cut into
    ``objects`` vertical strips: several objects at the object's cost)."""
    video = next(iter(DavisIndex(root, "2016", "train", "240p", sequences=[sequence])))
    clip = [cv2.resize(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB), SIZE[::-1], interpolation=cv2.INTER_CUBIC)
            for p in video.frame_paths[:frames]]
    mask = cv2.resize(read_mask(video.mask_paths[video.frame_names[0]]), SIZE[::-1], interpolation=cv2.INTER_NEAREST)
    columns = np.nonzero((mask > 0).any(0))[0]
    edges = np.linspace(columns[0], columns[-1] + 1, objects + 1).astype(int)
    ids = np.zeros_like(mask)
    for k in range(objects):
        strip = np.zeros_like(mask, dtype=bool)
        strip[:, edges[k]:edges[k + 1]] = True
        ids[(mask > 0) & strip] = k + 1
    return clip, ids


class StageClock:
    """Wraps functions so each call's seconds add to its stage for the current frame."""

    def __init__(self) -> None:
        self.frame: dict[str, float] = defaultdict(float)

    def wrap(self, stage: str, function):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.frame[stage] += time.perf_counter() - start
        return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared/data/davis2016-train-240p")
    parser.add_argument("--sequence", default="bmx-bumps")
    parser.add_argument("--method", default="match_refine")
    parser.add_argument("--checkpoint", help="weights to profile instead of the method's bundled ones")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--objects", type=int, default=1)
    parser.add_argument("--frames", type=int, default=40, help="frames run (the first takes the masks)")
    parser.add_argument("--warmup", type=int, default=19, help="frames before the timed ones (the memory fills)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    set_threads(args.threads)
    clip, mask = load_clip(args.root, args.sequence, args.frames, args.objects)
    propagator = build_propagator(None if args.checkpoint else args.method, args.checkpoint, dtype=args.dtype)
    clock = StageClock()
    propagator._encode = clock.wrap("features", propagator._encode)
    MatchMemory.read = clock.wrap("memory read", MatchMemory.read)
    MatchMemory.add = clock.wrap("memory update", MatchMemory.add)
    match_module.refine_in_regions = clock.wrap("refiner", match_module.refine_in_regions)
    session = InferenceSession(propagator)
    per_frame: dict[str, list[float]] = defaultdict(list)
    for index, frame in enumerate(clip):
        clock.frame.clear()
        start = time.perf_counter()
        session.step(frame, mask if index == 0 else None)
        total = time.perf_counter() - start
        if index > args.warmup:
            for stage, seconds in clock.frame.items():
                per_frame[stage].append(seconds)
            per_frame["session (merge, resize, decide)"].append(total - sum(clock.frame.values()))
            per_frame["total"].append(total)
    flops: dict[str, float] = {}
    working = session._to_working(clip[-1])
    counted = {"features": lambda: propagator._encode(working),
               "memory read": lambda: session.state.memory.read(propagator._encode(working)[0], propagator.top_k,
                                                                propagator.temperature)}
    with torch.inference_mode():
        for stage, run in counted.items():
            flops[stage] = count_flops(run)["total"]
        flops["memory read"] -= flops["features"]
        flops["total"] = count_flops(lambda: session.step(clip[-1]))["total"]
    flops["refiner"] = flops["total"] - flops["features"] - flops["memory read"]
    dtype = propagator.dtype
    peak = calibrate_conv("cpu", str(dtype).removeprefix("torch."))["peak_gflops_per_s"]
    print(format_machine_info())
    print(f"settings : {args.method}, {dtype}, {args.objects} object(s), {args.sequence} at 480x854 (working size "
          f"{'x'.join(map(str, propagator.working_size(*SIZE)))}), {len(per_frame['total'])} timed frames, peak "
          f"{peak:.0f} GFLOP/s ({dtype} convolutions)\n")
    print("| stage | ms/frame (median) | share | GFLOP/frame | GFLOP/s | of peak |")
    print("| --- | --- | --- | --- | --- | --- |")
    total = statistics.median(per_frame["total"])
    for stage in ("features", "memory read", "refiner", "memory update", "session (merge, resize, decide)", "total"):
        seconds = statistics.median(per_frame[stage]) if per_frame[stage] else 0.0
        gflop = flops.get(stage, 0.0) / 1e9
        rate = gflop / seconds if seconds and gflop else None
        print(f"| {stage} | {seconds * 1e3:.1f} | {seconds / total:.0%} | {gflop:.2f} | "
              f"{'-' if rate is None else f'{rate:.0f}'} | {'-' if rate is None else f'{rate / peak:.0%}'} |")


if __name__ == "__main__":
    main()
