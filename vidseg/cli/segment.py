"""``vidseg segment``: segment a video from the mask(s) of its objects, or discover them."""

from __future__ import annotations

import argparse

from vidseg.machine import THREADS_HELP, parse_threads
from vidseg.registry import get_method, method_names, method_options


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
    _add_method_options(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder for the mask PNGs")
    parser.add_argument("--overlay", metavar="VIDEO", help="also write an overlay video (.mp4: H.264, or .avi)")
    parser.add_argument("--frame-numbers", action="store_true", help="write each frame's name on the overlay")
    parser.add_argument("--overwrite", action="store_true", help="replace masks from an earlier run in --out")
    parser.add_argument("--resume", action="store_true",
                        help="continue a run that was interrupted (Ctrl-C) in --out, with the same arguments")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--threads", type=parse_threads, default="auto", metavar="N", help=THREADS_HELP)
    parser.set_defaults(func=run)


def _add_method_options(parser: argparse.ArgumentParser) -> None:
    """One flag per option of the registered methods (:func:`vidseg.registry.method_options`), in its declared
    ``--help`` section."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for option in method_options().values():
        target = parser if option.group is None else groups.setdefault(option.group,
                                                                        parser.add_argument_group(option.group))
        target.add_argument(option.flag, type=option.type, choices=option.choices, default=None,
                            metavar=option.metavar, help=option.help)


def _check_options(args: argparse.Namespace) -> str | None:
    """Refuse values no method can run with, before anything is read or written (each option's own check); set the
    threads (returns the line saying how many)."""
    from vidseg.machine import set_threads

    for option in method_options().values():
        value = getattr(args, option.name, None)
        if value is not None and option.check is not None:
            option.check(value)
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
    flags = {name: option.flag for name, option in method_options().items()}
    options = {key: getattr(args, key) for key in flags if getattr(args, key, None) is not None}
    if method is not None:
        spec = get_method(method)
        ignored = [flags[key] for key in options if key not in spec.options]
        if ignored:
            raise VidsegError(f"{ignored[0]} does not apply to {method}",
                              fix=f"drop it; {method} takes: {', '.join(o.flag for o in spec.declared_options)}")
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
