"""Entry point of the ``vidseg`` console command."""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from vidseg import __version__
from vidseg.errors import VidsegError

SUBCOMMAND_MODULES = ("segment", "predict", "app", "demo", "data", "eval", "train", "export", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidseg", description="Video object segmentation toolkit.")
    parser.add_argument("--version", action="version", version=f"vidseg {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(f"vidseg.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"vidseg.cli.{name}":
                continue
            raise
        module.register(subparsers)
    return parser


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"vidseg: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _one_line_warning  # the command line says what happened, not where in the code
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command line as typed, for reports
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except VidsegError as exc:
        print(f"vidseg: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print("vidseg: interrupted" + (f"; {exc}" if str(exc) else ""), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
