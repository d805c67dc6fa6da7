"""The method flags that ``segment`` and ``predict`` share: ``--method``, ``--checkpoint``, every registered
method option, and the one way they turn into a method name plus build options."""

from __future__ import annotations

import argparse
import sys
from typing import Any

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


def add_method_arguments(parser: argparse.ArgumentParser) -> None:
    """``--method``, ``--checkpoint`` and one flag per option of the registered methods
    (:func:`vidseg.registry.method_options`), each in its declared ``--help`` section."""
    parser.add_argument("--method", metavar="NAME", help=_method_help())
    parser.add_argument("--checkpoint", metavar="PT", help="trained weights for a network method (from `vidseg train`)")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for option in method_options().values():
        target = parser if option.group is None else groups.setdefault(option.group,
                                                                        parser.add_argument_group(option.group))
        target.add_argument(option.flag, type=option.type, choices=option.choices, default=None,
                            metavar=option.metavar, help=option.help)


def check_method_options(args: argparse.Namespace) -> None:
    """Refuse values no method can run with, before anything is read or written (each option's own check)."""
    for option in method_options().values():
        value = getattr(args, option.name, None)
        if value is not None and option.check is not None:
            option.check(value)


def resolve_method(args: argparse.Namespace, zero_shot: bool) -> tuple[str | None, dict[str, Any]]:
    """The method to build (the best runnable one, said on stderr, when neither ``--method`` nor ``--checkpoint``
    names one; None: the checkpoint's) and the options given on the command line. An option the method does not take
    is refused."""
    from vidseg.errors import VidsegError
    from vidseg.inference.methods import choose_default_method

    method = args.method
    if method is None and not args.checkpoint:
        choice = choose_default_method(zero_shot=zero_shot)
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
    return method, options
