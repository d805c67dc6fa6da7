"""Peak memory and speed of ``vidseg segment`` against video length.

Writes synthetic 480x854 .mp4 videos of several lengths (default 200 and 2,000 frames), runs
``vidseg segment`` on each in a fresh process, and prints each run's peak RSS (ru_maxrss) and
frames/s, plus the ratio of the longest run's peak to the shortest's. Memory that does not grow with
the video length gives a ratio near 1.

    python benchmarks/bench_segment_memory.py [--lengths 200 2000] [--size 480x854] [--method flow]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from vidseg.data.synth import SynthConfig, write_video
from vidseg.machine import format_machine_info

_CHILD = """
import json, resource, sys, time
from vidseg.inference.runner import segment_video
video, mask, out, method = sys.argv[1:5]
result = segment_video(video, [mask], out, method=method, progress=False)
print(json.dumps({"frames": result.num_frames, "fps": result.frames_per_second,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(video: Path, mask: Path, out: Path, method: str) -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", _CHILD, str(video), str(mask), str(out), method],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--size", default="480x854")
    parser.add_argument("--objects", type=int, default=3)
    parser.add_argument("--method", default="flow")
    args = parser.parse_args()
    height, width = map(int, args.size.split("x"))
    print(format_machine_info())
    print(f"settings : {args.size}, {args.objects} objects, method {args.method}, lengths {args.lengths}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        videos = {}
        for length in args.lengths:
            config = SynthConfig(seed=1, num_frames=length, height=height, width=width, num_objects=args.objects)
            videos[length] = write_video(Path(tmp) / "videos" / f"clip{length}.mp4", config, gt=False)
        # Flush the freshly written videos first: measured right after a large write, a reader's peak
        # RSS was seen up to 25% higher, from the write-back, not from the segmentation.
        os.sync()
        for length, synth in videos.items():
            row = measure(synth.video, synth.first_mask, Path(tmp) / f"out{length}", args.method)
            rows.append(row)
            print(f"{length:>6} frames: peak RSS {row['peak_rss_mb']:.0f} MB, {row['fps']:.1f} frames/s", flush=True)
    ratio = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    print(f"peak RSS ratio {args.lengths[-1]} / {args.lengths[0]} frames: {ratio:.3f}")


if __name__ == "__main__":
    main()
