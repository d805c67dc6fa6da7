"""Speed (s/frame) and peak memory of RVOS inference on the CPU, ours against an official-style run.

Paper-size network: RVOS-Mask-ST (one-shot), ResNet-101, 10 slots, projections 128/128/64/32, ConvLSTMs
128/64/32/16; random seed-0 weights (speed does not depend on them). Each configuration runs in a fresh process
and reports the median seconds per frame over ``--frames`` frames after one warm-up frame, and the process's peak
RSS (``VmHWM``, model construction included). Frames are random; the first-frame masks are random rectangles.

Variants:

* ``ours-fp32`` / ``ours-bf16``: the shipped path, an :class:`~vidseg.inference.session.InferenceSession` with
  :class:`~vidseg.inference.rvos.RVOSPropagator` (BatchNorm folded, channels-last, ``inference_mode``; only the
  slots up to the last object run, which leaves their outputs unchanged).
* ``official-style``: what the official code does per frame: float32, BatchNorm unfolded, NCHW, ``no_grad``, the
  encoder once and all 10 slots decoded every frame, previous masks as the slots' own soft outputs.

    python benchmarks/bench_rvos_speed.py [--sizes 256x448 480x864] [--objects 1 3 10] [--frames 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from vidseg.machine import format_machine_info

VARIANTS = ("official-style", "ours-fp32", "ours-bf16")
# The official RVOS code measured on the development machine (issue 12): ResNet-101, 10 slots, 2 threads.
OFFICIAL = {("256x448", 1): (0.184, 1.0), ("256x448", 3): (0.225, 1.0), ("256x448", 10): (0.321, 1.0),
            ("480x854", 1): (0.555, 1.35), ("480x854", 3): (0.673, 1.35), ("480x854", 10): (0.933, 1.35)}


def _peak_rss_gb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2
    return float("nan")


def _model():
    from vidseg.models.rvos import RVOSConfig, build_model

    torch.manual_seed(0)
    return build_model(RVOSConfig(mode="one-shot", backbone="resnet101", slots=10)).eval()


def _masks(height: int, width: int, objects: int, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    for k in range(1, objects + 1):
        y, x = rng.integers(0, height * 3 // 4), rng.integers(0, width * 3 // 4)
        mask[y : y + height // 5, x : x + width // 6] = k
    return mask


def child(variant: str, size: str, objects: int, frames: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    height, width = (int(v) for v in size.split("x"))
    rng = np.random.default_rng(0)
    video = [rng.integers(0, 255, (height, width, 3), dtype=np.uint8) for _ in range(frames + 2)]
    first = _masks(height, width, objects, rng)
    model = _model()
    times = []
    if variant == "official-style":
        with torch.no_grad():
            previous = torch.from_numpy(np.stack([(first == k) for k in range(1, 11)])[None]).float()
            temporal = None
            for frame in video:
                start = time.perf_counter()
                x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255.0
                out = model.decode(model.encode(x), temporal, previous, output_size=(height, width))
                temporal, previous = out.temporal, torch.sigmoid(out.logits)
                (previous > 0.5).numpy()  # thresholded per slot, as the official code
                times.append(time.perf_counter() - start)
    else:
        from vidseg.inference.rvos import RVOSPropagator
        from vidseg.inference.session import InferenceSession

        dtype = "float32" if variant == "ours-fp32" else "bfloat16"
        session = InferenceSession(RVOSPropagator(model, max_side=max(height, width), dtype=dtype, inplace=True))
        del model
        for index, frame in enumerate(video):
            start = time.perf_counter()
            session.step(frame, first if index == 0 else None)
            times.append(time.perf_counter() - start)
    timed = times[2:]  # frame 0 takes the masks, frame 1 warms up
    return {"variant": variant, "size": size, "objects": objects, "threads": threads,
            "median_s": statistics.median(timed), "times": timed, "peak_rss_gb": _peak_rss_gb()}


def _cell(rows: dict[str, dict], variant: str) -> str:
    row = rows.get(variant)
    return "-" if row is None else f"{row['median_s']:.3f} s, {row['peak_rss_gb']:.2f} GB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["256x448", "480x864"])
    parser.add_argument("--objects", nargs="+", type=int, default=[1, 3, 10])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "SIZE", "OBJECTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        variant, size, objects = args.child
        print(json.dumps(child(variant, size, int(objects), args.frames, args.threads)))
        return
    print(format_machine_info())
    print(f"settings : RVOS-Mask-ST ResNet-101, 10 slots, random weights; median of {args.frames} frames after 1 "
          f"warm-up; {args.threads} threads; one fresh process per row")
    rows = []
    for size in args.sizes:
        for objects in args.objects:
            for variant in args.variants:
                command = [sys.executable, __file__, "--child", variant, size, str(objects), "--frames",
                           str(args.frames), "--threads", str(args.threads)]
                done = subprocess.run(command, check=True, capture_output=True, text=True)
                row = json.loads(done.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(f"{variant:>14} {size:>8} {objects:>2} obj: {row['median_s']:.3f} s/frame, "
                      f"peak RSS {row['peak_rss_gb']:.2f} GB", flush=True)
    print("\n| size | objects | official RVOS (measured) | official-style here | ours fp32 | ours bf16 | "
          "speed-up fp32 vs official |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        for objects in args.objects:
            got = {r["variant"]: r for r in rows if r["size"] == size and r["objects"] == objects}
            official = OFFICIAL.get(("480x854" if size == "480x864" else size, objects))

            ratio = (f"{official[0] / got['ours-fp32']['median_s']:.2f}x" if official and "ours-fp32" in got else "-")
            print(f"| {size} | {objects} | {'-' if not official else f'{official[0]:.3f} s, {official[1]:.1f} GB'} | "
                  f"{_cell(got, 'official-style')} | {_cell(got, 'ours-fp32')} | {_cell(got, 'ours-bf16')} | {ratio} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
