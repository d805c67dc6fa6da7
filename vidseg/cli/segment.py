"""``vidseg segment``: segment a video from the mask(s) of its objects, or discover them."""

from __future__ import annotations

import argparse

from vidseg.cli.method_args import add_method_arguments, check_method_options, resolve_method
from vidseg.machine import THREADS_HELP, parse_threads


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "segment",
        help="segment a video from the masks of its objects (or discover them)",
        description="Segment a video (file or frame folder) given the mask of each object in the frame where "
        "it first appears; methods that discover objects also run without masks. Writes one palette PNG per "
        "frame, named like the input frames.",
        epilog="examples:\n"
        "  vidseg segment video.mp4 --mask first.png --out masks/ --overlay overlay.mp4\n"
        "  vidseg segment frames/ --out masks/                      # no mask: discover the objects (zero-shot)\n"
        "  vidseg segment video.mp4 --mask first.png --out masks/ --checkpoint runs/hs2s/best.pt --threads 1",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("video", help="video file (.mp4/.avi/.mov) or folder of .jpg/.png frames")
    parser.add_argument(
        "--mask",
        action="append",
        metavar="PNG",
        help="mask PNG (indexed, 0/255 grayscale or palette colours); repeat for objects that appear later, "
        "naming each mask after its frame (e.g. 00042.png); a folder of masks also works. Without it the "
        "method must discover the objects",
    )
    add_method_arguments(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder for the mask PNGs")
    parser.add_argument("--overlay", metavar="VIDEO", help="also write an overlay video (.mp4: H.264, or .avi)")
    parser.add_argument("--frame-numbers", action="store_true", help="write each frame's name on the overlay")
    parser.add_argument("--overwrite", action="store_true", help="replace masks from an earlier run in --out")
    parser.add_argument("--resume", action="store_true",
                        help="continue a run that was interrupted (Ctrl-C) in --out, with the same arguments")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--threads", type=parse_threads, default="auto", metavar="N", help=THREADS_HELP)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from vidseg.errors import VidsegError
    from vidseg.inference.methods import build_propagator
    from vidseg.inference.runner import segment_video
    from vidseg.machine import set_threads

    check_method_options(args)
    threads = set_threads(args.threads)
    if args.overwrite and args.resume:
        raise VidsegError("--overwrite and --resume exclude each other", fix="pass one of them")
    method, options = resolve_method(args, zero_shot=not args.mask)
    propagator = build_propagator(method, args.checkpoint, **options)
    if propagator.precision is not None:
        print(f"precision: {propagator.precision[0]} ({propagator.precision[1]})", file=sys.stderr)
    if threads and not args.quiet:
        print(threads, file=sys.stderr)
    result = segment_video(
        args.video,
        args.mask,
        args.out,
        method=propagator,
        overlay=args.overlay,
        labels=args.frame_numbers,
        overwrite=args.overwrite,
        progress=not args.quiet,
        resume=args.resume,
    )
    print(result.summary())
    return 0
