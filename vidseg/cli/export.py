"""``vidseg export CHECKPOINT OUT``: a small inference-only copy of a trained network, with its model card."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write an inference-only (half-precision) copy of a checkpoint with its model card",
        description="Drop the optimizer state and training progress of a `vidseg train` checkpoint, cast its "
        "weights (float16 by default, half the size) and merge a model card (JSON object) into its meta. "
        "Writes OUT and, beside it, OUT with the suffix .json holding the card.",
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a .pt file written by `vidseg train`")
    parser.add_argument("out", metavar="OUT", help="the .pt file to write")
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32", "int8"],
                        help="precision of the stored weights (default: float16). int8 (networks that take "
                        "--dtype int8): the large convolutions calibrated once on --calibrate clips and stored in "
                        "int8, the rest in float16; runs with segment --dtype int8 (or auto) without float32 weights")
    parser.add_argument("--calibrate", metavar="DAVIS_ROOT",
                        help="int8: calibrate on the first frames of these DAVIS-layout videos (train split; "
                        "default: generated clips)")
    parser.add_argument("--calibrate-sequences", nargs="+", metavar="NAME",
                        help="int8: the sequences of --calibrate to use (default: the first --calibrate-videos)")
    parser.add_argument("--calibrate-videos", type=int, default=4, metavar="N", help="int8: videos (default 4)")
    parser.add_argument("--calibrate-frames", type=int, default=8, metavar="N",
                        help="int8: frames per video, from its first annotated one (default 8)")
    parser.add_argument("--card", metavar="JSON", help="JSON file with model card facts to store in the meta")
    parser.add_argument("--compress", action="store_true",
                        help="gzip the file (float16 weights shrink by about a tenth; vidseg reads it as it is)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import torch

    from vidseg.errors import VidsegError
    from vidseg.models.checkpoint import export_weights

    card = {}
    if args.card:
        try:
            card = json.loads(Path(args.card).read_text())
        except (OSError, ValueError) as exc:
            raise VidsegError(f"cannot read the model card ({exc})", args.card, "pass a JSON object file") from exc
        if not isinstance(card, dict):
            raise VidsegError("the model card is not a JSON object", args.card, "write it as {\"key\": value, ...}")
    if args.dtype == "int8":
        out = _export_int8(args, card)
    else:
        if args.calibrate or args.calibrate_sequences:
            raise VidsegError("--calibrate applies to --dtype int8 only", fix="add --dtype int8, or drop --calibrate")
        out = export_weights(args.checkpoint, args.out, getattr(torch, args.dtype), card, compress=args.compress)
    packed = ", gzip" if args.compress else ""
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {args.dtype}{packed}) and {out.with_suffix('.json')}")
    return 0


def _export_int8(args: argparse.Namespace, card: dict):
    from vidseg.errors import VidsegError
    from vidseg.inference.int8_export import davis_clips, export_int8, synthetic_clips

    for flag, value in (("--calibrate-videos", args.calibrate_videos), ("--calibrate-frames", args.calibrate_frames)):
        if value < 1:
            raise VidsegError(f"{flag} {value} must be at least 1", fix=f"e.g. {flag} 4")
    if args.calibrate_sequences and not args.calibrate:
        raise VidsegError("--calibrate-sequences needs --calibrate DAVIS_ROOT", fix="add --calibrate DAVIS_ROOT")
    if args.calibrate:
        clips, described = davis_clips(args.calibrate, args.calibrate_sequences, args.calibrate_videos,
                                       args.calibrate_frames)
    else:
        clips, described = synthetic_clips(args.calibrate_videos, args.calibrate_frames)
    print(f"calibrating on {described}")
    return export_int8(args.checkpoint, args.out, clips, described, card, compress=args.compress)
