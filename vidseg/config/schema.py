"""The training config file: YAML with ``model:`` (``method:`` plus the fields of that method's config
class, declared in :mod:`vidseg.registry`), ``data:`` (:class:`DataConfig`) and ``train:`` (:class:`TrainConfig`)
sections.

Command-line overrides ``key.sub=value`` (the value parsed as YAML, so ``[1, 3]`` is a list) are applied
before validation; ``data.train.0.root=...`` indexes lists. Unknown keys and bad values raise
:class:`~vidseg.errors.VidsegError` naming the file and the key. Paths (``root``, ``out_dir``) expand ``~``
and environment variables (``${VIDSEG_DATA}``); relative paths are taken from the current directory.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vidseg.errors import VidsegError
from vidseg.registry import get_method, method_names

SOURCE_TYPES = ("davis", "youtube_vos", "synth", "composite", "lookalike", "crossing")
GENERATED_FROM_VIDEOS = ("composite", "lookalike", "crossing")  # written from the real videos of ``source``
LR_SCHEDULES = ("constant", "step", "cosine")
OPTIMIZERS = ("adam", "sgd")
AMP_MODES = ("auto", "off", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
_COMMON_SOURCE_KEYS = {"type", "root", "weight", "sequences"}
_TYPE_KEYS = {
    "davis": {"year", "split", "resolution"},
    "youtube_vos": {"split"},
    "synth": {"num_videos", "num_frames", "height", "width", "seed"},
    "composite": {"source", "year", "resolution", "num_videos", "num_frames", "height", "width", "seed", "max_pasted",
                  "still_fraction"},
    "lookalike": {"source", "year", "resolution"},
    "crossing": {"source", "year", "resolution"},
}
_VAL_KEYS = {"max_frames", "max_sequences", "max_side"}
SHIPPED = Path(__file__).resolve().parents[1] / "configs"  # the configs installed with the package
_UNSET_VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


@dataclass
class LossConfig:
    """``L = lam * balanced BCE + (1 - lam) * border CE`` (paper), optionally mixed with -log soft IoU."""

    lam: float = 0.8
    iou_weight: float = 0.0
    max_distance: float = 20.0


@dataclass
class SamplingSchedule:
    """Curriculum: teacher forcing for ``teacher_steps``, then the probability of feeding the model's own
    previous prediction (per sample and frame) rises linearly to ``max_probability`` over ``ramp_steps``."""

    teacher_steps: int = 0
    ramp_steps: int = 0
    max_probability: float = 0.0

    def probability(self, step: int) -> float:
        if step < self.teacher_steps or self.max_probability <= 0:
            return 0.0
        if self.ramp_steps <= 0:
            return float(self.max_probability)
        return float(self.max_probability * min(1.0, (step - self.teacher_steps + 1) / self.ramp_steps))


@dataclass
class SourceConfig:
    """One dataset: ``type`` davis | youtube_vos | synth | composite | lookalike | crossing, its ``root`` and mixing
    ``weight``.

    ``split`` defaults to ``train`` (DAVIS), ``train-80`` (YouTube-VOS) and every sequence (synth; DAVIS
    with ``split: all``). A ``synth`` root that does not exist is generated with ``num_videos`` x
    ``num_frames`` frames of ``height`` x ``width`` from ``seed``. A ``composite`` root that does not exist
    is generated the same way from the real videos ``sequences`` of the DAVIS root ``source`` (``year``,
    ``resolution``): their objects pasted over each other's backgrounds (:mod:`vidseg.data.composite`). ``lookalike``
    and ``crossing`` roots are generated from them too, one two-object clip per video (:mod:`vidseg.data.lookalike`:
    the object with its own mirrored, later copy; the object crossed by the next video's).
    """

    type: str = "davis"
    root: str = ""
    weight: float = 1.0
    sequences: list[str] | None = None
    year: str = "2017"
    split: str | None = None
    resolution: str | None = None
    num_videos: int = 40
    num_frames: int = 40
    height: int = 256
    width: int = 448
    seed: int = 0
    source: str = ""
    max_pasted: int = 3
    still_fraction: float = 0.25

    def __post_init__(self) -> None:
        if self.type not in SOURCE_TYPES:
            raise ValueError(f"type must be one of {SOURCE_TYPES}, got {self.type!r}")
        if not self.root:
            raise ValueError("root is required")
        if self.weight < 0:
            raise ValueError("weight must be non-negative")
        self.year = str(self.year)
        if min(self.num_videos, self.num_frames) < 1:
            raise ValueError("num_videos and num_frames must be positive")
        if self.type in GENERATED_FROM_VIDEOS and not self.source:
            raise ValueError(f"a {self.type} source needs source: the DAVIS root its real videos come from")


@dataclass
class ValConfig(SourceConfig):
    """The held-out source plus ``max_frames`` / ``max_sequences`` (0 = all) and the working ``max_side``
    of validation (default: the longer side of ``data.size``)."""

    max_frames: int = 0
    max_sequences: int = 0
    max_side: int | None = None


@dataclass
class DataConfig:
    """Training clips. ``clip_length`` is an int, a ``[min, max]`` range or a schedule
    ``[[step, length_or_range], ...]`` starting at step 0; ``labelled_only_steps`` trains the first steps on
    annotated frames only. ``batch_size`` is per process."""

    size: tuple[int, int] = (256, 448)
    batch_size: int = 4
    workers: int = 2
    clip_length: Any = 5
    stride: Any = (1, 3)
    labelled_only_steps: int = 0
    samples_per_epoch: int | None = None
    augment: bool = True
    train: list[SourceConfig] = field(default_factory=list)
    val: ValConfig | None = None

    def __post_init__(self) -> None:
        size = tuple(int(s) for s in self.size)
        if len(size) != 2 or min(size) < 32 or size[0] % 32 or size[1] % 32:
            raise ValueError(f"size must be [height, width], multiples of 32, got {list(self.size)}")
        self.size = size
        if self.batch_size < 1 or self.workers < 0 or self.labelled_only_steps < 0:
            raise ValueError("batch_size must be positive, workers and labelled_only_steps non-negative")
        if self.samples_per_epoch is not None and self.samples_per_epoch < 1:
            raise ValueError("samples_per_epoch must be positive")
        if not self.train:
            raise ValueError("train needs at least one source")
        self.stride = _length_range(self.stride, "stride")
        clip_phases(self)  # validates clip_length


@dataclass
class TrainConfig:
    """Optimisation, schedule, precision, logging and output of a run."""

    steps: int = 1000
    optimizer: str = "adam"
    lr: float = 1e-4
    momentum: float = 0.9  # SGD only
    lr_schedule: str = "constant"
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float | None = None
    amp: str = "auto"
    cpu_bf16: bool = False
    seed: int = 0
    loss: LossConfig = field(default_factory=LossConfig)
    sampling: SamplingSchedule = field(default_factory=SamplingSchedule)
    log_every: int = 10
    val_every: int = 0
    checkpoint_every: int = 500
    out_dir: str = "runs/train"
    device: str = "auto"
    progress: bool = True
    init_from: str | None = None  # a checkpoint to start from (fine-tuning; see Trainer), e.g. a bundled model

    def __post_init__(self) -> None:
        checks = [
            (self.steps >= 1, "steps must be positive"),
            (self.lr > 0, "lr must be positive"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}"),
            (0 <= self.momentum < 1, "momentum must be in [0, 1)"),
            (self.lr_schedule in LR_SCHEDULES, f"lr_schedule must be one of {LR_SCHEDULES}"),
            (self.amp in AMP_MODES, f"amp must be one of {AMP_MODES}"),
            (self.device in DEVICES or self.device.startswith("cuda:"), f"device must be one of {DEVICES}"),
            (self.seed >= 0, "seed must be non-negative"),
            (min(self.log_every, self.checkpoint_every) >= 1, "log_every and checkpoint_every must be positive"),
            (self.val_every >= 0, "val_every must be non-negative (0: at the end only)"),
            (self.grad_clip is None or self.grad_clip > 0, "grad_clip must be positive (or null: off)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclass
class RunConfig:
    """A whole config file; ``source`` is the file it came from."""

    model: Any  # the config dataclass of model.method (see vidseg.registry)
    data: DataConfig
    train: TrainConfig
    source: str = "<dict>"

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (for ``config.yaml`` and checkpoints)."""
        out = _plain({"model": self.model.to_dict(), "data": self.data, "train": self.train})
        data = out["data"]
        data["train"] = [_source_dict(s) for s in data["train"]]
        if data["val"] is not None:
            data["val"] = _source_dict(data["val"], val=True)
        return out


# ---------------------------------------------------------------------------------------------- helpers


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _source_dict(values: dict[str, Any], val: bool = False) -> dict[str, Any]:
    allowed = _COMMON_SOURCE_KEYS | _TYPE_KEYS[values["type"]] | (_VAL_KEYS if val else set())
    return {k: v for k, v in values.items() if k in allowed}


def _length_range(value: Any, name: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        low = high = value
    elif isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        low, high = value
    else:
        raise ValueError(f"{name} must be an int or [min, max], got {value!r}")
    if not 1 <= low <= high:
        raise ValueError(f"{name} needs 1 <= min <= max, got {value!r}")
    return int(low), int(high)


def clip_phases(data: DataConfig) -> list[tuple[int, tuple[int, int], bool]]:
    """``(first step, clip length range, labelled_only)`` of each data phase, in step order."""
    value = data.clip_length
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (list, tuple)) for v in value):
        schedule = []
        for entry in value:
            if len(entry) != 2 or isinstance(entry[0], bool) or not isinstance(entry[0], int) or entry[0] < 0:
                raise ValueError(f"clip_length schedule entries are [step, length or [min, max]], got {entry!r}")
            schedule.append((int(entry[0]), _length_range(entry[1], "clip_length")))
        schedule.sort()
        if schedule[0][0] != 0 or len({s for s, _ in schedule}) != len(schedule):
            raise ValueError("a clip_length schedule starts at step 0 and has one entry per step")
    else:
        schedule = [(0, _length_range(value, "clip_length"))]
    starts = sorted({s for s, _ in schedule} | ({data.labelled_only_steps} if data.labelled_only_steps else set()))
    phases = []
    for start in starts:
        length = [r for s, r in schedule if s <= start][-1]
        phases.append((start, length, start < data.labelled_only_steps))
    return phases


