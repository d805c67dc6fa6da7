"""Peak memory and speed of ``vidseg segment`` against video length (a wrapper over :mod:`vidseg.bench`).

Writes synthetic .mp4 videos of several lengths (default 200 and 2,000 frames, 480x854), segments each
in a fresh process, and prints each run's peak RSS (``VmHWM``) and frames/s, plus the ratio of the
longest run's peak to the shortest's. Memory that does not grow with the video length gives a ratio
near 1. ``vidseg bench`` runs the same measurement (lengths 200 1000 2000).

    python benchmarks/bench_segment_memory.py [--lengths 200 2000] [--size 480x854] [--method flow]
"""

from __future__ import annotations

import argparse

from vidseg.bench import measure_segment_memory, parse_size
from vidseg.machine import format_machine_info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--size", default="480x854")
    parser.add_argument("--objects", type=int, default=3)
    parser.add_argument("--method", default="flow")
    args = parser.parse_args()
    print(format_machine_info())
    print(f"settings : {args.size}, {args.objects} objects, method {args.method}, lengths {args.lengths}")
    measure_segment_memory(args.lengths, parse_size(args.size), args.objects, args.method)


if __name__ == "__main__":
    main()
