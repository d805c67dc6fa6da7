"""The registry of methods a session can run, by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vidseg.errors import VidsegError
from vidseg.inference.session import Propagator

RECURRENT_METHODS = ("hs2s", "s2s++", "s2s")


def _flow(**options: Any) -> Propagator:
    from vidseg.inference.flow import FlowPropagator

    return FlowPropagator(**options)


def network_propagator(checkpoint: str, method: str | None = None, device: str = "cpu", **options: Any) -> Propagator:
    """The network of a ``vidseg train`` checkpoint as a method; ``method``, when given, must match it."""
    from vidseg.inference.recurrent import load_propagator

    if method is not None and method not in RECURRENT_METHODS:
        _unknown(method)
    propagator = load_propagator(checkpoint, device, **options)
    if method is not None and propagator.name != method:
        raise VidsegError(
            f"checkpoint holds a {propagator.name} network, not {method}", checkpoint, f"use --method {propagator.name}"
        )
    return propagator


def _recurrent(method: str) -> Callable[..., Propagator]:
    def build(checkpoint: str | None = None, device: str = "cpu", **options: Any) -> Propagator:
        if checkpoint is None:
            raise VidsegError(
                f"method {method!r} needs trained weights",
                fix=f"pass --checkpoint FILE.pt (train one with `vidseg train configs/{method}.yaml`)",
            )
        return network_propagator(checkpoint, method, device, **options)

    return build


_BUILDERS: dict[str, Callable[..., Propagator]] = {
    **{name: _recurrent(name) for name in RECURRENT_METHODS},
    "flow": _flow,
}


def available_methods() -> list[str]:
    """Names of the methods a session can run (the recurrent ones need a checkpoint)."""
    return list(_BUILDERS)


def default_method() -> str:
    """The best method that runs without a checkpoint."""
    return "flow"


def build_propagator(name: str, **options: Any) -> Propagator:
    """Build a method by name: ``flow`` (no weights) or ``hs2s`` / ``s2s++`` / ``s2s`` (``checkpoint=...``)."""
    if name not in _BUILDERS:
        _unknown(name)
    return _BUILDERS[name](**options)


def _unknown(name: str) -> None:
    raise VidsegError(f"unknown method {name!r}", fix=f"use one of: {', '.join(available_methods())}")
