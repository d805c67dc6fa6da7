"""The registry of methods a session can run, by name, and the choice of the default one."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vidseg.errors import VidsegError
from vidseg.inference.session import Propagator
from vidseg.weights import (
    BUNDLED_FILES,
    bundled_card,
    bundled_content,
    bundled_methods,
    bundled_path,
)

RECURRENT_METHODS = ("hs2s", "s2s++", "s2s")  # the networks of vidseg.models.checkpoint.METHODS


def _flow(**options: Any) -> Propagator:
    from vidseg.inference.flow import FlowPropagator

    return FlowPropagator(**options)


def network_propagator(
    checkpoint: str | os.PathLike | None, method: str | None = None, device: str = "cpu", **options: Any
) -> Propagator:
    """The network of a ``vidseg train`` checkpoint as a method; ``method``, when given, must match it.
    Without a checkpoint, the weights bundled for ``method`` are used."""
    from vidseg.inference.recurrent import load_propagator, propagator_from_checkpoint

    if method is not None and method not in RECURRENT_METHODS:
        _unknown(method)
    if checkpoint is None:
        if method is None:
            raise VidsegError("a network method needs --method or --checkpoint")
        if method not in bundled_methods():
            bundled = f"; bundled: {', '.join(bundled_methods())}" if bundled_methods() else ""
            raise VidsegError(
                f"method {method!r} needs trained weights{bundled}",
                bundled_path(method) if method in BUNDLED_FILES else None,
                f"pass --checkpoint FILE.pt (train one with `vidseg train configs/{method}.yaml`)",
            )
        return propagator_from_checkpoint(bundled_content(method), bundled_path(method), device, **options)
    propagator = load_propagator(checkpoint, device, **options)
    if method is not None and propagator.name != method:
        raise VidsegError(
            f"checkpoint holds a {propagator.name} network, not {method}", checkpoint, f"use --method {propagator.name}"
        )
    return propagator


def _recurrent(method: str) -> Callable[..., Propagator]:
    def build(checkpoint: str | os.PathLike | None = None, device: str = "cpu", **options: Any) -> Propagator:
        return network_propagator(checkpoint, method, device, **options)

    return build


_BUILDERS: dict[str, Callable[..., Propagator]] = {
    **{name: _recurrent(name) for name in RECURRENT_METHODS},
    "flow": _flow,
}


def available_methods() -> list[str]:
    """Names of every method (the networks need a checkpoint unless their weights are bundled)."""
    return list(_BUILDERS)


def runnable_methods() -> list[str]:
    """The methods that build with no arguments: ``flow`` and every network with bundled weights."""
    return ["flow", *bundled_methods()]


@dataclass(frozen=True)
class MethodChoice:
    name: str
    reason: str


def choose_default_method() -> MethodChoice:
    """The best runnable method by held-out J&F: a bundled network when its model card says it beats
    flow on its held-out videos, else flow."""
    best = MethodChoice("flow", "no bundled network weights are installed")
    best_score = float("-inf")
    for method in bundled_methods():
        heldout = bundled_card(method).get("heldout", {})
        score, flow_score = heldout.get("J&F"), heldout.get("flow J&F")
        if score is None or flow_score is None:
            continue
        videos = heldout.get("videos", "its held-out videos")
        if score > flow_score and score > best_score:
            reason = f"bundled weights; held-out J&F {score:.3f} vs flow {flow_score:.3f} on {videos}"
            best, best_score = MethodChoice(method, reason), score
        elif best_score == float("-inf"):
            reason = f"beats the bundled {method}: J&F {flow_score:.3f} vs {score:.3f} on {videos}"
            best = MethodChoice("flow", reason)
    return best


def default_method() -> str:
    """The name of the best runnable method (see :func:`choose_default_method`)."""
    return choose_default_method().name


def build_propagator(name: str, **options: Any) -> Propagator:
    """Build a method by name: ``flow`` (no weights) or ``hs2s`` / ``s2s++`` / ``s2s`` (``checkpoint=...``,
    or the bundled weights when there are some)."""
    if name not in _BUILDERS:
        _unknown(name)
    return _BUILDERS[name](**options)


def _unknown(name: str) -> None:
    raise VidsegError(f"unknown method {name!r}", fix=f"use one of: {', '.join(available_methods())}")
