"""``vidseg bench``: speed, memory and evaluator time on this machine, written as Markdown and JSON.

Three measurements, each printed as it is taken:

* seconds per frame of every method that builds without arguments, driven through an
  :class:`~vidseg.inference.session.InferenceSession` over a synthetic clip (in this process);
* peak RSS of ``segment_video`` against the video's length (one fresh process per length);
* time and peak RSS of the evaluator on the DAVIS 2017 conformance set (one fresh process per task).

Peak RSS is the process's ``VmHWM``: on Linux ``ru_maxrss`` keeps the launching process's peak across
fork + exec, so a child started by a large parent would report the parent's size.
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vidseg.constants import DTYPE_CHOICES
from vidseg.errors import VidsegError
from vidseg.registry import get_method, method_names
from vidseg.roofline import calibrate_conv, count_flops, module_breakdown, roofline_row

Report = Callable[[str], None]

# The result folder and expected CSVs of each evaluation task in the conformance set.
EVAL_RESULTS = {"semi-supervised": "semi-lag1", "unsupervised": "unsup-rvos"}

# Figures measured earlier on the development machine (2-core AMD EPYC, no GPU; docs/experiments.md).
ANCHORS: dict[str, Any] = {
    "eval": {
        "provenance": "the official DAVIS 2017 toolkit (davis2017-evaluation), one process, on the DAVIS 2017 "
        "conformance set (10 val sequences, 28 objects, 480p), measured on the development machine "
        "(docs/experiments.md, 'Evaluation against the official DAVIS toolkit')",
        "tasks": {
            "semi-supervised": {"wall_s": 20.4, "rss_gb": 3.4},
            "unsupervised": {"wall_s": 272.0, "rss_gb": 11.3},
        },
    },
    "speed": {
        "provenance": "benchmarks/bench_s2s_speed.py --methods hs2s --frames 2 on the development machine: the full "
        "HS2S (ResNet-50 x 2, 379 M parameters, random seed-0 weights), 2 torch threads, median of 2 timed frames "
        "after 1 warm-up, network input at the given size (no session resizing); reference-style = run the way the "
        "official code runs it (float32, autograd recording, one object at a time); ours = optimize_for_inference "
        "in bfloat16 (docs/experiments.md, 'S2S / S2S++ / HS2S speed and memory')",
        "rows": [
            {"size": "256x448", "objects": 1, "reference_fp32_s": 1.777, "ours_bf16_s": 0.664},
            {"size": "256x448", "objects": 3, "reference_fp32_s": 4.748, "ours_bf16_s": 1.465},
            {"size": "480x864", "objects": 1, "reference_fp32_s": 4.277, "ours_bf16_s": 1.720},
            {"size": "480x864", "objects": 3, "reference_fp32_s": 12.853, "ours_bf16_s": 4.828},
        ],
    },
}

@dataclass
class BenchSettings:
    """What ``vidseg bench`` measures; build with :func:`make_settings`."""

    methods: list[str]
    sizes: list[tuple[int, int]]
    objects: list[int]
    frames: int
    warmup: int
    lengths: list[int]
    memory_size: tuple[int, int]
    memory_objects: int
    conformance: Path | None  # None: the evaluator section is skipped (--quick)
    device: str
    dtype: str
    compile: bool
    threads: int | None
    quick: bool

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["sizes"] = [size_name(s) for s in self.sizes]
        data["memory_size"] = size_name(self.memory_size)
        data["conformance"] = None if self.conformance is None else str(self.conformance)
        return data


def command_line(argv: list[str]) -> str:
    """``vidseg bench ...`` as typed (shell-quoted)."""
    return shlex.join(["vidseg", *argv])


def size_name(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def parse_size(text: str) -> tuple[int, int]:
    """``"256x448"`` -> ``(256, 448)`` (height, width)."""
    from vidseg.io.video import parse_frame_size

    try:
        size = parse_frame_size(text)
    except ValueError:
        size = (0, 0)
    if min(size) < 32:
        raise VidsegError(f"malformed frame size {text!r}", fix="write HEIGHTxWIDTH with sides >= 32, e.g. 256x448")
    return size


def default_conformance_dir() -> Path:
    """``$VIDSEG_SHARED/conformance/davis2017``, else ``../shared/conformance/davis2017`` from the cwd."""
    shared = os.environ.get("VIDSEG_SHARED")
    return (Path(shared) if shared else Path("..") / "shared") / "conformance" / "davis2017"


def make_settings(
    quick: bool = False,
    methods: list[str] | None = None,
    sizes: list[str] | None = None,
    objects: list[int] | None = None,
    frames: int | None = None,
    warmup: int | None = None,
    lengths: list[int] | None = None,
    conformance: str | os.PathLike | None = None,
    device: str = "cpu",
    dtype: str = "auto",
    compile: bool = False,
    threads: int | None = None,
) -> BenchSettings:
    """Settings from the command-line values; ``None`` takes the default (the ``--quick`` one with ``quick``)."""
    from vidseg.inference import methods as registry

    runnable = registry.runnable_methods()
    for name in methods or []:
        if name not in method_names():
            raise VidsegError(f"unknown method {name!r}", fix=f"use one of: {', '.join(runnable)}")
        if name not in runnable:
            raise VidsegError(f"method {name!r} does not build without a checkpoint",
                              fix=f"vidseg bench measures: {', '.join(runnable)}")
    if dtype not in DTYPE_CHOICES:
        raise VidsegError(f"unknown dtype {dtype!r}", fix=f"use one of: {', '.join(DTYPE_CHOICES)}")
    if not (device == "cpu" or re.fullmatch(r"cuda(:\d+)?", device)):
        raise VidsegError(f"unknown device {device!r}", fix="use cpu, cuda or cuda:N")
    if dtype == "auto":
        from vidseg.machine import check_device, resolve_dtype

        dtype, _ = resolve_dtype(dtype, check_device(device))
    for name, values, low in (("--objects", objects, 1), ("--lengths", lengths, 1)):
        if values is not None and (not values or min(values) < low):
            raise VidsegError(f"{name} needs values >= {low}, got {values}")
    for name, value, low in (("--frames", frames, 1), ("--warmup", warmup, 0), ("--threads", threads, 1)):
        if value is not None and value < low:
            raise VidsegError(f"{name} must be >= {low}, got {value}")
    full = not quick
    return BenchSettings(
        methods=list(methods) if methods else runnable,
        sizes=[parse_size(s) for s in sizes] if sizes else [(256, 448), (480, 854)] if full else [(128, 224)],
        objects=list(objects) if objects else [1, 3],
        frames=frames if frames is not None else 30 if full else 3,
        warmup=warmup if warmup is not None else 2 if full else 1,
        lengths=sorted(set(lengths)) if lengths else [200, 1000, 2000] if full else [20, 40],
        memory_size=(480, 854) if full else (128, 224),
        memory_objects=3,
        conformance=Path(conformance) if conformance is not None else default_conformance_dir() if full else None,
        device=device,
        dtype=dtype,
        compile=compile,
        threads=threads,
        quick=quick,
    )


# ----------------------------------------------------------------------------- machine
def machine_section(settings: BenchSettings) -> dict[str, str]:
    """:func:`vidseg.machine.machine_info` plus torch, the device measured on and the date."""
    import torch

    from vidseg.machine import machine_info

    if settings.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise VidsegError("--device cuda given but torch sees no CUDA device", fix="use --device cpu")
        device = f"{settings.device} ({torch.cuda.get_device_name(torch.device(settings.device))})"
    else:
        device = "cpu"
    info = machine_info()
    info["torch"] = f"{torch.__version__}, {torch.get_num_threads()} threads"
    info["device"] = device
    info["date"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return info


# ----------------------------------------------------------------------------- seconds per frame
def measure_speed(method: str, size: tuple[int, int], objects: int, settings: BenchSettings,
                  dtype: str | None = None, checkpoint: str | os.PathLike | None = None,
                  variant: str | None = None) -> dict[str, Any]:
    """Seconds per frame of ``method`` on a synthetic clip of ``size`` with ``objects`` objects, and the J&F of its
    masks against the clip's ground truth (semi-supervised protocol).

    Frame 0 takes the masks (its time is ``first_s``); then ``settings.warmup`` warm-up frames
    (``warmup_times``; with ``compile`` the first of them compiles), then ``settings.frames`` timed ones.
    ``dtype`` / ``checkpoint`` replace the settings' dtype and the bundled weights (the int8 rows); ``variant``
    names the row's precision in the tables (default: its dtype). FLOPs are counted for float rows only
    (``torch.utils.flop_counter`` does not see quantised kernels).
    """
    import numpy as np
    import torch

    from vidseg.data.synth import SynthClip, SynthConfig
    from vidseg.evaluation import evaluate_sequence_arrays
    from vidseg.inference.methods import build_propagator
    from vidseg.inference.network import NetworkPropagator
    from vidseg.inference.session import InferenceSession

    height, width = size
    spec = get_method(method)
    device = settings.device if "device" in spec.options else "cpu"
    dtype = (dtype or settings.dtype) if "dtype" in spec.options else "-"
    options = {key: value for key, value in (("device", device), ("dtype", dtype)) if key in spec.options}
    row: dict[str, Any] = {
        "method": method, "size": size_name(size), "objects": objects, "device": device,
        "dtype": variant or dtype, "threads": torch.get_num_threads(), "compiled": False, "error": None,
    }
    config = SynthConfig(seed=0, num_frames=2 + settings.warmup + settings.frames, height=height, width=width,
                         num_objects=objects, late_entry=False, occlusion=False)
    *clip, counted = list(SynthClip(config))  # rendered before timing; the last frame is counted, not timed
    start = time.perf_counter()
    propagator = build_propagator(method, checkpoint, **options)
    row["build_s"] = time.perf_counter() - start
    row["working_size"] = size_name(propagator.working_size(height, width))
    if settings.compile and isinstance(propagator, NetworkPropagator) and hasattr(propagator.model, "step"):
        # torch.compile(module) would compile only forward(); the S2S family runs the network through step()
        # (the other networks run through several methods: not compiled).
        propagator.model.step = torch.compile(propagator.model.step)
        row["compiled"] = True
    sync = (lambda: torch.cuda.synchronize(device)) if device.startswith("cuda") else (lambda: None)
    session = InferenceSession(propagator)
    times, masks = [], []
    try:
        for index, (frame, mask) in enumerate(clip):
            sync()
            start = time.perf_counter()
            masks.append(session.step(frame, mask if index == 0 else None))
            sync()
            times.append(time.perf_counter() - start)
    except Exception as exc:  # torch.compile fails lazily, at the first call
        if not row["compiled"]:
            raise
        row["error"] = f"torch.compile failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
        return row
    timed = times[1 + settings.warmup :]
    median = statistics.median(timed)
    scored = evaluate_sequence_arrays(np.stack([mask for _, mask in clip]), np.stack(masks), name=method)
    row["jf"] = scored.jf_mean
    if dtype == "int8":
        row.update(flops=None, flop_modules={})
    else:
        flops = count_flops(lambda: session.step(counted[0]), depth=2)  # the torch work of one more frame
        row.update(flops=flops["total"], flop_modules=flops["modules"])
    row.update(first_s=times[0], median_s=median, min_s=min(timed), max_s=max(timed), frames_per_s=1 / median,
               times=timed, warmup_times=times[1 : 1 + settings.warmup])
    return row


def format_speed_row(row: dict[str, Any]) -> str:
    head = f"{row['method']:>6} {row['dtype']:>11} {row['size']:>8} {row['objects']} obj"
    if row["error"]:
        return f"{head}: {row['error']}"
    return (f"{head}: median {row['median_s']:.4f} s/frame (min {row['min_s']:.4f}, max {row['max_s']:.4f}), "
            f"working size {row['working_size']}, first frame {row['first_s']:.3f} s, J&F {row['jf']:.3f}")


INT8_CALIBRATION_SEEDS = 1000  # the int8 export is calibrated on generated clips from this seed on, not the timed one


def measure_int8(settings: BenchSettings, report: Report = print) -> dict[str, Any]:
    """The int8 rows: every timed network that takes ``--dtype int8`` (on the CPU), at every size and number of
    objects, once calibrated per video (``segment --dtype int8``) and once as an int8 export of its bundled weights
    calibrated on generated clips (``vidseg export --dtype int8``), timed and scored as :func:`measure_speed` does."""
    from vidseg.inference.int8_export import export_int8, synthetic_clips
    from vidseg.inference.methods import build_propagator
    from vidseg.weights import bundled_path

    methods = [name for name in settings.methods if get_method(name).int8]
    if settings.device != "cpu" or not methods:
        return {"skipped": "int8 runs on the CPU only" if methods else "no timed method takes --dtype int8",
                "rows": []}
    # the bundled network decides: the bundled hs2s (HS2S on match's memory) runs in float precisions only
    float_only = [name for name in methods if "int8" not in build_propagator(name).dtypes]
    for name in float_only:
        report(f"  {name}: its bundled network runs in float precisions only, no int8 rows")
    methods = [name for name in methods if name not in float_only]
    if not methods:
        return {"skipped": "no timed method's bundled network runs in int8", "rows": [], "float_only": float_only}
    clips, calibration = synthetic_clips(4, 8, first_seed=INT8_CALIBRATION_SEEDS)
    rows = []
    with tempfile.TemporaryDirectory(prefix="vidseg-bench-int8-") as tmp:
        for method in methods:
            export = export_int8(bundled_path(method), Path(tmp) / f"{method}-int8.pt", clips, calibration)
            for size in settings.sizes:
                for objects in settings.objects:
                    for variant, checkpoint in (("int8", None), ("int8 export", export)):
                        rows.append(measure_speed(method, size, objects, settings, "int8", checkpoint, variant))
                        report(format_speed_row(rows[-1]))
    return {"skipped": None, "calibration": calibration, "rows": rows, "float_only": float_only}


def segment_memory_method() -> str:
    """What the memory test segments with: the default one-shot method (what a user runs; it keeps a memory of past
    frames, so a memory that grew with the video would show here first)."""
    from vidseg.inference.methods import default_method

    return default_method()


def measure_roofline(speed: list[dict[str, Any]], settings: BenchSettings, report: Report = print) -> dict[str, Any]:
    """The machine's convolution throughput (in the networks' dtype), each timed row's achieved fraction of it,
    and the FLOPs per module of the row with the most FLOPs."""
    calibration = calibrate_conv(settings.device, settings.dtype)
    peak = calibration["peak_gflops_per_s"]
    report(f"\nroofline: measured convolution peak {peak:.1f} GFLOP/s ({settings.dtype}, {settings.device}, "
           f"best of {len(calibration['rows'])} shapes)")
    rows = []
    for row in speed:
        if row["error"]:
            continue
        rows.append(roofline_row(row, row["flops"], peak))
        r = rows[-1]
        fraction = "-" if r["fraction_of_peak"] is None else f"{r['achieved_gflops_per_s']:.1f} GFLOP/s = " \
            f"{100 * r['fraction_of_peak']:.0f} % of peak"
        report(f"{r['method']:>6} {r['size']:>8} {r['objects']} obj: {r['gflop_per_frame']:.2f} GFLOP/frame, {fraction}")
    counted = [row for row in speed if not row["error"] and row["flops"]]
    largest = max(counted, key=lambda row: row["flops"]) if counted else None
    breakdown = module_breakdown(largest["flop_modules"], largest["flops"]) if largest else []
    return {"calibration": calibration, "rows": rows, "breakdown": breakdown,
            "breakdown_of": None if largest is None else {k: largest[k] for k in ("method", "size", "objects")}}


# ----------------------------------------------------------------------------- peak RSS against length
def own_peak_rss_mb() -> float:
    """This process's peak RSS: ``VmHWM`` (reset by exec, unlike ``ru_maxrss``, which on Linux keeps
    the launching process's peak across fork + exec); ``ru_maxrss`` where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run_child(function: str, *args: str) -> dict[str, Any]:
    """Call ``vidseg.bench.<function>(*args)`` in a fresh Python process; return the JSON line it prints."""
    code = f"import sys; from vidseg.bench import {function}; {function}(*sys.argv[1:])"
    done = subprocess.run([sys.executable, "-c", code, *args], check=False, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{function} {' '.join(args)} failed (exit {done.returncode}):\n{tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def segment_child(video: str, mask: str, out: str, method: str) -> None:
    """One measured ``segment_video`` run (in a fresh process); prints a JSON line."""
    from vidseg.inference.runner import segment_video

    result = segment_video(video, [mask], out, method=method, progress=False)
    print(json.dumps({"frames": result.num_frames, "fps": result.frames_per_second, "peak_rss_mb": own_peak_rss_mb()}))


def measure_segment_memory(
    lengths: list[int], size: tuple[int, int], objects: int, method: str, report: Report = print
) -> dict[str, Any]:
    """Peak RSS and frames/s of ``segment_video`` on synthetic .mp4 videos of each length, each in a fresh
    process, and the ratio of the longest video's peak to the shortest's (near 1: memory does not grow)."""
    from vidseg.data.synth import SynthConfig, write_video

    height, width = size
    rows = []
    with tempfile.TemporaryDirectory(prefix="vidseg-bench-") as tmp:
        videos = {}
        for length in sorted(lengths):
            config = SynthConfig(seed=1, num_frames=length, height=height, width=width, num_objects=objects)
            videos[length] = write_video(Path(tmp) / "videos" / f"clip{length}.mp4", config, gt=False)
        # Flush the freshly written videos first: measured right after a large write, a reader's peak
        # RSS was seen up to 25% higher, from the write-back, not from the segmentation.
        os.sync()
        for length, video in videos.items():
            row = {"length": length, **_run_child("segment_child", str(video.video), str(video.first_mask),
                                                  str(Path(tmp) / f"out{length}"), method)}
            rows.append(row)
            report(f"{length:>6} frames: peak RSS {row['peak_rss_mb']:.0f} MB, {row['fps']:.1f} frames/s")
    ratio = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    report(f"peak RSS ratio {rows[-1]['length']} / {rows[0]['length']} frames: {ratio:.3f}")
    return {"method": method, "size": size_name(size), "objects": objects, "rows": rows, "ratio": ratio}


# ----------------------------------------------------------------------------- evaluator
def _tree_rss_sampler(stop: threading.Event, peak: dict) -> None:
    try:
        import psutil
    except ImportError:
        return
    me = psutil.Process()
    while not stop.is_set():
        total = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass
        peak["tree"] = max(peak.get("tree", 0), total)
        stop.wait(0.05)


def eval_child(data: str, task: str, jobs: str) -> None:
    """One measured evaluator run (in a fresh process); prints a JSON line, with the largest absolute
    difference to the official toolkit's per-object CSV (``None`` when that CSV is missing)."""
    from vidseg.evaluation import evaluate

    root = Path(data)
    stop, peak = threading.Event(), {}
    sampler = threading.Thread(target=_tree_rss_sampler, args=(stop, peak), daemon=True)
    sampler.start()
    wall, cpu = time.perf_counter(), time.process_time()
    result = evaluate(root / "gt", root / "results" / EVAL_RESULTS[task], task=task, jobs=int(jobs), analyses=False,
                      progress=False)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    stop.set()
    sampler.join()
    worst = None
    expected = root / "expected" / f"{EVAL_RESULTS[task]}_per_object.csv"
    if expected.is_file():
        worst = 0.0
        rows = {r["Sequence"]: r for r in result.per_object}
        with expected.open() as handle:
            for row in csv.DictReader(handle):
                for key, value in row.items():
                    if key != "Sequence":
                        worst = max(worst, abs(rows[row["Sequence"]][key] - float(value)))
    print(json.dumps({
        "wall_s": wall,
        "cpu_s": cpu,
        "rss_mb": own_peak_rss_mb(),
        "tree_rss_mb": peak.get("tree", 0) / 2**20,
        "frames": sum(len(o.J) for o in result.objects),
        "objects": len(result.objects),
        "max_abs_diff": worst,
        "jf": result.global_metrics["J&F-Mean"],
    }))


def measure_eval(data: Path, tasks: list[str] | None = None, report: Report = print) -> dict[str, Any]:
    """Evaluator time and peak RSS per task on the conformance set at ``data`` (1 job, a fresh process each),
    against the official toolkit's anchors; ``skipped`` holds the reason when the set is missing."""
    if not (data / "gt").is_dir():
        reason = f"conformance set not found at {data} (pass --conformance DIR)"
        return {"data": str(data), "skipped": reason, "rows": []}
    rows = []
    for task in tasks or list(EVAL_RESULTS):
        row = {"task": task, "jobs": 1, **_run_child("eval_child", str(data), task, "1")}
        official = ANCHORS["eval"]["tasks"][task]
        row["official_wall_s"], row["official_rss_gb"] = official["wall_s"], official["rss_gb"]
        row["speedup"] = official["wall_s"] / row["wall_s"]
        row["memory_ratio"] = official["rss_gb"] * 1024 / max(row["rss_mb"], row["tree_rss_mb"])
        rows.append(row)
        diff = "n/a" if row["max_abs_diff"] is None else f"{row['max_abs_diff']:.1e}"
        report(f"{task:>16}: {row['wall_s']:.2f} s (official {official['wall_s']} s, x{row['speedup']:.1f}), "
               f"peak RSS {row['rss_mb']:.0f} MB, max |diff| to the official CSV {diff}")
    return {"data": str(data), "skipped": None, "rows": rows}


# ----------------------------------------------------------------------------- the whole run
def run_bench(settings: BenchSettings, command: str, report: Report = print) -> dict[str, Any]:
    """Measure everything in ``settings``; returns the raw results (what the JSON file holds)."""
    import torch

    started = time.perf_counter()
    if settings.threads is not None:
        import cv2

        torch.set_num_threads(settings.threads)
        cv2.setNumThreads(settings.threads)
    machine = machine_section(settings)
    width = max(map(len, machine))
    report("\n".join(f"{key:<{width}} : {value}" for key, value in machine.items()))

    report(f"\nseconds per frame ({settings.frames} timed frames after {settings.warmup} warm-up)")
    speed = []
    for method in settings.methods:
        for size in settings.sizes:
            for objects in settings.objects:
                speed.append(measure_speed(method, size, objects, settings))
                report(format_speed_row(speed[-1]))

    roofline = measure_roofline(speed, settings, report)

    report(f"\nint8 against {settings.dtype}")
    int8 = measure_int8(settings, report)
    if int8["skipped"]:
        report(f"skipped: {int8['skipped']}")

    memory_method = segment_memory_method()
    report(f"\nsegment peak RSS against length ({size_name(settings.memory_size)}, {memory_method})")
    memory = measure_segment_memory(settings.lengths, settings.memory_size, settings.memory_objects, memory_method,
                                    report)

    report("\nevaluator on the DAVIS 2017 conformance set (1 job)")
    if settings.conformance is None:
        evaluation = {"data": None, "skipped": "--quick (pass --conformance DIR to include it)", "rows": []}
    else:
        evaluation = measure_eval(settings.conformance, report=report)
    if evaluation["skipped"]:
        report(f"skipped: {evaluation['skipped']}")
    return {
        "command": command,
        "machine": machine,
        "settings": settings.to_json(),
        "speed": speed,
        "roofline": roofline,
        "int8": int8,
        "memory": memory,
        "eval": evaluation,
        "anchors": ANCHORS,
        "elapsed_s": time.perf_counter() - started,
    }


# ----------------------------------------------------------------------------- Markdown
def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _speed_table(speed: list[dict[str, Any]]) -> list[str]:
    header = ["method", "frame size", "working size", "objects", "median s/frame", "min", "max", "frames/s",
              "first frame s", "J&F", "device", "dtype", "threads", "compiled"]
    rows = []
    for r in speed:
        common = [r["device"], r["dtype"], str(r["threads"]), "yes" if r["compiled"] else "no"]
        if r["error"]:
            rows.append([r["method"], r["size"], r.get("working_size", "-"), str(r["objects"]), r["error"],
                         "-", "-", "-", "-", "-", *common])
        else:
            rows.append([r["method"], r["size"], r["working_size"], str(r["objects"]), f"{r['median_s']:.4f}",
                         f"{r['min_s']:.4f}", f"{r['max_s']:.4f}", f"{r['frames_per_s']:.1f}", f"{r['first_s']:.3f}",
                         f"{r['jf']:.3f}", *common])
    return _table(header, rows)


def _int8_lines(results: dict[str, Any]) -> list[str]:
    int8 = results.get("int8")
    if not int8:
        return []
    if int8["skipped"]:
        return ["## int8", "", f"skipped: {int8['skipped']}", ""]
    dtype = results["settings"]["dtype"]
    floats = {(r["method"], r["size"], r["objects"]): r for r in results["speed"] if not r["error"]}
    by_key: dict[tuple, dict[str, dict]] = {}
    for r in int8["rows"]:
        by_key.setdefault((r["method"], r["size"], r["objects"]), {})[r["dtype"]] = r
    rows = []
    for key, variants in by_key.items():
        base = floats.get(key)
        cells = [key[0], key[1], str(key[2])]
        cells += [f"{base['median_s']:.4f}", f"{base['jf']:.3f}"] if base else ["-", "-"]
        for name in ("int8", "int8 export"):
            r = variants.get(name)
            if r is None or r["error"]:
                cells += ["-", "-", "-"]
                continue
            cells += [f"{r['median_s']:.4f}", f"{base['median_s'] / r['median_s']:.2f}x" if base else "-",
                      f"{r['jf'] - base['jf']:+.3f}" if base else "-"]
        rows.append(cells)
    return [
        "## int8",
        "",
        (f"The networks that take `--dtype int8`, on the clip timed above, against the {dtype} rows: **int8** "
         "calibrates the large convolutions on each video's first frame (`vidseg segment --dtype int8`); **int8 "
         f"export** runs the bundled weights exported with `vidseg export --dtype int8`, calibrated once on "
         f"{int8['calibration']} (not the timed clip). J&F change = int8 J&F - {dtype} J&F on the same clip; the "
         "held-out DAVIS figures and the full HS2S's memory are in docs/experiments.md, \"int8 inference\"."
         + (f" No int8 rows for {', '.join(int8['float_only'])}: the bundled network runs in float precisions only."
            if int8.get("float_only") else "")),
        "",
        *_table(["method", "frame size", "objects", f"{dtype} s/frame", f"{dtype} J&F", "int8 s/frame", "speed-up",
                 "J&F change", "int8 export s/frame", "speed-up", "J&F change"], rows),
        "",
    ]


def _roofline_lines(roofline: dict[str, Any] | None) -> list[str]:
    if not roofline:
        return []
    calibration = roofline["calibration"]
    shapes = ", ".join(f"{c_in}->{c_out} {k}x{k}{' depthwise' if groups > 1 else ''} at {h}x{w}: "
                       f"{row['gflops_per_s']:.1f}" for row in calibration["rows"]
                       for _, c_in, c_out, k, h, w, groups in [row["shape"]])
    rows = [[r["method"], r["size"], str(r["objects"]), f"{r['gflop_per_frame']:.2f}", f"{r['median_s']:.4f}",
             "-" if r["achieved_gflops_per_s"] is None else f"{r['achieved_gflops_per_s']:.1f}",
             "-" if r["fraction_of_peak"] is None else f"{100 * r['fraction_of_peak']:.0f} %"] for r in roofline["rows"]]
    lines = [
        "## Roofline",
        "",
        (f"FLOPs of one frame's torch work (`torch.utils.flop_counter`; OpenCV work such as flow is not counted, "
         f"so `-`) against the machine's measured convolution throughput: **{calibration['peak_gflops_per_s']:.1f} "
         f"GFLOP/s** ({calibration['dtype']}, {calibration['device']}, channels-last, the best of: {shapes} GFLOP/s)."),
        "",
        *_table(["method", "frame size", "objects", "GFLOP/frame", "median s/frame", "achieved GFLOP/s", "of peak"],
                rows),
        "",
    ]
    if roofline["breakdown"]:
        of = roofline["breakdown_of"]
        lines += [f"FLOPs per module of the largest, {of['method']} at {of['size']} with {of['objects']} object(s):",
                  "", *_table(["module", "GFLOP/frame", "share"],
                              [[f"`{r['module']}`", f"{r['gflops']:.2f}", f"{100 * r['share']:.1f} %"]
                               for r in roofline["breakdown"]]), ""]
    return lines


def _eval_lines(evaluation: dict[str, Any]) -> list[str]:
    if evaluation["skipped"]:
        return [f"skipped: {evaluation['skipped']}"]
    header = ["task", "jobs", "wall s", "CPU s", "peak RSS", "official toolkit", "speed-up", "memory ratio",
              "max abs diff to official CSV", "J&F"]
    rows = [[r["task"], str(r["jobs"]), f"{r['wall_s']:.2f}", f"{r['cpu_s']:.2f}", f"{r['rss_mb']:.0f} MB",
             f"{r['official_wall_s']} s / {r['official_rss_gb']} GB", f"{r['speedup']:.1f}x",
             f"{r['memory_ratio']:.0f}x", "n/a" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.1e}",
             f"{r['jf']:.4f}"] for r in evaluation["rows"]]
    return [f"Conformance set: `{evaluation['data']}`.", "", *_table(header, rows), "",
            ("speed-up = official toolkit wall time / ours; memory ratio = official peak RSS / ours. The official "
            "figures are anchors measured earlier (see Anchors).")]


def _anchor_lines(results: dict[str, Any]) -> list[str]:
    anchors = results["anchors"]
    measured = {r["task"]: r for r in results["eval"]["rows"]}
    eval_rows = []
    for task, official in anchors["eval"]["tasks"].items():
        ours = measured.get(task)
        eval_rows.append([task, f"{official['wall_s']} s", f"{official['rss_gb']} GB",
                          f"{ours['wall_s']:.2f} s ({ours['speedup']:.1f}x)" if ours else "-"])
    speed_rows = []
    for anchor in anchors["speed"]["rows"]:
        same = [r for r in results["speed"] if get_method(r["method"]).needs_checkpoint and not r["error"]
                and r["working_size"] == anchor["size"] and r["objects"] == anchor["objects"]]
        this_run = ", ".join(f"{r['median_s']:.3f} ({r['method']} {r['dtype']}, {r['size']} frames)" for r in same)
        speed_rows.append([anchor["size"], str(anchor["objects"]), f"{anchor['reference_fp32_s']:.3f}",
                           f"{anchor['ours_bf16_s']:.3f}", f"{anchor['reference_fp32_s'] / anchor['ours_bf16_s']:.1f}x",
                           this_run or "-"])
    return [
        ("Figures measured earlier on the development machine (2-core AMD EPYC, no GPU); they compare with this "
        "run only when it ran on that machine."),
        "",
        f"**Official DAVIS toolkit** — {anchors['eval']['provenance']}.",
        "",
        *_table(["task", "official wall", "official peak RSS", "this run (speed-up)"], eval_rows),
        "",
        (f"**HS2S, s/frame** — {anchors['speed']['provenance']}. \"this run\" lists the network methods "
        "measured above at the same working size and number of objects."),
        "",
        *_table(["network size", "objects", "reference-style HS2S fp32 + autograd", "our HS2S bf16",
                 "speed-up", "this run"], speed_rows),
    ]


def render_markdown(results: dict[str, Any]) -> str:
    """The generated ``docs/benchmarks.md``."""
    settings, memory = results["settings"], results["memory"]
    machine = results["machine"]
    width = max(map(len, machine))
    threads = "default" if settings["threads"] is None else settings["threads"]
    lines = [
        (f"_Generated by `vidseg bench`: `{results['command']}` ({machine['date']}, took "
        f"{results['elapsed_s']:.0f} s). Do not edit; rerun the command._"),
        "",
        "# Benchmarks",
        "",
        "## Machine",
        "",
        "```",
        *(f"{key:<{width}} : {value}" for key, value in machine.items()),
        "```",
        "",
        "## Settings",
        "",
        (f"* methods: {', '.join(settings['methods'])}; frame sizes {', '.join(settings['sizes'])}; objects "
        f"{', '.join(map(str, settings['objects']))}"),
        (f"* {settings['frames']} timed frames after {settings['warmup']} warm-up frames; frame 0 takes the masks "
        "and is timed apart (\"first frame\"); with torch.compile the first warm-up frame compiles"),
        (f"* network methods: device {settings['device']}, dtype {settings['dtype']}, torch.compile "
        f"{'on' if settings['compile'] else 'off'}; threads: {threads} (torch and OpenCV)"),
        (f"* segment memory: {memory['method']}, {memory['size']}, {memory['objects']} objects, lengths "
        f"{', '.join(str(r['length']) for r in memory['rows'])}, one fresh process each"),
        "* evaluator: 1 job, one fresh process per task",
        "* peak RSS = the measured process's `VmHWM`",
        *([] if settings["device"] != "cpu" else [
            ("* GPU: not measured in this run; on a GPU machine `vidseg bench --device cuda --dtype bfloat16 "
             "--compile` adds those figures")]),
        "* what the methods score: `s2s++` is the bundled model (docs/model_card.md), `flow` needs no weights",
        "",
        "## Seconds per frame",
        "",
        ("A synthetic clip (`vidseg.data.synth`, no occlusion) driven frame by frame through an `InferenceSession`; "
        "median, min and max over the timed frames; J&F of its masks against the clip's ground truth "
        "(semi-supervised protocol, the masks given on frame 0)."),
        "",
        *_speed_table(results["speed"]),
        "",
        *_roofline_lines(results.get("roofline")),
        *_int8_lines(results),
        "## `vidseg segment`: peak RSS against video length",
        "",
        "Synthetic .mp4 videos segmented by `segment_video` (masks written as PNG), each in a fresh process.",
        "",
        *_table(["frames", "peak RSS", "frames/s"],
                [[f"{r['length']:,}", f"{r['peak_rss_mb']:.0f} MB", f"{r['fps']:.1f}"] for r in memory["rows"]]),
        "",
        f"Ratio {memory['rows'][-1]['length']:,} / {memory['rows'][0]['length']:,} frames: **{memory['ratio']:.3f}**.",
        "",
        "## Evaluator on the DAVIS 2017 conformance set",
        "",
        *_eval_lines(results["eval"]),
        "",
        "## Anchors",
        "",
        *_anchor_lines(results),
        "",
        "---",
        "",
        ("Studies measured by hand (flow tuning on DAVIS, synthetic generator speed, evaluation details, the "
        "S2S-family speed and memory study): [experiments.md](experiments.md) (docs/experiments.md)."),
    ]
    return "\n".join(lines) + "\n"


def write_results(results: dict[str, Any], markdown: str | os.PathLike, json_path: str | os.PathLike) -> None:
    """Write the Markdown report and the raw JSON, each atomically."""
    from vidseg.io.atomic import atomic_write_text

    atomic_write_text(markdown, render_markdown(results))
    atomic_write_text(json_path, json.dumps(results, indent=1) + "\n")
