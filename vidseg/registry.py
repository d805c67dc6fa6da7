"""Every method vidseg knows, declared once.

A :class:`MethodSpec` names a method, what it can do and where its parts live. The parts are referenced
as ``"module:attribute"`` strings and imported only when used, so reading the registry (CLI choices and
``--help``) needs neither torch nor the networks, and each layer loads only its own part: the models
layer ``config`` and ``model``, inference ``propagator``, training ``trainer``.

Other packages add methods through the ``vidseg.methods`` entry-point group: each entry point names a
:class:`MethodSpec` (or a list of them). In-process code can call :func:`register`.
"""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from vidseg.constants import DTYPE_NAMES
from vidseg.errors import VidsegError

ENTRY_POINT_GROUP = "vidseg.methods"


@dataclass(frozen=True)
class MethodSpec:
    """One method.

    Attributes:
        name: the ``--method`` name.
        summary: one line for ``--help``.
        propagator: builds the inference method. Weightless methods: ``build(**options)``; methods with
            weights: ``build(checkpoint_content, source, **options)`` (see :mod:`vidseg.models.checkpoint`).
        config: the model config dataclass (``from_dict`` / ``to_dict``; a ``method`` field), or None.
        model: ``build(config) -> nn.Module``, or None for methods without weights.
        trainer: the training adapter class (:class:`vidseg.training.adapter.TrainingAdapter`), or None.
        bundled: file name of weights shipped in :mod:`vidseg.weights`, or None.
        one_shot: follows objects given as masks.
        zero_shot: discovers objects by itself (``vidseg segment`` without ``--mask``).
        options: the settings its propagator takes from ``vidseg segment`` (``max_side``, ``device``, ...);
            the CLI refuses the others for this method.
        precisions: the float dtypes its propagator takes (with ``dtype`` among its options); ``auto`` picks
            bfloat16 only where it is one of them.
        int8: its propagator takes ``dtype="int8"`` (large convolutions in int8, calibrated per video) and runs
            int8 exports (``vidseg export --dtype int8``); it exposes ``model``, the network it runs, and
            ``optimize``, whether that network's BatchNorm is folded.
    """

    name: str
    summary: str
    propagator: str
    config: str | None = None
    model: str | None = None
    trainer: str | None = None
    bundled: str | None = None
    one_shot: bool = True
    zero_shot: bool = False
    options: tuple[str, ...] = ("max_side",)
    precisions: tuple[str, ...] = DTYPE_NAMES
    int8: bool = False

    @property
    def needs_checkpoint(self) -> bool:
        """Whether the method runs trained weights (bundled or ``--checkpoint``)."""
        return self.model is not None

    @property
    def trainable(self) -> bool:
        return self.trainer is not None

    def load(self, part: str) -> Any:
        """Import and return one part (``propagator``, ``config``, ``model`` or ``trainer``)."""
        reference = getattr(self, part)
        if reference is None:
            raise VidsegError(f"method {self.name!r} has no {part}")
        module, _, attribute = reference.partition(":")
        return getattr(importlib.import_module(module), attribute)


_RECURRENT = {
    "options": ("max_side", "device", "dtype", "online_steps", "online_lr"),
    "config": "vidseg.models.s2s:S2SConfig",
    "model": "vidseg.models.s2s:build_model",
    "propagator": "vidseg.inference.recurrent:build_recurrent_propagator",
    "trainer": "vidseg.training.recurrent:RecurrentAdapter",
    "int8": True,
}

_BUILTIN = (
    MethodSpec("flow", "dense optical flow (OpenCV DIS) carries each mask to the next frame; no weights",
               propagator="vidseg.inference.flow:FlowPropagator"),
    MethodSpec("match", "label propagation by matching frozen ImageNet features (EfficientNet-Lite); no VOS "
               "training", propagator="vidseg.inference.match:MatchPropagator", options=("max_side", "device")),
    MethodSpec("match_refine", "match's label propagation, then a trained refiner draws each mask from the labels and "
               "the frame's frozen ImageNet features", propagator="vidseg.inference.match:build_match_refine_propagator",
               config="vidseg.models.match_refine:MatchRefineConfig", model="vidseg.models.match_refine:build_model",
               trainer="vidseg.training.match_refine:MatchRefineAdapter", bundled="match_refine_cpu.pt",
               options=("max_side", "device")),
    MethodSpec("hs2s", "hybrid S2S: ConvLSTM + first/previous-frame references", **_RECURRENT),
    MethodSpec("s2s++", "S2S with skip-memory and border head", bundled="s2s++_cpu.pt", **_RECURRENT),
    MethodSpec("s2s", "sequence-to-sequence ConvLSTM", **_RECURRENT),
    MethodSpec("rvos", "recurrent multi-object VOS: object slots with spatial + temporal ConvLSTMs; one-shot "
               "(masks given) or zero-shot (discovers objects) by its checkpoint",
               propagator="vidseg.inference.rvos:build_rvos_propagator", config="vidseg.models.rvos:RVOSConfig",
               model="vidseg.models.rvos:build_model", trainer="vidseg.training.rvos:RVOSAdapter", bundled="rvos_cpu.pt",
               zero_shot=True, options=("max_side", "device", "dtype"), int8=True),
    MethodSpec("ovsnet", "detection-based one-pass VOS: class-agnostic Mask R-CNN candidates matched by IoU with the "
               "flow-warped mask, then by re-ID embeddings, else the warped mask refined by mask-guided attention",
               propagator="vidseg.inference.ovsnet:build_ovsnet_propagator", config="vidseg.models.ovsnet:OVSNetConfig",
               model="vidseg.models.ovsnet:build_model", trainer="vidseg.training.ovsnet:OVSNetAdapter",
               options=("max_side", "device", "dtype", "test_size", "flow", "flow_weights", "rho_iou", "rho_reid",
                        "online_steps", "online_lr"), precisions=("float32",), int8=True),
)

_methods: dict[str, MethodSpec] = {}


def _load() -> dict[str, MethodSpec]:
    if not _methods:
        for spec in _BUILTIN:
            _methods[spec.name] = spec
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            try:  # a broken plugin must not take the built-in methods down with it
                loaded = entry.load()
                for spec in loaded if isinstance(loaded, (list, tuple)) else [loaded]:
                    register(spec)
            except Exception as exc:  # noqa: BLE001 -- plugin code may raise anything
                warnings.warn(f"vidseg: method plugin {entry.name!r} ({entry.value}) not loaded: {exc}", stacklevel=2)
    return _methods


def register(spec: MethodSpec, replace: bool = False) -> MethodSpec:
    """Add a method (``replace`` lets a spec take over an existing name)."""
    if not isinstance(spec, MethodSpec):
        raise TypeError(f"register() takes a MethodSpec, got {type(spec).__name__}")
    methods = _load()
    if spec.name in methods and not replace and methods[spec.name] != spec:
        raise ValueError(f"a method named {spec.name!r} is registered already")
    methods[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    _load().pop(name, None)


def method_names() -> list[str]:
    """Every registered method, in declaration order."""
    return list(_load())


def get_method(name: str) -> MethodSpec:
    """The spec of ``name``; a one-line error listing the known methods otherwise."""
    methods = _load()
    if name not in methods:
        raise VidsegError(f"unknown method {name!r}", fix=f"use one of: {', '.join(methods)}")
    return methods[name]


def zero_shot_methods() -> list[str]:
    return [name for name, spec in _load().items() if spec.zero_shot]


__all__ = ["ENTRY_POINT_GROUP", "MethodSpec", "get_method", "method_names", "register", "unregister",
           "zero_shot_methods"]
