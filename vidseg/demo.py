"""The end-to-end demo: generated clips -> segmentation with the bundled model -> overlay videos -> J&F.

Two cases, both generated on the spot (no download): ``synthetic`` (flat shapes with occlusions and
look-alike distractors, :func:`~vidseg.data.synth.make_demo_clip`) and ``scene`` (one animal trotting
across a meadow behind a tree, like a DAVIS-2016 video, :func:`~vidseg.data.scene.make_scene_clip`).
Each is segmented with the demo's method and, for comparison, with flow.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidseg.data.scene import make_scene_clip
from vidseg.data.synth import DemoClip, make_demo_clip
from vidseg.evaluation import evaluate_sequence_arrays, global_metrics
from vidseg.inference.methods import heldout_scores
from vidseg.inference.runner import SegmentResult, segment_video
from vidseg.io.masks import read_mask
from vidseg.weights import bundled_methods

CASES = ("synthetic", "scene")


@dataclass(frozen=True)
class DemoCase:
    name: str
    clip: DemoClip
    segmentation: SegmentResult
    scores: dict[str, float]
    flow_scores: dict[str, float] | None  # the same clip with flow, for comparison

    def summary(self) -> str:
        seg = self.segmentation
        count = len(seg.object_ids)
        objects = f"{count} object" + ("" if count == 1 else "s")
        versus = "" if self.flow_scores is None else f"   (flow: J&F {self.flow_scores['J&F-Mean']:.3f})"
        return "\n".join(
            [
                f"[{self.name}] clip:    {self.clip.frames_dir} ({seg.num_frames} frames, {objects})",
                f"[{self.name}] method:  {seg.method} ({seg.frames_per_second:.1f} frames/s)",
                f"[{self.name}] masks:   {seg.mask_dir}",
                f"[{self.name}] overlay: {seg.overlay}",
                (f"[{self.name}] score:   J&F {self.scores['J&F-Mean']:.3f}  J {self.scores['J-Mean']:.3f}  "
                 f"F {self.scores['F-Mean']:.3f}{versus}"),
            ]
        )


@dataclass(frozen=True)
class DemoResult:
    method: str
    cases: list[DemoCase]

    def summary(self) -> str:
        return "\n".join(case.summary() for case in self.cases) + "\n(J&F: DAVIS semi-supervised protocol)"


def demo_method() -> str:
    """The bundled one-shot network with the best held-out J&F (its model card), any bundled network when no card
    has a score, else flow (with a note on stderr)."""
    bundled = bundled_methods()
    scores, _ = heldout_scores()
    scored = [name for name in bundled if name in scores]
    if scored:
        return max(scored, key=lambda name: scores[name])
    if bundled:
        return bundled[0]
    print("vidseg demo: no bundled network weights are installed; using flow (reinstall vidseg to get them)",
          file=sys.stderr)
    return "flow"


def _score(clip: DemoClip, mask_dir: Path) -> dict[str, float]:
    names = sorted(p.name for p in clip.gt_dir.glob("*.png"))
    gt = np.stack([read_mask(clip.gt_dir / name) for name in names])
    pred = np.stack([read_mask(mask_dir / name) for name in names])
    return global_metrics(evaluate_sequence_arrays(gt, pred, task="semi-supervised", name=clip.frames_dir.parent.name).objects)


def run_demo(
    out_dir: Path,
    num_frames: int = 40,
    num_objects: int = 2,
    seed: int = 0,
    method: str | None = None,
    cases: tuple[str, ...] = CASES,
    compare_with_flow: bool = True,
) -> DemoResult:
    """Write ``out_dir/CASE/clip`` (frames, first mask, ground truth), ``out_dir/CASE/masks`` and
    ``out_dir/CASE/overlay.mp4`` for each case, and score the masks."""
    method = method or demo_method()
    results = []
    for name in cases:
        folder = Path(out_dir) / name
        if name == "synthetic":
            clip = make_demo_clip(folder / "clip", seed=seed, num_frames=num_frames, num_objects=num_objects)
        elif name == "scene":
            clip = make_scene_clip(folder / "clip", seed=seed, num_frames=num_frames)
        else:
            raise ValueError(f"unknown demo case {name!r}; use {', '.join(CASES)}")
        segmentation = segment_video(clip.frames_dir, [clip.first_mask], folder / "masks", method=method,
                                     overlay=folder / "overlay.mp4", overwrite=True, progress=False)
        flow_scores = None
        if compare_with_flow and method != "flow":
            segment_video(clip.frames_dir, [clip.first_mask], folder / "masks-flow", method="flow", overwrite=True,
                          progress=False)
            flow_scores = _score(clip, folder / "masks-flow")
        results.append(DemoCase(name, clip, segmentation, _score(clip, segmentation.mask_dir), flow_scores))
    return DemoResult(method, results)