def _expand_path(value: str, key: str, source: str) -> str:
    expanded = os.path.expandvars(os.path.expanduser(value))
    missing = _UNSET_VAR.search(expanded)
    if missing:
        raise VidsegError(f"{key}: environment variable {missing.group(1)} is not set", source,
                          f"export {missing.group(1)}=... or override {key}=PATH")
    return str(Path(expanded).absolute())


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """Check ``value`` against the type hint ``hint`` (nested dataclasses are built recursively)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        hint = next(o for o in options if o is not type(None))
        origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key, source)
    bad = None
    if hint is bool and not isinstance(value, bool):
        bad = "true or false"
    elif hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        bad = "an integer"
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            bad = "a number"
        else:
            value = float(value)
    elif hint is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        elif not isinstance(value, str):
            bad = "a string"
    elif origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            bad = "a list"
        else:
            (inner, *_) = typing.get_args(hint) or (Any,)
            return [_coerce(v, inner, f"{key}.{i}", source) for i, v in enumerate(value)]
    if bad:
        raise VidsegError(f"{key} must be {bad}, got {value!r}", source)
    return value


def _build(cls: type, values: Any, section: str, source: str, allowed: set[str] | None = None) -> Any:
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise VidsegError(f"{section} must be a mapping of keys to values, got {values!r}", source)
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)} if allowed is None else allowed
    unknown = sorted(str(k) for k in values if k not in known)
    if unknown:
        raise VidsegError(f"unknown key {section}.{unknown[0]}", source, f"valid keys of {section}: {', '.join(sorted(known))}")
    kwargs = {name: _coerce(value, hints[name], f"{section}.{name}", source) for name, value in values.items()}
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise VidsegError(f"{section}: {exc}", source) from None


def _build_source(values: Any, key: str, source: str, cls: type) -> SourceConfig:
    if not isinstance(values, dict):
        raise VidsegError(f"{key} must be a mapping with type and root, got {values!r}", source)
    kind = values.get("type", "davis")
    if kind not in SOURCE_TYPES:
        raise VidsegError(f"{key}.type must be one of {', '.join(SOURCE_TYPES)}, got {kind!r}", source)
    allowed = _COMMON_SOURCE_KEYS | _TYPE_KEYS[kind] | (_VAL_KEYS if cls is ValConfig else set())
    config = _build(cls, values, key, source, allowed)
    config.root = _expand_path(config.root, f"{key}.root", source)
    if config.source:
        config.source = _expand_path(config.source, f"{key}.source", source)
    return config


def _build_model_config(values: Any, source: str) -> Any:
    if not isinstance(values, dict) or "method" not in values:
        raise VidsegError("model must be a mapping with method: and that method's options", source)
    trainable = [name for name in method_names() if get_method(name).trainable]
    if values["method"] not in trainable:
        raise VidsegError(f"model.method {values['method']!r} cannot be trained", source,
                          f"use one of: {', '.join(trainable)}")
    return _build(get_method(values["method"]).load("config"), values, "model", source)


def parse_config(values: dict[str, Any], source: str = "<dict>") -> RunConfig:
    """Validate a config mapping (as read from YAML, overrides applied) into a :class:`RunConfig`."""
    if not isinstance(values, dict):
        raise VidsegError("a config file is a mapping with model:, data: and train: sections", source)
    unknown = sorted(str(k) for k in values if k not in ("model", "data", "train"))
    if unknown:
        raise VidsegError(f"unknown key {unknown[0]}", source, "valid sections: model, data, train")
    model = _build_model_config(values.get("model"), source)
    data_values = dict(values.get("data") or {})
    sources = data_values.pop("train", None)
    val = data_values.pop("val", None)
    if not isinstance(sources, list) or not sources:
        raise VidsegError("data.train must be a list of sources ({type, root, ...})", source)
    data_values["train"] = [_build_source(s, f"data.train.{i}", source, SourceConfig) for i, s in enumerate(sources)]
    data_values["val"] = None if val is None else _build_source(val, "data.val", source, ValConfig)
    hints = typing.get_type_hints(DataConfig)
    kwargs = {}
    for name, value in data_values.items():
        if name not in hints:
            raise VidsegError(f"unknown key data.{name}", source, f"valid keys of data: {', '.join(sorted(hints))}")
        plain = name in ("train", "val", "clip_length", "stride", "size")
        kwargs[name] = value if plain else _coerce(value, hints[name], f"data.{name}", source)
    try:
        data = DataConfig(**kwargs)
    except (ValueError, TypeError) as exc:
        raise VidsegError(f"data: {exc}", source) from None
    train = _build(TrainConfig, values.get("train"), "train", source)
    train.out_dir = _expand_path(train.out_dir, "train.out_dir", source)
    return RunConfig(model, data, train, source)


def apply_overrides(values: dict[str, Any], overrides: list[str], source: str = "<command line>") -> dict[str, Any]:
    """Set ``key.sub=value`` entries (values parsed as YAML) in a nested config mapping, in place."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise VidsegError(f"override {item!r} is not key=value", source, "write e.g. train.lr=3e-4")
        try:
            value = yaml.safe_load(text) if text else None
        except yaml.YAMLError:
            value = text
        node: Any = values
        parts = key.split(".")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise VidsegError(f"override {key}: {'.'.join(parts[:i])} has no item {part}", source)
                index: Any = int(part)
            elif isinstance(node, dict):
                index = part
                if not last and not isinstance(node.get(part), (dict, list)):
                    node[part] = {}
            else:
                raise VidsegError(f"override {key}: {'.'.join(parts[:i])} is not a section", source)
            if last:
                node[index] = value
            else:
                node = node[index]
    return values


