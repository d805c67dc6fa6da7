"""The end-to-end demo: synthetic clip -> segmentation -> overlay video -> J&F."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidseg.data.synth import make_demo_clip
from vidseg.evaluation import evaluate_sequence_arrays, global_metrics
from vidseg.inference.methods import default_method
from vidseg.inference.runner import SegmentResult, segment_video
from vidseg.io.masks import read_mask


@dataclass(frozen=True)
class DemoResult:
    segmentation: SegmentResult
    frames_dir: Path
    scores: dict[str, float]

    def summary(self) -> str:
        seg = self.segmentation
        return "\n".join(
            [
                f"clip:    {self.frames_dir} ({seg.num_frames} frames, {len(seg.object_ids)} objects)",
                f"method:  {seg.method} ({seg.frames_per_second:.1f} frames/s)",
                f"masks:   {seg.mask_dir}",
                f"overlay: {seg.overlay}",
                "score:   J&F {J&F-Mean:.3f}  J {J-Mean:.3f}  F {F-Mean:.3f} (DAVIS semi-supervised protocol)".format(
                    **self.scores
                ),
            ]
        )


def run_demo(
    out_dir: Path, num_frames: int = 40, num_objects: int = 2, seed: int = 0, method: str | None = None
) -> DemoResult:
    """Write ``out_dir/clip`` (frames, first mask, ground truth), ``out_dir/masks`` and ``out_dir/overlay.mp4``."""
    clip = make_demo_clip(out_dir / "clip", seed=seed, num_frames=num_frames, num_objects=num_objects)
    segmentation = segment_video(
        clip.frames_dir,
        [clip.first_mask],
        out_dir / "masks",
        method=method or default_method(),
        overlay=out_dir / "overlay.mp4",
        overwrite=True,
    )
    names = sorted(p.name for p in clip.gt_dir.glob("*.png"))
    gt = np.stack([read_mask(clip.gt_dir / name) for name in names])
    pred = np.stack([read_mask(segmentation.mask_dir / name) for name in names])
    scored = evaluate_sequence_arrays(gt, pred, task="semi-supervised", name="demo")
    return DemoResult(segmentation, clip.frames_dir, global_metrics(scored.objects))
