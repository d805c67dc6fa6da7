"""Streaming inference: a per-video session object around a method's propagator."""

from vidseg.inference.methods import (
    MethodChoice,
    build_propagator,
    choose_default_method,
    default_method,
    runnable_methods,
)
from vidseg.inference.session import FrameUpdate, InferenceSession, ObjectManager, Prediction, Propagator

__all__ = [
    "FrameUpdate",
    "InferenceSession",
    "MethodChoice",
    "ObjectManager",
    "Prediction",
    "Propagator",
    "build_propagator",
    "choose_default_method",
    "default_method",
    "runnable_methods",
]
