"""Training configuration files: YAML with ``model:``, ``data:`` and ``train:`` sections."""

from vidseg.config.schema import (
    DataConfig,
    RunConfig,
    SourceConfig,
    TrainConfig,
    ValConfig,
    apply_overrides,
    clip_phases,
    load_config,
    parse_config,
)

__all__ = [
    "DataConfig",
    "RunConfig",
    "SourceConfig",
    "TrainConfig",
    "ValConfig",
    "apply_overrides",
    "clip_phases",
    "load_config",
    "parse_config",
]
