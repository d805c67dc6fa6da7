"""``vidseg data``: dataset tools. ``vidseg data synth OUT`` writes the procedural benchmark."""

from __future__ import annotations

import argparse
import sys

from vidseg.errors import VidsegError

LAYOUTS = ("davis", "youtube-vos", "video")
DEFAULT_SEQUENCES = {"davis": 4, "youtube-vos": 5, "video": 1}
def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="dataset tools (synthetic benchmark, ...)",
                                   description="Dataset tools. `vidseg data synth OUT` writes the procedural benchmark.")
    parser.set_defaults(func=lambda args: _print_help(parser))
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION")
    synth = actions.add_parser(
        "synth",
        help="write the procedural synthetic VOS benchmark",
        description=(
            "Write a deterministic synthetic VOS benchmark: textured shapes over moving textured backgrounds, "
            "with look-alike distractors, full occlusions, scale/shape change, camera motion and motion blur. "
            "OUT must be new, empty, or a previous synth output."
        ),
    )
    add = synth.add_argument
    add("out", metavar="OUT", help="output folder")
    add("--layout", choices=LAYOUTS, default="davis", help="folder layout (default: davis)")
    add("--sequences", type=int, metavar="N", help="number of sequences (default: davis 4, youtube-vos 5, video 1)")
    add("--frames", type=int, default=40, metavar="T", help="frames per sequence (default: 40)")
    add("--size", default="256x448", metavar="HxW", help="frame size HxW, or 480p, 240p, ... (default: 256x448)")
    add("--objects", type=int, default=2, metavar="K", help="labelled objects per sequence, ids 1..K (default: 2)")
    add("--distractors", type=int, default=1, metavar="D", help="unlabelled look-alike objects (default: 1)")
    add("--seed", type=int, default=0, metavar="S", help="random seed; same seed, same bytes (default: 0)")
    add("--sparse-every", type=int, default=5, metavar="K", help="youtube-vos: annotate every K-th frame (default: 5)")
    add("--no-occlusion", action="store_true", help="no occluders and no planned full occlusions")
    add("--no-camera-motion", action="store_true", help="static camera")
    add("--no-blur", action="store_true", help="no motion blur")
    add("--jpeg-quality", type=int, default=90, metavar="Q", help="JPEG quality 1..100 (default: 90)")
    add("--fps", type=float, default=30.0, help="video layout: frames per second of the .mp4 (default: 30)")
    synth.set_defaults(func=run_synth)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def parse_size(text: str) -> tuple[int, int]:
    """``--size``: ``"256x448"`` -> (256, 448); also ``480p`` (480x854) and friends."""
    from vidseg.io.video import parse_frame_size

    try:
        return parse_frame_size(text)
    except ValueError:
        raise VidsegError(f"--size {text!r} is not HxW", fix="write it as e.g. 256x448 or 480p") from None


def run_synth(args: argparse.Namespace) -> int:
    # imported here so that `vidseg --help` stays fast
    from tqdm import tqdm

    from vidseg.data import synth

    height, width = parse_size(args.size)
    if args.sequences is None:
        args.sequences = DEFAULT_SEQUENCES[args.layout]
    limits = [
        ("--frames", args.frames, 1, None),
        ("--objects", args.objects, 1, synth.MAX_OBJECTS),
        ("--distractors", args.distractors, 0, synth.MAX_DISTRACTORS),
        ("--seed", args.seed, 0, None),
        ("--sequences", args.sequences, 1, None),
        ("--jpeg-quality", args.jpeg_quality, 1, 100),
        ("--sparse-every", args.sparse_every, 1, None),
    ]
    for flag, value, low, high in limits:
        if value < low or (high is not None and value > high):
            bound = f"{low}..{high}" if high is not None else f">= {low}"
            raise VidsegError(f"{flag} must be {bound}, got {value}")
    for name, value in (("height", height), ("width", width)):
        if not synth.MIN_SIZE <= value <= synth.MAX_SIZE:
            raise VidsegError(f"--size {name} must be {synth.MIN_SIZE}..{synth.MAX_SIZE}, got {value}")
    if not args.fps > 0:
        raise VidsegError(f"--fps must be positive, got {args.fps}")
    config = synth.SynthConfig(
        seed=args.seed,
        num_frames=args.frames,
        height=height,
        width=width,
        num_objects=args.objects,
        num_distractors=args.distractors,
        occlusion=not args.no_occlusion,
        camera_motion=not args.no_camera_motion,
        motion_blur=not args.no_blur,
    )
    synth.check_output_folder(args.out)
    total = args.sequences * args.frames
    with tqdm(total=total, unit="frame", desc="synth", dynamic_ncols=True, leave=False) as bar:
        if args.layout == "davis":
            out = synth.write_davis(
                args.out, args.sequences, config, jpeg_quality=args.jpeg_quality, progress=bar.update
            )
        elif args.layout == "youtube-vos":
            out = synth.write_youtube_vos(
                args.out,
                args.sequences,
                config,
                sparse_every=args.sparse_every,
                jpeg_quality=args.jpeg_quality,
                progress=bar.update,
            )
        else:
            out = synth.write_videos(args.out, args.sequences, config, fps=args.fps, progress=bar.update)
    def plural(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    where = {
        "davis": f"resolution {height}p",
        "youtube-vos": f"labels every {args.sparse_every} frames",
        "video": "mp4 + masks",
    }
    print(
        f"wrote {plural(len(out.sequences), args.layout + ' sequence')} x {args.frames} frames ({height}x{width}, "
        f"{plural(args.objects, 'object')}, {plural(args.distractors, 'distractor')}, seed {args.seed}, "
        f"{where[args.layout]}) "
        f"to {out.root} in {out.seconds:.1f} s ({out.frames_per_second:.0f} frames/s)"
    )
    return 0
