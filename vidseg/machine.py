"""A description of the machine, printed with every benchmark figure."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, str]:
    """CPU, cores, load, thread settings and library versions (torch only when already imported)."""
    import sys

    import cv2
    import numpy as np

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),)
    info = {
        "cpu": f"{cpu_name()} ({os.cpu_count()} logical cores)",
        "load": ", ".join(f"{v:.1f}" for v in load),
        "threads": f"OpenCV {cv2.getNumThreads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        "python": f"{platform.python_version()} ({platform.system()} {platform.release()})",
        "versions": f"numpy {np.__version__}, opencv {cv2.__version__}",
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        info["torch"] = f"{torch.__version__}, {torch.get_num_threads()} threads, device {device}"
    return info


def format_machine_info() -> str:
    info = machine_info()
    width = max(map(len, info))
    return "\n".join(f"{key:<{width}} : {value}" for key, value in info.items())
