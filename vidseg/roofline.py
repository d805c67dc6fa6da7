"""How close each method runs to what this machine can do: FLOPs per frame (``torch.utils.flop_counter``), the
machine's measured convolution throughput, and the achieved fraction of it (``vidseg bench``'s roofline section).

The limit is measured, not taken from a data sheet: the best GFLOP/s of a few convolution shapes these networks
use, in the precision and memory layout the networks run in. A method far below it loses time outside large
convolutions (small or depthwise convolutions, layout conversions, Python per object, OpenCV work the counter
does not see)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

# (batch, in, out, kernel, height, width, groups): dense 3x3 / 1x1 convolutions and a depthwise 3x3, the shapes
# that dominate the S2S family, RVOS and the EfficientNet-Lite backbones at CPU working sizes.
CALIBRATION_SHAPES = (
    (1, 128, 128, 3, 64, 112, 1),
    (1, 256, 256, 1, 32, 56, 1),
    (1, 96, 96, 5, 16, 28, 1),
    (1, 192, 192, 3, 32, 56, 192),
)


def conv_flops(batch: int, c_in: int, c_out: int, kernel: int, height: int, width: int, groups: int = 1) -> float:
    """FLOPs (2 per multiply-add) of a stride-1 'same' convolution."""
    return 2.0 * batch * c_out * height * width * (c_in // groups) * kernel * kernel


def calibrate_conv(device: str = "cpu", dtype: str = "float32", seconds: float = 0.5) -> dict[str, Any]:
    """GFLOP/s of each calibration convolution (channels-last, inference mode) timed for about ``seconds``; the
    machine's limit is the best of them."""
    import torch

    torch_dtype = getattr(torch, dtype)
    rows = []
    for shape in CALIBRATION_SHAPES:
        batch, c_in, c_out, kernel, height, width, groups = shape
        conv = torch.nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, groups=groups).to(device, torch_dtype)
        conv = conv.to(memory_format=torch.channels_last).eval()
        x = torch.randn(batch, c_in, height, width, device=device, dtype=torch_dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        sync = (lambda: torch.cuda.synchronize(device)) if device.startswith("cuda") else (lambda: None)
        with torch.inference_mode():
            for _ in range(3):
                conv(x)
            sync()
            runs, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < seconds or runs < 3:
                conv(x)
                runs += 1
                sync()
        rows.append({"shape": shape, "gflops_per_s": conv_flops(*shape) * runs / elapsed / 1e9})
    best = max(rows, key=lambda r: r["gflops_per_s"])
    return {"device": device, "dtype": dtype, "rows": rows, "peak_gflops_per_s": best["gflops_per_s"]}


def count_flops(run: Callable[[], Any], depth: int = 3) -> dict[str, Any]:
    """FLOPs of the torch work in ``run()``: the total and per module (module paths up to ``depth`` levels)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, depth=depth)
    with counter:
        run()
    per_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items() if name != "Global"}
    return {"total": counter.get_total_flops(), "modules": per_module}


def module_breakdown(modules: dict[str, int], total: float, depth: int = 2, top: int = 12) -> list[dict[str, Any]]:
    """The ``top`` modules of the first ``depth`` levels by FLOPs, with their share of ``total``. Level 0 is what
    was called directly (the network, or its parts when a method such as ``step`` calls them)."""
    rows = [{"module": name, "gflops": flops / 1e9, "share": flops / total if total else 0.0}
            for name, flops in modules.items() if name.count(".") < depth]
    return sorted(rows, key=lambda r: -r["gflops"])[:top]


def roofline_row(speed_row: dict[str, Any], flops: float, peak_gflops_per_s: float) -> dict[str, Any]:
    """Achieved GFLOP/s of a timed method (``speed_row`` from ``measure_speed``) and its fraction of the peak."""
    achieved = flops / speed_row["median_s"] / 1e9 if flops else None
    return {"method": speed_row["method"], "size": speed_row["size"], "objects": speed_row["objects"],
            "gflop_per_frame": flops / 1e9, "median_s": speed_row["median_s"], "achieved_gflops_per_s": achieved,
            "fraction_of_peak": None if achieved is None else achieved / peak_gflops_per_s}


__all__ = ["CALIBRATION_SHAPES", "calibrate_conv", "conv_flops", "count_flops", "module_breakdown", "roofline_row"]
