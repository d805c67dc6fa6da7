"""Training configuration files: YAML with ``model:``, ``data:`` and ``train:`` sections."""

from vidseg.config.schema import (
    DataConfig,
    RunConfig,
    SourceConfig,
    TrainConfig,
    ValConfig,
    apply_overrides,
    clip_phases,
    config_path,
    load_config,
    parse_config,
    shipped_configs,
)

__all__ = [
    "DataConfig",
    "RunConfig",
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
