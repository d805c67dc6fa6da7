"""Accuracy and speed of the flow method on the shared DAVIS-2016 training videos (240p).

Segments every sequence from its first-frame mask with ``segment_video`` and scores the results with
the DAVIS-2016 semi-supervised protocol (``vidseg.evaluation.evaluate``). Prints J&F, J, F, frames/s
and the per-sequence J&F.

    python benchmarks/bench_flow_davis.py [--root ../shared/data/davis2016-train-240p] [--preset ultrafast]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from vidseg.data.davis import DavisIndex
from vidseg.evaluation import evaluate
from vidseg.inference.flow import FlowPropagator
from vidseg.inference.runner import segment_video
from vidseg.machine import format_machine_info

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "davis2016-train-240p"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--preset", default="ultrafast")
    parser.add_argument("--sharpness", type=float, default=4.0)
    parser.add_argument("--occlusion-damping", type=float, default=1.0)
    args = parser.parse_args()
    index = DavisIndex(args.root, year="2016", split="train", resolution=None)
    propagator = FlowPropagator(
        preset=args.preset, sharpness=args.sharpness, occlusion_damping=args.occlusion_damping
    )
    print(format_machine_info())
    print(f"settings : {len(index)} sequences at {index.resolution}, preset {args.preset}, "
          f"sharpness {args.sharpness}, occlusion damping {args.occlusion_damping}")
    frames = 0
    seconds = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for sequence in index:
            start = time.perf_counter()
            result = segment_video(
                sequence.frame_paths[0].parent,
                [sequence.mask_paths[sequence.frame_names[0]]],
                Path(tmp) / sequence.name,
                method=propagator,
                progress=False,
            )
            seconds += time.perf_counter() - start
            frames += result.num_frames
        scores = evaluate(args.root, tmp, task="semi-supervised", dataset="davis", split="train", year="2016",
                          resolution=index.resolution)
    metrics = scores.global_metrics
    print(f"J&F {metrics['J&F-Mean']:.4f}  J {metrics['J-Mean']:.4f}  F {metrics['F-Mean']:.4f}  "
          f"J-Recall {metrics['J-Recall']:.4f}  J-Decay {metrics['J-Decay']:.4f}")
    print(f"speed: {frames / seconds:.1f} frames/s end to end (decode, flow, PNG writing), {frames} frames")
    print(" ".join(f"{s.name}:{s.jf_mean:.2f}" for s in scores.sequences))


if __name__ == "__main__":
    main()
