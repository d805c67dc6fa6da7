"""A description of the machine, printed with every benchmark figure."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

from vidseg.errors import VidsegError


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# CPU flags that decide which precisions run natively (the rest are emulated, often slower than float32).
NATIVE_FLAGS = {"bfloat16": ("avx512_bf16", "amx_bf16"), "int8": ("avx512_vnni", "avx_vnni", "amx_int8")}


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_precisions(flags: set[str] | None = None) -> dict[str, list[str]]:
    """For each reduced precision, the CPU flags that run it natively (empty: emulated or unknown)."""
    flags = cpu_flags() if flags is None else flags
    return {dtype: [f for f in wanted if f in flags] for dtype, wanted in NATIVE_FLAGS.items()}


def native_line() -> str:
    """``bfloat16 (avx512_bf16), int8 no``: what this CPU runs natively, for start summaries and benchmarks."""
    return ", ".join(f"{dtype} {'(' + ' '.join(found) + ')' if found else 'no'}"
                     for dtype, found in native_precisions().items())


def resolve_dtype(dtype: str | None, device: str = "cpu", flags: set[str] | None = None) -> tuple[str, str]:
    """The network precision for ``dtype`` on ``device`` and why: ``auto`` (or None) is bfloat16 where it runs
    natively (a CUDA GPU of compute capability 8.0 or later; a CPU with one of ``NATIVE_FLAGS["bfloat16"]``) and
    float32 elsewhere, so a CPU that would emulate bfloat16 never gets it unasked; other names are kept."""
    if dtype not in (None, "auto"):
        return dtype, "asked for"
    if str(device).startswith("cuda"):
        import torch

        major, minor = torch.cuda.get_device_capability(torch.device(device))
        if major >= 8:
            return "bfloat16", f"auto: native on this GPU (compute capability {major}.{minor})"
        return "float32", f"auto: no native bfloat16 on this GPU (compute capability {major}.{minor})"
    if str(device) != "cpu":
        return "float32", f"auto: float32 on {device}"
    found = native_precisions(flags)["bfloat16"]
    if found:
        return "bfloat16", f"auto: native on this CPU ({' '.join(found)})"
    return "float32", "auto: this CPU has no native bfloat16"


def machine_info() -> dict[str, str]:
    """CPU, cores, load, thread settings and library versions (torch only when already imported)."""
    import sys

    import cv2
    import numpy as np

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),)
    info = {
        "cpu": f"{cpu_name()} ({os.cpu_count()} logical cores)",
        "load": ", ".join(f"{v:.1f}" for v in load),
        "native": native_line(),
        "threads": f"OpenCV {cv2.getNumThreads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        "python": f"{platform.python_version()} ({platform.system()} {platform.release()})",
        "versions": f"numpy {np.__version__}, opencv {cv2.__version__}",
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        info["torch"] = f"{torch.__version__}, {torch.get_num_threads()} threads, device {device}"
    return info


def check_device(device: str, option: str = "--device") -> str:
    """``device`` when this machine has it (``cpu``, ``cuda``, ``cuda:N``, ``mps``); one clear error otherwise."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", device):
        raise VidsegError(f"{option} {device!r} is not a device vidseg runs on", fix="use cpu, cuda, cuda:N or mps")
    if device == "cpu":
        return device
    import torch

    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            found = f"{count} CUDA device(s)" if count else "no CUDA GPU (or no NVIDIA driver)"
            raise VidsegError(f"{option} {device}: this machine has {found}", fix="use --device cpu, the default")
    elif not torch.backends.mps.is_available():
        raise VidsegError(f"{option} mps: this machine has no Apple GPU", fix="use --device cpu, the default")
    return device


THREADS_HELP = ("torch and OpenCV threads (default: all cores; 1 keeps the speed when another busy process shares "
                "the machine: oversubscribed cores slow every thread down)")


def set_threads(threads: int | None, option: str = "--threads") -> None:
    """Use ``threads`` torch and OpenCV threads (None: leave the libraries' defaults)."""
    if threads is None:
        return
    if threads < 1:
        raise VidsegError(f"{option} {threads} must be at least 1", fix="e.g. --threads 1")
    import cv2
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


def format_machine_info() -> str:
    info = machine_info()
    width = max(map(len, info))
    return "\n".join(f"{key:<{width}} : {value}" for key, value in info.items())
