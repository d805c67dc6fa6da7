"""Speed (s/frame) of OVSNet's one-pass inference, whole step and its parts, on real 480p frames.

Frames: the first ``--frames`` + 1 frames of a shared DAVIS-2016 video, resized to 854x480, with its first-frame
mask; the first frame (given mask) is not timed. Each frame runs through an
:class:`~vidseg.inference.session.InferenceSession` with :class:`~vidseg.inference.ovsnet.OVSNetPropagator` at the
full 480p working size; the detector resizes to ``test_size`` (480: native; 800: the paper's shorter side). Parts:
``detect`` (backbone + FPN + RPN + heads + embeddings), ``flow`` (DIS) and ``refine`` (MGA on one warped mask),
timed separately on the same frames. Networks: the CPU-size checkpoint (``--checkpoint``) and the paper-size
ResNet-50 network of ``configs/ovsnet.yaml`` (random weights: speed does not depend on them).

    python benchmarks/bench_ovsnet_speed.py --checkpoint runs/ovsnet/best.pt [--frames 8] [--threads 2] [--json F]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml

from vidseg.data.davis import DavisIndex
from vidseg.inference.ovsnet import OVSNetPropagator
from vidseg.inference.session import InferenceSession
from vidseg.io.masks import read_mask
from vidseg.machine import format_machine_info
from vidseg.models.checkpoint import load_model
from vidseg.models.ovsnet import build_model


def frames_480p(root: Path, sequence: str, count: int) -> tuple[list[np.ndarray], np.ndarray]:
    seq = next(iter(DavisIndex(root, year="2016", split="train", resolution="240p", sequences=[sequence])))
    frames = [cv2.resize(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB), (854, 480), interpolation=cv2.INTER_LINEAR)
              for p in seq.frame_paths[: count + 1]]
    mask = cv2.resize(read_mask(seq.mask_paths[seq.frame_names[0]]), (854, 480), interpolation=cv2.INTER_NEAREST)
    return frames, mask


def measure(model, frames: list[np.ndarray], mask: np.ndarray, test_size: int) -> dict[str, float]:
    propagator = OVSNetPropagator(model, max_side=854, test_size=test_size)
    session = InferenceSession(propagator)
    session.step(frames[0], mask)
    steps = []
    for frame in frames[1:]:
        start = time.perf_counter()
        session.step(frame)
        steps.append(time.perf_counter() - start)
    detect, flow, refine = [], [], []
    template = torch.from_numpy((mask > 0).astype(np.float32))[None]
    for previous, frame in itertools.pairwise(frames):
        start = time.perf_counter()
        found = propagator._detect(propagator.model, frame)
        detect.append(time.perf_counter() - start)
        start = time.perf_counter()
        propagator.flow(frame, previous)
        flow.append(time.perf_counter() - start)
        start = time.perf_counter()
        propagator.model.refine_masks(found, template)
        refine.append(time.perf_counter() - start)
    return {"step": statistics.median(steps), "detect": statistics.median(detect), "flow": statistics.median(flow),
            "refine": statistics.median(refine), "paths": dict(session.state.paths)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="CPU-size OVSNet checkpoint")
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--sequence", default="boat")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--test-sizes", type=int, nargs="*", default=[480, 800])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    frames, mask = frames_480p(args.shared / "data" / "davis2016-train-240p", args.sequence, args.frames)
    networks = []
    if args.checkpoint:
        networks.append(("CPU-size (Lite0, FPN 128)", load_model(args.checkpoint)))
    paper = yaml.safe_load(Path("configs/ovsnet.yaml").read_text())["model"]
    paper.update(backbone_weights=None, detector_weights=None)
    torch.manual_seed(0)
    networks.append(("paper-size (ResNet-50 FPN)", build_model(paper).eval()))
    print(format_machine_info())
    print(f"settings : {args.frames} frames of {args.sequence} at 854x480, float32, {args.threads} threads, medians")
    rows = []
    print("| network | detector shorter side | s/frame | detect | flow (DIS) | refine (1 mask) |")
    print("|---|---|---|---|---|---|")
    for name, model in networks:
        for size in args.test_sizes:
            row = {"network": name, "test_size": size, **measure(model, frames, mask, size)}
            rows.append(row)
            print(f"| {name} | {size} | {row['step']:.3f} | {row['detect']:.3f} | {row['flow']:.3f} | "
                  f"{row['refine']:.3f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": format_machine_info(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
