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
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from vidseg.constants import DTYPE_NAMES, SEGMENT_DTYPE_CHOICES
from vidseg.errors import VidsegError

ENTRY_POINT_GROUP = "vidseg.methods"
MIN_SIDE = 32  # networks round the working size to multiples of 32


@dataclass(frozen=True)
class MethodOption:
    """A setting a method's propagator takes (a keyword argument), declared once for ``vidseg segment``'s flag.

    Attributes:
        name: the keyword (``max_side``); the flag is ``--max-side``.
        type: converts the flag's text (``int``, ``float``, ``str``).
        help: the flag's ``--help`` line.
        choices, metavar: as in ``argparse``.
        check: refuses a value no method can run with, before anything is read or written: raises
            :class:`~vidseg.errors.VidsegError` (naming the flag, with a fix); None: any value of ``type``.
        group: the ``--help`` section (None: with the common options).
    """

    name: str
    type: Callable[[str], Any]
    help: str
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    check: Callable[[Any], None] | None = None
    group: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _refuse(flag: str, wrong: Callable[[Any], bool], problem: str, fix: str) -> Callable[[Any], None]:
    """A check raising ``"{flag} {value} {problem}"`` (and ``fix``) where ``wrong(value)``."""
    def check(value: Any) -> None:
        if wrong(value):
            raise VidsegError(f"{flag} {value} {problem}", fix=fix)
    return check


def _check_device(value: str) -> None:
    from vidseg.machine import check_device  # imports torch only for GPU devices

    check_device(value)


