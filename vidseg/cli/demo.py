"""``vidseg demo``: generate two clips, segment them with the bundled model, write overlay videos and score them."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="segment two generated clips with the bundled model (offline, under a minute)",
        description="Generate two short clips (synthetic shapes, and a DAVIS-like scene of an animal passing "
        "behind a tree), segment them with the bundled learned model, write the masks and overlay videos, and "
        "print J&F against the clips' ground truth next to the flow method's.",
    )
    parser.add_argument("--out", default="vidseg-demo", metavar="DIR", help="output folder (default: vidseg-demo)")
    parser.add_argument("--frames", type=int, default=40, help="number of frames (default: 40)")
    parser.add_argument("--objects", type=int, default=2, help="number of objects (default: 2)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the clip (default: 0)")
    parser.add_argument("--method", default=None, help="method to use (default: the bundled network)")
    parser.add_argument("--case", choices=["synthetic", "scene", "both"], default="both", help="which clip(s) to run")
    parser.add_argument("--no-compare", action="store_true", help="do not also run flow for comparison")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vidseg.demo import CASES, run_demo

    cases = CASES if args.case == "both" else (args.case,)
    result = run_demo(Path(args.out), num_frames=args.frames, num_objects=args.objects, seed=args.seed,
                      method=args.method, cases=cases, compare_with_flow=not args.no_compare)
    print(result.summary())
    return 0
