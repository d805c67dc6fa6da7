"""``vidseg demo``: generate a synthetic clip, segment it, write an overlay video and score it."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="segment a generated clip end to end (offline, under a minute)",
        description="Generate a short synthetic clip, segment it with the best available method, write the "
        "masks and an overlay video, and print J&F against the clip's ground truth.",
    )
    parser.add_argument("--out", default="vidseg-demo", metavar="DIR", help="output folder (default: vidseg-demo)")
    parser.add_argument("--frames", type=int, default=40, help="number of frames (default: 40)")
    parser.add_argument("--objects", type=int, default=2, help="number of objects (default: 2)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the clip (default: 0)")
    parser.add_argument("--method", default=None, help="method to use (default: the best available)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vidseg.demo import run_demo

    result = run_demo(Path(args.out), num_frames=args.frames, num_objects=args.objects, seed=args.seed, method=args.method)
    print(result.summary())
    return 0
