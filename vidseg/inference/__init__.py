"""Streaming inference: a per-video session object around a method's propagator."""

from vidseg.inference.methods import (
    available_methods,
    build_propagator,
    choose_default_method,
    default_method,
    runnable_methods,
)
from vidseg.inference.session import InferenceSession, Propagator

__all__ = [
    "InferenceSession",
    "Propagator",
    "available_methods",
    "build_propagator",
    "choose_default_method",
    "default_method",
    "runnable_methods",
]
