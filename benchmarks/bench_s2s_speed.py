"""Speed (s/frame) and peak memory of S2S, S2S++ and HS2S inference on the CPU, ours against a reference-style run.

For every method, size and number of objects, each configuration runs in a fresh process and reports the
median seconds per frame over ``--frames`` frames (after one warm-up frame) and the process's peak RSS
(``ru_maxrss``, model construction included). Weights are random (seed 0) and identical for all variants of
a method; the frames are random, the first-frame masks random rectangles.

Variants:

* ``ours-fp32`` / ``ours-bf16`` — the shipped path: ``optimize_for_inference`` (BatchNorm folded,
  channels-last, weights and activations in float32 / bfloat16), ``torch.inference_mode()``, all objects in
  one batch, the first-frame reference features computed once (``init_state``), ``step`` per frame. The
  network is loaded with ``load_for_inference`` from the optimized state dict (written by a preparation
  process), so the bfloat16 run never holds float32 weights.
* ``ours-int8`` — ``ours-fp32`` with its large convolutions in int8 (:mod:`vidseg.models.quantize`), calibrated
  on the first frame (``init_state`` and one ``step`` onto it; ``vidseg segment --dtype int8`` takes 16 steps,
  which changes the scales, not the speed). The float32 network is loaded first, so the peak RSS holds both.
* ``ours-int8-export`` — the int8 network as ``vidseg export --dtype int8`` writes it (calibrated once, here on the
  first frame at 256x448 with one object), loaded with ``load_for_inference``: no float32 weights are ever held.
* ``ref-grad`` — the way the official code runs the same network: float32, BatchNorm unfolded, contiguous
  NCHW, each object separately, HS2S's RefEncoder(x0, y0) re-encoded every frame, and a plain forward with
  autograd recording (no ``no_grad``; the recurrent state is detached between frames so the graph does not
  chain over the video).
* ``ref-nograd`` — the same under ``torch.no_grad()`` (a fairer baseline).

    python benchmarks/bench_s2s_speed.py [--methods s2s s2s++ hs2s hs2s-fast] [--sizes 256x448 480x864]
        [--objects 1 3] [--frames 3] [--threads 2] [--baseline-methods hs2s] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from vidseg.machine import format_machine_info
from vidseg.models.optimize import load_for_inference, optimize_for_inference
from vidseg.models.s2s import S2SConfig, build_model, count_parameters, preset

# A smaller HS2S (same structure: two encoders, GC merge, skip memory, border head); also configs/hs2s_fast.yaml.
FAST_HS2S: dict[str, Any] = {
    "method": "hs2s",
    "backbone": "resnet18",
    "bottleneck": 256,
    "hidden": 256,
    "lstm_kernel": 3,
    "decoder_widths": (256, 128, 64, 32, 32),
    "decoder_kernel": 3,
    "skip_memory_kernel": 3,
    "skip_memory_channels": 256,
    "gc_inner": 128,
}

VARIANTS = ("ours-fp32", "ours-bf16", "ours-int8", "ours-int8-export", "ref-nograd", "ref-grad")
_DTYPES = {"ours-fp32": torch.float32, "ours-bf16": torch.bfloat16}


def config_for(method: str) -> S2SConfig:
    return S2SConfig(**FAST_HS2S) if method == "hs2s-fast" else preset(method)


def _inputs(height: int, width: int, objects: int, frames: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    video = [torch.rand(1, 3, height, width, generator=gen) for _ in range(frames)]
    masks = torch.zeros(objects, 1, height, width)
    for k in range(objects):
        top, left = (height // 8) * (k % 3 + 1), (width // 8) * (k % 3 + 1)
        masks[k, :, top : top + height // 4, left : left + width // 4] = 1
    return video, masks


# ----------------------------------------------------------------------------- one configuration (child)
def _prepare(method: str, folder: Path) -> None:
    """Write the optimized float32, bfloat16 and int8 state dicts of the seed-0 network."""
    from vidseg.models.quantize import quantize_convs

    torch.manual_seed(0)
    model = build_model(config_for(method)).eval()
    for variant, dtype in _DTYPES.items():
        fast = optimize_for_inference(model, dtype=dtype)
        torch.save(fast.state_dict(), folder / f"{method}-{variant}.pt")
        if dtype == torch.float32:
            video, masks = _inputs(256, 448, 1, 1)
            int8 = quantize_convs(fast, _calibrate(fast, video[0], masks))
            torch.save(int8.state_dict(), folder / f"{method}-ours-int8-export.pt")
            del int8
        del fast


def _calibrate(model: torch.nn.Module, frame: torch.Tensor, masks: torch.Tensor) -> dict:
    """int8 parameters observed over ``init_state`` and one ``step`` onto the frame."""
    from vidseg.models.quantize import calibrate_convs

    first = frame.contiguous(memory_format=torch.channels_last)
    return calibrate_convs(model, lambda: model.step(first, masks, model.init_state(first, masks)))


def _run_ours(model: torch.nn.Module, video: list[torch.Tensor], masks: torch.Tensor, dtype: torch.dtype) -> list[float]:
    times = []
    with torch.inference_mode():
        frames = [f.to(dtype).contiguous(memory_format=torch.channels_last) for f in video]
        state = model.init_state(frames[0], masks.to(dtype))
        prev = masks.to(dtype)
        for frame in frames[1:]:
            start = time.perf_counter()
            out, state = model.step(frame, prev, state)
            prev = torch.sigmoid(out.logits)
            times.append(time.perf_counter() - start)
    return times


def _run_reference(model: torch.nn.Module, video: list[torch.Tensor], masks: torch.Tensor, grad: bool) -> list[float]:
    """Reference-style loop: one object at a time, HS2S's first-frame reference re-encoded every frame."""
    times = []
    with torch.set_grad_enabled(grad):
        states = [model.init_state(video[0], masks[k : k + 1]) for k in range(len(masks))]
        states = [{key: value.detach() for key, value in s.items()} for s in states]
        prev = [masks[k : k + 1] for k in range(len(masks))]
        for frame in video[1:]:
            start = time.perf_counter()
            for k in range(len(masks)):
                if model.hybrid and "ref0" in states[k]:
                    states[k]["ref0"] = model.init_state(video[0], masks[k : k + 1])["ref0"]
                out, new = model.step(frame, prev[k], states[k])
                prev[k] = torch.sigmoid(out.logits).detach()
                states[k] = {key: value.detach() for key, value in new.items()}
                del out, new
            times.append(time.perf_counter() - start)
    return times


