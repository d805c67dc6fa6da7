"""A description of the machine, printed with every benchmark figure."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import re
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
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


def warn_if_emulated_bf16(fix: str, stacklevel: int = 3) -> None:
    """Warn, naming ``fix``, when bfloat16 was asked for on a CPU that would emulate it."""
    if not native_precisions()["bfloat16"]:
        warnings.warn(f"this CPU has no native bfloat16 ({' / '.join(NATIVE_FLAGS['bfloat16'])}): it is emulated, "
                      "measured 4.8x slower than float32 for HS2S inference and 14x for RVOS training on a 2-core "
                      f"AVX2 EPYC; {fix}", stacklevel=stacklevel)


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


THREADS_HELP = ("torch and OpenCV threads: a count, or auto = the cores other processes leave idle, measured at "
                "the start (oversubscribed cores slow every thread down: 8x measured on 2 cores)")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def parse_threads(value: str) -> int | str:
    """``--threads`` as argparse reads it (an argparse ``type``): a count or ``auto``."""
    import argparse

    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a count; use a number such as 1, or auto") from None


def busy_cores(window: float = 0.2) -> float:
    """How many cores other processes keep busy now: the machine's busy time over ``window`` seconds while this
    process sleeps (``/proc/stat``); elsewhere the 1-minute load average (which also counts this process's past)."""
    def busy_and_total() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]) - idle, sum(fields[:8])

    try:
        busy0, total0 = busy_and_total()
        time.sleep(window)
        busy1, total1 = busy_and_total()
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    cpus = os.cpu_count() or 1
    return cpus * (busy1 - busy0) / max(1, total1 - total0)


def auto_threads(cores: int | None = None, busy: float | None = None) -> tuple[int, str]:
    """The threads worth running: the usable cores minus those other processes keep busy (:func:`busy_cores`,
    rounded), at least one. Returns (count, why)."""
    if cores is None:
        cores = usable_cores()
    if busy is None:
        busy = busy_cores()
    count = max(1, min(cores, cores - int(busy + 0.5)))
    return count, f"auto: {cores} cores, {busy:.1f} busy with other work"


def set_threads(threads: int | str | None, option: str = "--threads") -> str | None:
    """Use ``threads`` torch and OpenCV threads (``auto``: :func:`auto_threads`; None: leave the libraries'
    defaults). Returns a line saying what was chosen, or None."""
    if threads is None:
        return None
    why = None
    if threads == "auto":
        threads, why = auto_threads()
    if threads < 1:
        raise VidsegError(f"{option} {threads} must be at least 1", fix="e.g. --threads 1")
    import cv2
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    return f"threads: {threads}" + (f" ({why})" if why else "")


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


@contextmanager
def memory_returned_on_free() -> Iterator[None]:
    """Inside: memory freed goes back to the system at once, so loading weights piece by piece and freeing each
    source when converted lowers the peak. glibc keeps freed blocks under its adaptive mmap threshold (it grows up to
    32 MB) for reuse; inside, every block of 64 KB or more is mapped on its own. Afterwards the threshold is 32 MB,
    where the adaptive one ends up, and the freed heap is trimmed. Nothing happens elsewhere than glibc."""
    libc = _glibc()
    if libc is None:
        yield
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 64 << 10)
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
        libc.malloc_trim(0)


def format_machine_info() -> str:
    info = machine_info()
    width = max(map(len, info))
    return "\n".join(f"{key:<{width}} : {value}" for key, value in info.items())
