"""The pickle-free state file used for resume points."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from vidseg.io.state_file import load_state, save_state


def test_round_trip_keeps_types_and_values(tmp_path):
    value = {
        "ints": [1, 2, 3],
        "name": "flow",
        "nothing": None,
        "gray": np.arange(12, dtype=np.uint8).reshape(3, 4),
        "nested": {"h": torch.randn(2, 3, dtype=torch.float32), "c": torch.randn(2, 3).to(torch.bfloat16)},
    }
    save_state(tmp_path / "s.npz", value)
    back = load_state(tmp_path / "s.npz")
    assert back["ints"] == [1, 2, 3] and back["name"] == "flow" and back["nothing"] is None
    assert isinstance(back["gray"], np.ndarray) and np.array_equal(back["gray"], value["gray"])
    for key in ("h", "c"):
        assert back["nested"][key].dtype == value["nested"][key].dtype
        assert torch.equal(back["nested"][key], value["nested"][key])


def test_numpy_only_state_does_not_import_torch(tmp_path):
    code = (
        "import sys, numpy as np\n"
        "from vidseg.io.state_file import load_state, save_state\n"
        f"save_state({str(tmp_path / 's.npz')!r}, {{'p': np.ones((2, 2), np.float32)}})\n"
        f"assert load_state({str(tmp_path / 's.npz')!r})['p'].sum() == 4\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bad_files_and_values(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a vidseg state file"):
        load_state(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a vidseg state file"):
        load_state(tmp_path / "other.npz")
    with pytest.raises(TypeError, match="cannot store a object"):
        save_state(tmp_path / "x.npz", {"x": object()})
    assert not (tmp_path / "x.npz").exists()
