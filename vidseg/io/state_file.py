"""Nested dicts/lists of arrays and plain values in one ``.npz`` file, without pickle.

Used for the resume point of ``vidseg segment``: numpy arrays come back as numpy arrays and torch
tensors as torch tensors (bfloat16 included), so a method that never needed torch (flow) does not
import it to save or read its state. Values other than arrays must be JSON values.
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from typing import Any

import numpy as np

from vidseg.io.atomic import atomic_path

_FORMAT = "vidseg-state/1"
_ARRAY = "__array__"


def save_state(path: str | os.PathLike, value: Any) -> None:
    """Write ``value`` to ``path`` atomically."""
    arrays: dict[str, np.ndarray] = {}

    def encode(item: Any) -> Any:
        if isinstance(item, dict):
            if not all(isinstance(k, str) for k in item):
                raise TypeError("state dict keys must be strings")
            return {k: encode(v) for k, v in item.items()}
        if isinstance(item, (list, tuple)):
            return [encode(v) for v in item]
        if isinstance(item, np.ndarray):
            return _store(arrays, item, "numpy", str(item.dtype))
        torch = sys.modules.get("torch")  # a tensor can only exist when torch is loaded
        if torch is not None and isinstance(item, torch.Tensor):
            tensor = item.detach().cpu().contiguous()
            dtype = str(tensor.dtype).removeprefix("torch.")
            if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16: keep the bits
                tensor = tensor.view(torch.int16)
            return _store(arrays, tensor.numpy(), "torch", dtype)
        if item is None or isinstance(item, (bool, int, float, str)):
            return item
        raise TypeError(f"cannot store a {type(item).__name__} in a state file")

    header = json.dumps({"format": _FORMAT, "value": encode(value)})
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, __header__=np.frombuffer(header.encode(), np.uint8), **arrays)


def _store(arrays: dict[str, np.ndarray], array: np.ndarray, kind: str, dtype: str) -> dict[str, Any]:
    name = f"a{len(arrays)}"
    arrays[name] = array
    return {_ARRAY: name, "kind": kind, "dtype": dtype}


def load_state(path: str | os.PathLike) -> Any:
    """Read a file written by :func:`save_state`; raises ``ValueError`` when it is not one."""
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(bytes(data["__header__"]).decode())
            arrays = {name: data[name] for name in data.files if name != "__header__"}
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:  # ValueError: pickled or bad JSON
        raise ValueError(f"not a vidseg state file ({type(exc).__name__})") from exc
    if not isinstance(header, dict) or header.get("format") != _FORMAT:
        raise ValueError("not a vidseg state file (unknown format)")

    def decode(item: Any) -> Any:
        if isinstance(item, list):
            return [decode(v) for v in item]
        if not isinstance(item, dict):
            return item
        if _ARRAY not in item:
            return {k: decode(v) for k, v in item.items()}
        array = arrays[item[_ARRAY]]
        if item["kind"] == "numpy":
            return array
        import torch

        tensor = torch.from_numpy(array)
        return tensor.view(torch.bfloat16) if item["dtype"] == "bfloat16" else tensor

    return decode(header["value"])


__all__ = ["load_state", "save_state"]
