"""Reading a model config dataclass from the ``model:`` dict of a config file."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

Config = TypeVar("Config")


def config_from_dict(cls: type[Config], values: dict[str, Any]) -> Config:
    """``cls(**values)``; unknown keys are one error listing the valid ones."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown model option(s) {unknown}; valid options: {sorted(known)}")
    return cls(**values)


__all__ = ["config_from_dict"]