def shipped_configs() -> list[str]:
    """The names of the configs shipped with the package (``hs2s``, ``cpu/ovsnet``, ...)."""
    return sorted(p.relative_to(SHIPPED).with_suffix("").as_posix() for p in SHIPPED.rglob("*.yaml"))


def config_path(name: str | os.PathLike) -> Path:
    """A config file: ``name`` itself when it is a file, else the shipped config of that name."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = SHIPPED / f"{str(name).removesuffix('.yaml')}.yaml"
    if shipped.is_file():
        return shipped
    raise VidsegError("config file not found", path, f"give a YAML file, or a shipped config: {', '.join(shipped_configs())}")


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config file (or a shipped config by name, see :func:`config_path`), apply ``overrides`` and
    validate it."""
    path = config_path(path)
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise VidsegError(f"not valid YAML ({str(exc).splitlines()[0]})", path) from None
    if not isinstance(values, dict):
        raise VidsegError("a config file is a mapping with model:, data: and train: sections", path)
    apply_overrides(values, list(overrides or []), str(path))
    return parse_config(values, str(path))


__all__ = [
    "DataConfig",
    "LossConfig",
    "RunConfig",
    "SamplingSchedule",
    "SourceConfig",
    "TrainConfig",
    "ValConfig",
    "apply_overrides",
    "clip_phases",
    "config_path",
    "load_config",
    "parse_config",
    "shipped_configs",
]
