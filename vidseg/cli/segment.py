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
    parser.add_argument(
        "--method",
        help="segmentation method: flow (no weights), or the networks hs2s, s2s++, s2s (bundled weights or "
        "--checkpoint); default: the checkpoint's method, else the best available one (printed)",
    )
    parser.add_argument("--checkpoint", metavar="PT", help="trained weights for hs2s / s2s++ / s2s (from `vidseg train`)")
    parser.add_argument("--device", default="cpu", help="torch device for the network methods (cpu, cuda, cuda:1)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="network precision (bfloat16 halves memory)")
    parser.add_argument("--max-side", type=int, default=None,
                        help="working resolution of the networks' longer side (default: the size they were trained at)")
    parser.add_argument("--online-steps", type=int, default=0, metavar="N",
                        help="S2S-OL: fine-tune N steps on the first frame before segmenting (slower, often better)")
    parser.add_argument("--online-lr", type=float, default=1e-5, metavar="LR",
                        help="learning rate of --online-steps (default: 1e-5)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder for the mask PNGs")
    parser.add_argument("--overlay", metavar="VIDEO", help="also write an overlay video (.mp4 or .avi)")
    parser.add_argument("--overwrite", action="store_true", help="replace masks from an earlier run in --out")
    parser.add_argument("--resume", action="store_true",
                        help="continue a run that was interrupted (Ctrl-C) in --out, with the same arguments")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from vidseg.errors import VidsegError
    from vidseg.inference.methods import (
        RECURRENT_METHODS,
        build_propagator,
        choose_default_method,
        network_propagator,
    )
    from vidseg.inference.runner import segment_video

    if args.overwrite and args.resume:
        raise VidsegError("--overwrite and --resume exclude each other", fix="pass one of them")
    method = args.method
    if method is None and not args.checkpoint:
        choice = choose_default_method()
        method = choice.name
        print(f"method: {choice.name} -- {choice.reason}; choose another with --method", file=sys.stderr)
    if args.checkpoint and method == "flow":
        raise VidsegError("--checkpoint only applies to hs2s / s2s++ / s2s", fix="drop it or choose a network method")
    if method is not None and method not in RECURRENT_METHODS:
        if args.online_steps:
            raise VidsegError("--online-steps only applies to hs2s / s2s++ / s2s", fix="choose a network method")
        propagator = build_propagator(method)
    else:
        propagator = network_propagator(args.checkpoint, method, device=args.device, dtype=args.dtype,
                                        max_side=args.max_side, online_steps=args.online_steps,
                                        online_lr=args.online_lr)
    result = segment_video(
        args.video,
        args.mask,
        args.out,
        method=propagator,
        overlay=args.overlay,
        overwrite=args.overwrite,
        progress=not args.quiet,
        resume=args.resume,
    )
    print(result.summary())
    return 0
