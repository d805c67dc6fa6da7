"""``vidseg segment``: segment a video from the mask(s) of its objects, or discover them."""

from __future__ import annotations

import argparse

from vidseg.constants import SEGMENT_DTYPE_CHOICES
from vidseg.machine import THREADS_HELP, parse_threads
from vidseg.registry import get_method, method_names


def _method_help() -> str:
    lines = []
    for name in method_names():
        spec = get_method(name)
        needs = []
        if spec.needs_checkpoint:
            needs.append("bundled weights or --checkpoint" if spec.bundled else "--checkpoint")
        if spec.zero_shot:
            needs.append("works without --mask")
        lines.append(f"{name} ({spec.summary}{'; ' + ', '.join(needs) if needs else ''})")
    return ("segmentation method: " + "; ".join(lines) + ". Default: the checkpoint's method, else the best "
            "runnable one (printed)")


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
    parser.add_argument("--method", metavar="NAME", help=_method_help())
    parser.add_argument("--checkpoint", metavar="PT", help="trained weights for a network method (from `vidseg train`)")
    parser.add_argument("--device", help="torch device for the network methods (cpu, cuda, cuda:1; default cpu)")
    parser.add_argument("--dtype", choices=SEGMENT_DTYPE_CHOICES,
                        help="network precision (default auto: bfloat16 where the device runs it natively -- a recent "
                             "GPU, or a CPU with avx512_bf16 / amx_bf16 -- else float32; an int8 export runs in "
                             "int8; int8: the large convolutions of the S2S family, RVOS and OVSNet in int8 on the "
                             "CPU, calibrated on the first frame)")
    parser.add_argument("--max-side", type=int, default=None,
                        help="working resolution's longer side (default: the method's own, for networks the size "
                        "they were trained at)")
    parser.add_argument("--online-steps", type=int, default=None, metavar="N",
                        help="S2S-OL / OVSNet: fine-tune N steps on the first frame before segmenting (slower, often better)")
    parser.add_argument("--online-lr", type=float, default=None, metavar="LR",
                        help="learning rate of --online-steps (default: 1e-5)")
    cascade = parser.add_argument_group("ovsnet cascade")
    cascade.add_argument("--test-size", type=int, default=None, metavar="PX",
                         help="detector's shorter side (default: the network's; the paper's 800)")
    cascade.add_argument("--flow", choices=("dis", "raft"), default=None,
                         help="optical flow that warps the previous masks: dis (OpenCV, default) or raft (torchvision "
                         "RAFT-small, needs its weights)")
    cascade.add_argument("--flow-weights", metavar="PTH", help="torchvision RAFT-small weights file for --flow raft")
    cascade.add_argument("--rho-iou", type=float, default=None, metavar="T",
                         help="IoU with the warped mask above which a detection is taken (paper: 0.3)")
    cascade.add_argument("--rho-reid", type=float, default=None, metavar="D",
                         help="re-ID distance threshold (default: the one calibrated for the network's embeddings)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder for the mask PNGs")
    parser.add_argument("--overlay", metavar="VIDEO", help="also write an overlay video (.mp4: H.264, or .avi)")
    parser.add_argument("--frame-numbers", action="store_true", help="write each frame's name on the overlay")
    parser.add_argument("--overwrite", action="store_true", help="replace masks from an earlier run in --out")
    parser.add_argument("--resume", action="store_true",
                        help="continue a run that was interrupted (Ctrl-C) in --out, with the same arguments")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--threads", type=parse_threads, default="auto", metavar="N", help=THREADS_HELP)
    parser.set_defaults(func=run)


_OPTION_FLAGS = {"max_side": "--max-side", "device": "--device", "dtype": "--dtype", "online_steps": "--online-steps",
                 "online_lr": "--online-lr", "test_size": "--test-size", "flow": "--flow",
                 "flow_weights": "--flow-weights", "rho_iou": "--rho-iou", "rho_reid": "--rho-reid"}


MIN_SIDE = 32  # networks round the working size to multiples of 32


def _check_options(args: argparse.Namespace) -> str | None:
    """Refuse values no method can run with, before anything is read or written; set the threads (returns the line
    saying how many)."""
    from vidseg.errors import VidsegError
    from vidseg.machine import check_device, set_threads

    if args.max_side is not None and args.max_side < MIN_SIDE:
        raise VidsegError(f"--max-side {args.max_side} is too small", fix=f"use at least {MIN_SIDE} pixels, or leave it "
                          "out for the method's own size")
    if args.online_steps is not None and args.online_steps < 0:
        raise VidsegError(f"--online-steps {args.online_steps} is negative", fix="use 0 (off) or a positive count")
    if args.online_lr is not None and not args.online_lr > 0:
        raise VidsegError(f"--online-lr {args.online_lr} must be positive", fix="e.g. 1e-5, the default")
    if args.test_size is not None and args.test_size < MIN_SIDE:
        raise VidsegError(f"--test-size {args.test_size} is too small", fix=f"use at least {MIN_SIDE} pixels (paper: 800)")
    if args.rho_iou is not None and not 0 <= args.rho_iou < 1:
        raise VidsegError(f"--rho-iou {args.rho_iou} is not an IoU", fix="use a value in [0, 1), e.g. 0.3")
    if args.rho_reid is not None and not args.rho_reid > 0:
        raise VidsegError(f"--rho-reid {args.rho_reid} must be positive", fix="leave it out for the calibrated value")
    if args.device is not None:
        check_device(args.device)
    return set_threads(args.threads)


def run(args: argparse.Namespace) -> int:
    import sys

    from vidseg.errors import VidsegError
    from vidseg.inference.methods import build_propagator, choose_default_method
    from vidseg.inference.runner import segment_video

    threads = _check_options(args)
    if args.overwrite and args.resume:
        raise VidsegError("--overwrite and --resume exclude each other", fix="pass one of them")
    method = args.method
    if method is None and not args.checkpoint:
        choice = choose_default_method(zero_shot=not args.mask)
        method = choice.name
        print(f"method: {choice.name} -- {choice.reason}; choose another with --method", file=sys.stderr)
    options = {key: getattr(args, key) for key in _OPTION_FLAGS if getattr(args, key) is not None}
    if method is not None:
        spec = get_method(method)
        ignored = [_OPTION_FLAGS[key] for key in options if key not in spec.options]
        if ignored:
            raise VidsegError(f"{ignored[0]} does not apply to {method}",
                              fix=f"drop it; {method} takes: {', '.join(_OPTION_FLAGS[k] for k in spec.options)}")
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
