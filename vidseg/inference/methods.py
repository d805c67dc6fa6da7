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


def _recurrent(method: str) -> Callable[..., Propagator]:
    def build(checkpoint: str | None = None, device: str = "cpu", **options: Any) -> Propagator:
        from vidseg.inference.recurrent import load_propagator

        if checkpoint is None:
            raise VidsegError(
                f"method {method!r} needs trained weights",
                fix=f"pass --checkpoint FILE.pt (train one with `vidseg train configs/{method}.yaml`)",
            )
        propagator = load_propagator(checkpoint, device, **options)
        if propagator.name != method:
            raise VidsegError(
                f"checkpoint holds a {propagator.name} network, not {method}", checkpoint, f"use --method {propagator.name}"
            )
        return propagator

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
        raise VidsegError(f"unknown method {name!r}", fix=f"use one of: {', '.join(available_methods())}")
    return _BUILDERS[name](**options)
