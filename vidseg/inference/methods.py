"""The registry of methods a session can run, by name."""

from __future__ import annotations

from collections.abc import Callable

from vidseg.errors import VidsegError
from vidseg.inference.session import Propagator


def _flow(**options) -> Propagator:
    from vidseg.inference.flow import FlowPropagator

    return FlowPropagator(**options)


_BUILDERS: dict[str, Callable[..., Propagator]] = {"flow": _flow}


def available_methods() -> list[str]:
    """Names of the methods that can run now, best first."""
    return list(_BUILDERS)


def build_propagator(name: str, **options) -> Propagator:
    """Build a method by name (``flow``, ...)."""
    if name not in _BUILDERS:
        raise VidsegError(f"unknown method {name!r}", fix=f"use one of: {', '.join(available_methods())}")
    return _BUILDERS[name](**options)
