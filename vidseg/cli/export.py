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
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"],
                        help="precision of the stored weights (default: float16)")
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
    out = export_weights(args.checkpoint, args.out, getattr(torch, args.dtype), card, compress=args.compress)
    packed = ", gzip" if args.compress else ""
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {args.dtype}{packed}) and {out.with_suffix('.json')}")
    return 0
