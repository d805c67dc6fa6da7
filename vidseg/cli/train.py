"""``vidseg train CONFIG [key=value ...]``: train any trainable method from a YAML config (DDP under torchrun)."""

from __future__ import annotations

import argparse
from pathlib import Path

from vidseg.machine import THREADS_HELP, parse_threads, set_threads


def _trainable() -> list[str]:
    from vidseg.registry import get_method, method_names

    return [name for name in method_names() if get_method(name).trainable]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a network from a YAML config",
        description=f"Train a method ({', '.join(_trainable())}) from a YAML config (sections model: with "
        "method:, data:, train:). Writes "
        "last.pt, best.pt, log.csv, config.yaml and TensorBoard logs (tb/) to train.out_dir. Launch with "
        "`torchrun --nproc_per_node N -m vidseg.cli.main train ...` for distributed training.",
        epilog="examples:\n"
        "  VIDSEG_SHARED=../shared vidseg train configs/cpu/rvos_zero_shot.yaml\n"
        "  vidseg train configs/cpu/hs2s.yaml train.steps=1000 data.batch_size=8 --out runs/try\n"
        "  vidseg train configs/cpu/hs2s.yaml --out runs/try --resume\n"
        "  vidseg train hs2s                  # a config shipped with the package, by name (cpu/ovsnet, ...)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", metavar="CONFIG",
                        help="YAML config file, or the name of one shipped with the package (hs2s, cpu/rvos_one_shot, ...)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. train.steps=1000 data.batch_size=8 data.size=[128,224]")
    parser.add_argument("--resume", action="store_true", help="continue the run in the output folder from last.pt")
    parser.add_argument("--out", metavar="DIR", help="output folder (overrides train.out_dir)")
    parser.add_argument("--threads", type=parse_threads, metavar="N",
                        help=THREADS_HELP + " (default: all cores)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vidseg.config import load_config
    from vidseg.training.engine import train

    set_threads(args.threads)
    config = load_config(args.config, args.overrides)
    if args.out:
        config.train.out_dir = str(Path(args.out).expanduser().absolute())
    result = train(config, resume=args.resume)
    best = "" if result.best_metric is None else f", best J&F {result.best_metric:.4f} ({result.best_checkpoint})"
    print(f"trained {result.step} steps -> {result.last_checkpoint}{best}")
    return 0