def run_one(method: str, size: str, objects: int, variant: str, frames: int, threads: int, folder: Path) -> dict:
    torch.set_num_threads(threads)
    height, width = map(int, size.split("x"))
    video, masks = _inputs(height, width, objects, frames + 2)  # first frame + warm-up + timed frames
    start = time.perf_counter()
    if variant == "ours-int8":
        from vidseg.models.quantize import quantize_convs

        state_dict = torch.load(folder / f"{method}-ours-fp32.pt", weights_only=True)
        model = load_for_inference(config_for(method), state_dict)
        del state_dict
        model = quantize_convs(model, _calibrate(model, video[0], masks))
        build_s = time.perf_counter() - start
        times = _run_ours(model, video, masks, torch.float32)
    elif variant == "ours-int8-export":
        model = load_for_inference(config_for(method), torch.load(folder / f"{method}-{variant}.pt", weights_only=True))
        build_s = time.perf_counter() - start
        times = _run_ours(model, video, masks, torch.float32)
    elif variant in _DTYPES:
        state_dict = torch.load(folder / f"{method}-{variant}.pt", weights_only=True)
        model = load_for_inference(config_for(method), state_dict, dtype=_DTYPES[variant])
        del state_dict
        build_s = time.perf_counter() - start
        times = _run_ours(model, video, masks, _DTYPES[variant])
    else:
        torch.manual_seed(0)
        model = build_model(config_for(method)).eval()
        build_s = time.perf_counter() - start
        times = _run_reference(model, video, masks, grad=variant == "ref-grad")
    timed = times[1:]
    return {
        "method": method, "size": size, "objects": objects, "variant": variant,
        "s_per_frame": statistics.median(timed), "times": timed, "build_s": build_s,
        "params_m": _parameters(method) / 1e6,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _parameters(method: str) -> int:
    """The float network's parameter count (an int8 network holds its large convolutions as packed weights)."""
    with torch.device("meta"):
        return count_parameters(build_model(config_for(method)))


# ----------------------------------------------------------------------------- driver (parent)
def _child(args: list[str]) -> dict | None:
    done = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else None


def _fmt_ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["s2s", "s2s++", "hs2s", "hs2s-fast"])
    parser.add_argument("--sizes", nargs="+", default=["256x448", "480x864"])
    parser.add_argument("--objects", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--frames", type=int, default=3, help="timed frames per configuration (after 1 warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--baseline-methods", nargs="+", default=["hs2s"],
                        help="methods that also run the ref-* variants (slow)")
    parser.add_argument("--quick", action="store_true", help="hs2s-fast and hs2s at 256x448, 1 object, 2 frames")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--one", nargs=5, metavar=("METHOD", "SIZE", "OBJECTS", "VARIANT", "FOLDER"), help=argparse.SUPPRESS)
    parser.add_argument("--prepare", nargs=2, metavar=("METHOD", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        torch.set_num_threads(args.threads)
        _prepare(args.prepare[0], Path(args.prepare[1]))
        return
    if args.one:
        method, size, objects, variant, folder = args.one
        print(json.dumps(run_one(method, size, int(objects), variant, args.frames, args.threads, Path(folder))))
        return
    if args.quick:
        args.methods, args.sizes, args.objects, args.frames = ["hs2s-fast", "hs2s"], ["256x448"], [1], 2
    torch.set_num_threads(args.threads)
    print(format_machine_info())
    print(f"settings : methods {args.methods}, sizes {args.sizes}, objects {args.objects}, {args.frames} timed "
          f"frames (median, after 1 warm-up), {args.threads} threads, reference-style baselines for "
          f"{args.baseline_methods}, each configuration in a fresh process", flush=True)
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            ours = [v for v in args.variants if v.startswith("ours")]
            if ours:
                _child(["--prepare", method, tmp, "--threads", str(args.threads)])
            for size in args.sizes:
                for objects in args.objects:
                    for variant in args.variants:
                        if variant.startswith("ref") and method not in args.baseline_methods:
                            continue
                        row = _child(["--one", method, size, str(objects), variant, tmp,
                                      "--frames", str(args.frames), "--threads", str(args.threads)])
                        results.append(row)
                        print(f"{method:>9} {size:>8} {objects} obj {variant:>10}: {row['s_per_frame']:7.3f} s/frame "
                              f"(frames {', '.join(f'{t:.2f}' for t in row['times'])}), peak RSS "
                              f"{row['peak_rss_mb']:.0f} MB, {row['params_m']:.1f} M params, "
                              f"load avg {os.getloadavg()[0]:.1f}", flush=True)
            for name in ("ours-fp32", "ours-bf16", "ours-int8-export"):
                path = Path(tmp) / f"{method}-{name}.pt"
                if path.exists():
                    path.unlink()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print()
    print("| method | size | objects | " + " | ".join(f"{v} s/frame (peak RSS)" for v in args.variants)
          + " | ref-grad / ours-fp32 | ref-grad / ours-bf16 | ref-grad / ours-int8 | ref-grad / ours-int8-export |")
    print("| --- " * (3 + len(args.variants) + 4) + "|")
    index = {(r["method"], r["size"], r["objects"], r["variant"]): r for r in results}
    for method in args.methods:
        for size in args.sizes:
            for objects in args.objects:
                cells, speed = [], {}
                for variant in args.variants:
                    row = index.get((method, size, objects, variant))
                    speed[variant] = row["s_per_frame"] if row else None
                    cells.append(f"{row['s_per_frame']:.3f} ({row['peak_rss_mb']:.0f} MB)" if row else "-")
                ratios = [_fmt_ratio(speed.get("ref-grad"), speed.get("ours-fp32")),
                          _fmt_ratio(speed.get("ref-grad"), speed.get("ours-bf16")),
                          _fmt_ratio(speed.get("ref-grad"), speed.get("ours-int8")),
                          _fmt_ratio(speed.get("ref-grad"), speed.get("ours-int8-export"))]
                print(f"| {method} | {size} | {objects} | " + " | ".join(cells + ratios) + " |")


if __name__ == "__main__":
    main()