COMMON_OPTIONS = {option.name: option for option in (
    MethodOption("max_side", int, "working resolution's longer side (default: the method's own, for networks the "
                 "size they were trained at)",
                 check=_refuse("--max-side", lambda v: v < MIN_SIDE, "is too small",
                               f"use at least {MIN_SIDE} pixels, or leave it out for the method's own size")),
    MethodOption("device", str, "torch device for the network methods (cpu, cuda, cuda:1; default cpu)",
                 check=_check_device),
    MethodOption("dtype", str, "network precision (default auto: bfloat16 where the device runs it natively -- a "
                 "recent GPU, or a CPU with avx512_bf16 / amx_bf16 -- else float32; an int8 export runs in int8; int8: "
                 "the large convolutions of the S2S family, RVOS and OVSNet in int8 on the CPU, calibrated on the "
                 "first frame)", choices=SEGMENT_DTYPE_CHOICES),
    MethodOption("online_steps", int, "S2S-OL / OVSNet / match_refine: fine-tune N steps on the first given frame "
                 "before segmenting (slower, often better)", metavar="N",
                 check=_refuse("--online-steps", lambda v: v < 0, "is negative", "use 0 (off) or a positive count")),
    MethodOption("online_lr", float, "learning rate of --online-steps (default: 1e-5; match_refine 1e-4)",
                 metavar="LR",
                 check=_refuse("--online-lr", lambda v: not v > 0, "must be positive", "e.g. 1e-5, the default")),
)}
_DECLARED = dict(COMMON_OPTIONS)  # every option by name, the first declaration of each


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
        options: the settings its propagator takes from ``vidseg segment``: names of :data:`COMMON_OPTIONS`
            (``max_side``, ``device``, ...) or :class:`MethodOption` declarations of its own. Stored as their names
            (``"dtype" in spec.options``); ``declared_options`` holds the declarations. The CLI makes one flag per
            option of every registered method and refuses the others for this method.
        precisions: the float dtypes its propagator takes (with ``dtype`` among its options); ``auto`` picks
            bfloat16 only where it is one of them.
        int8: its propagator (a :class:`vidseg.inference.network.NetworkPropagator`) takes ``dtype="int8"`` (large
            convolutions in int8, calibrated per video) and runs int8 exports (``vidseg export --dtype int8``).
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
    options: tuple[str | MethodOption, ...] = ("max_side",)
    precisions: tuple[str, ...] = DTYPE_NAMES
    int8: bool = False
    declared_options: tuple[MethodOption, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        declared = []
        for option in self.options:
            if isinstance(option, str):  # a common option, or one declared before (dataclasses.replace)
                if option not in _DECLARED:
                    raise ValueError(f"method {self.name!r}: unknown option {option!r} (common ones: "
                                     f"{', '.join(COMMON_OPTIONS)}; declare others as a MethodOption)")
                option = _DECLARED[option]
            _DECLARED.setdefault(option.name, option)
            declared.append(option)
        object.__setattr__(self, "declared_options", tuple(declared))
        object.__setattr__(self, "options", tuple(option.name for option in declared))

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

_CASCADE = "ovsnet cascade"
_OVSNET_OPTIONS = (
    "max_side", "device", "dtype",
    MethodOption("test_size", int, "detector's shorter side (default: the network's; the paper's 800)", metavar="PX",
                 group=_CASCADE, check=_refuse("--test-size", lambda v: v < MIN_SIDE, "is too small",
                                               f"use at least {MIN_SIDE} pixels (paper: 800)")),
    MethodOption("flow", str, "optical flow that warps the previous masks: dis (OpenCV, default) or raft (torchvision "
                 "RAFT-small, needs its weights)", choices=("dis", "raft"), group=_CASCADE),
    MethodOption("flow_weights", str, "torchvision RAFT-small weights file for --flow raft", metavar="PTH",
                 group=_CASCADE),
    MethodOption("rho_iou", float, "IoU with the warped mask above which a detection is taken (paper: 0.3)",
                 metavar="T", group=_CASCADE, check=_refuse("--rho-iou", lambda v: not 0 <= v < 1, "is not an IoU",
                                                            "use a value in [0, 1), e.g. 0.3")),
    MethodOption("rho_reid", float, "re-ID distance threshold (default: the one calibrated for the network's "
                 "embeddings)", metavar="D", group=_CASCADE,
                 check=_refuse("--rho-reid", lambda v: not v > 0, "must be positive",
                               "leave it out for the calibrated value")),
    "online_steps", "online_lr",
)

_LONG_TERM = MethodOption(
    "long_term", int, "match / match_refine: also keep up to N confident older frames (one every 10 that leave the "
    "16 recent ones) as memory matched over the whole frame, for long videos and objects hidden a while (default: "
    "match 0, match_refine its network's)",
    metavar="N", check=_refuse("--long-term", lambda v: v < 0, "is negative", "use 0 (off) or a positive count"))

_BACKGROUND_STRIDE = MethodOption(
    "background_stride", int, "match / match_refine: of the frames matched over the whole frame (the given ones, "
    "long-term), keep only 1 in NxN of the background cells far from the objects (faster, most on long videos with "
    "--long-term; default: match 1, match_refine its network's)",
    metavar="N", check=_refuse("--background-stride", lambda v: v < 1, "is below 1", "use 1 (every cell) or more"))

_BUILTIN = (
    MethodSpec("flow", "dense optical flow (OpenCV DIS) carries each mask to the next frame; no weights",
               propagator="vidseg.inference.flow:FlowPropagator"),
    MethodSpec("match", "label propagation by matching frozen ImageNet features (EfficientNet-Lite); no VOS "
               "training", propagator="vidseg.inference.match:MatchPropagator",
               options=("max_side", "device", "dtype", _LONG_TERM, _BACKGROUND_STRIDE)),
    MethodSpec("match_refine", "match's label propagation, then a trained refiner draws each mask from the labels and "
               "the frame's frozen ImageNet features", propagator="vidseg.inference.match:build_match_refine_propagator",
               config="vidseg.models.match_refine:MatchRefineConfig", model="vidseg.models.match_refine:build_model",
               trainer="vidseg.training.match_refine:MatchRefineAdapter", bundled="match_refine_cpu.pt",
               options=("max_side", "device", "dtype", "online_steps", "online_lr", "long_term", "background_stride")),
    MethodSpec("hs2s", "hybrid S2S: ConvLSTM + first/previous-frame references (or, merge: readout, as bundled: a "
               "residual on match's memory readout)", bundled="hs2s_cpu.pt", **_RECURRENT),
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
               options=_OVSNET_OPTIONS, precisions=("float32",), int8=True),
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


def method_options() -> dict[str, MethodOption]:
    """Every option of every registered method, each once (its first declaration), in registration order: the
    flags of ``vidseg segment``."""
    options: dict[str, MethodOption] = {}
    for spec in _load().values():
        for option in spec.declared_options:
            options.setdefault(option.name, option)
    return options


def zero_shot_methods() -> list[str]:
    return [name for name, spec in _load().items() if spec.zero_shot]


__all__ = ["COMMON_OPTIONS", "ENTRY_POINT_GROUP", "MIN_SIDE", "MethodOption", "MethodSpec", "get_method", "method_names",
           "method_options", "register", "unregister",
           "zero_shot_methods"]
