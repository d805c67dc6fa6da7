"""``vidseg segment``: segment a video from the mask(s) of its objects."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "segment",
        help="segment a video from the masks of its objects",
        description="Segment a video (file or frame folder) given the mask of each object in the frame where "
        "it first appears. Writes one palette PNG per frame, named like the input frames.",
    )
    parser.add_argument("video", help="video file (.mp4/.avi/.mov) or folder of .jpg/.png frames")
    parser.add_argument(
        "--mask",
        action="append",
        required=True,
        metavar="PNG",
        help="mask PNG (indexed, 0/255 grayscale or palette colours); repeat for objects that appear later, "
        "naming each mask after its frame (e.g. 00042.png); a folder of masks also works",
    )
    parser.add_argument("--method", default="flow", help="segmentation method (default: flow)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder for the mask PNGs")
    parser.add_argument("--overlay", metavar="VIDEO", help="also write an overlay video (.mp4 or .avi)")
    parser.add_argument("--overwrite", action="store_true", help="replace masks from an earlier run in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vidseg.inference.runner import segment_video

    result = segment_video(
        args.video,
        args.mask,
        args.out,
        method=args.method,
        overlay=args.overlay,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(result.summary())
    return 0
