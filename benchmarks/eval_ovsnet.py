"""OVSNet on a held-out DAVIS-layout split: the paper's ablation (base detector + IoU path, + re-ID, + MGA), the
rho_iou / rho_reid sweeps, how often each path of the cascade decides, and the re-ID distance calibration.

Every variant segments each sequence from its first-frame mask (full length) and is scored with the DAVIS
semi-supervised protocol (benchmarks/eval_trained.py's ``score``). A frame's detections and its optical flow do not
depend on the cascade's settings, so they are computed once and shared by all variants (the scores are those of
separate runs; the frames/s column of later variants is therefore not a speed figure).

    python benchmarks/eval_ovsnet.py --checkpoint runs/ovsnet/best.pt --root ../shared/data/davis2016-train-240p \\
        --year 2016 --resolution 240p --sequences-from configs/cpu/ovsnet.yaml --calibrate-on configs/cpu/ovsnet.yaml \\
        --rho-iou 0.1 0.2 0.4 --rho-reid-scale 0.5 0.91 1.09 2 --json runs/ovsnet_eval.json \\
        --calibrated runs/ovsnet/calibrated.pt
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from eval_trained import fmt, score, val_sequences
from PIL import Image

from vidseg.config.schema import load_config
from vidseg.data.davis import DavisIndex
from vidseg.inference.ovsnet import PATHS, OVSNetPropagator
from vidseg.io.masks import read_mask
from vidseg.machine import format_machine_info
from vidseg.models.checkpoint import load_model, read_checkpoint, save_checkpoint
from vidseg.training.data import build_index

_DETECTIONS: dict[bytes, object] = {}
_FLOWS: dict[bytes, np.ndarray] = {}


def _key(*frames: np.ndarray) -> bytes:
    digest = hashlib.blake2b(digest_size=16)
    for frame in frames:
        digest.update(np.ascontiguousarray(frame).tobytes())
    return digest.digest()


class SharedWork(OVSNetPropagator):
    """An OVSNet propagator whose detections and flows are shared between instances; counts its paths."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.counts = dict.fromkeys(PATHS, 0)
        self._own_flow, self.flow = self.flow, self._shared_flow

    def _shared_flow(self, frame, previous):
        key = _key(frame, previous)
        if key not in _FLOWS:
            _FLOWS[key] = self._own_flow(frame, previous)
        return _FLOWS[key]

    def _detect(self, model, frame):
        key = _key(frame)
        if key not in _DETECTIONS:
            _DETECTIONS[key] = super()._detect(model, frame)
        return _DETECTIONS[key]

    def commit(self, state, frame, update):
        for path in (state.pending or {}).get("counts", []):
            self.counts[path] += 1
        super().commit(state, frame, update)


def calibrate(model, config: Path, every: int = 5) -> dict:
    """Distances between re-ID embeddings of ground-truth boxes in the config's *training* videos (every
    ``every``-th frame): the same object in different frames vs different objects of the same video (the
    distractors the re-ID path must tell apart), and the threshold that separates them best."""
    cfg = load_config(config)
    embeddings, objects, videos = [], [], []
    model.eval()
    for source in cfg.data.train:
        for sequence in build_index(source):
            for name, path in list(zip(sequence.frame_names, sequence.frame_paths))[::every]:
                if name not in sequence.mask_paths:
                    continue
                mask = read_mask(sequence.mask_paths[name])
                frame = np.array(Image.open(path).convert("RGB"))
                ids = [i for i in np.unique(mask) if i not in (0, 255)]
                if not ids:
                    continue
                found = model.detect([torch.from_numpy(frame).permute(2, 0, 1).float() / 255])[0]
                embeddings.extend(model.embed_masks(found, torch.from_numpy(np.stack([mask == i for i in ids]))).numpy())
                objects.extend(f"{source.root}/{sequence.name}/{i}" for i in ids)
                videos.extend(f"{source.root}/{sequence.name}" for _ in ids)
    x = np.stack(embeddings)
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    same_object = np.array(objects)[:, None] == np.array(objects)[None]
    same_video = np.array(videos)[:, None] == np.array(videos)[None]
    upper = np.triu(np.ones_like(same_object), 1)
    positive, negative = d[same_object & upper], d[same_video & ~same_object & upper]
    thresholds = np.quantile(np.concatenate([positive, negative]), np.linspace(0.01, 0.99, 99))
    accuracy = [((positive < t).mean() + (negative >= t).mean()) / 2 for t in thresholds]
    best = float(thresholds[int(np.argmax(accuracy))])
    return {"videos": len(set(videos)), "embeddings": len(x), "same_pairs": len(positive), "different_pairs": len(negative),
            "same_median": float(np.median(positive)), "same_p90": float(np.quantile(positive, 0.9)),
            "different_median": float(np.median(negative)), "different_p10": float(np.quantile(negative, 0.1)),
            "best_threshold": best, "balanced_accuracy": float(max(accuracy))}


def write_calibrated(checkpoint: Path, out: Path, rho_reid: float) -> None:
    """A copy of ``checkpoint`` (weights, config, meta) whose config carries the calibrated ``rho_reid``."""
    content = read_checkpoint(checkpoint)
    kept = {key: content[key] for key in ("method", "model_config", "model", "meta") if key in content}
    kept["model_config"] = {**kept["model_config"], "rho_reid": rho_reid}
    save_checkpoint(out, kept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--root", type=Path, required=True, help="DAVIS-layout dataset root")
    parser.add_argument("--year", default="2016")
    parser.add_argument("--split", default="train")
    parser.add_argument("--resolution", default=None)
    parser.add_argument("--sequences", nargs="*")
    parser.add_argument("--sequences-from", type=Path, help="take data.val.sequences of this training config")
    parser.add_argument("--max-side", type=int, default=432, help="working size (432: the 240p frames as they are)")
    parser.add_argument("--calibrate-on", type=Path, help="training config whose train videos calibrate rho_reid")
    parser.add_argument("--calibrated", type=Path, help="write a copy of the checkpoint with the calibrated rho_reid")
    parser.add_argument("--rho-reid-default", type=float, help="rho_reid of the ablation (default: calibrated, else "
                        "the checkpoint's)")
    parser.add_argument("--rho-iou", type=float, nargs="*", default=[], help="rho_iou values to sweep (full model)")
    parser.add_argument("--rho-reid", type=float, nargs="*", default=[], help="rho_reid values to sweep (full model)")
    parser.add_argument("--rho-reid-scale", type=float, nargs="*", default=[],
                        help="also sweep rho_reid at these multiples of the ablation's value (the paper: 2.1..2.5 "
                        "around 2.3 = 0.91..1.09)")
    parser.add_argument("--no-ablation", action="store_true")
    parser.add_argument("--only", nargs="*", default=None, metavar="LABEL",
                        help="run only the ablation rows whose label starts with one of these")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.sequences or (val_sequences(args.sequences_from) if args.sequences_from else None)
    index = DavisIndex(args.root, year=args.year, split=args.split, resolution=args.resolution, sequences=names)
    model = load_model(args.checkpoint)
    print(format_machine_info())
    print(f"settings : {len(index)} sequences of {args.root} ({index.resolution}), working max side {args.max_side}, "
          f"detector shorter side {model.cfg.test_size}, {args.threads} threads, checkpoint {args.checkpoint}")
    results: dict = {"rows": []}
    rho_reid = args.rho_reid_default
    if args.calibrate_on:
        results["calibration"] = calibrate(model, args.calibrate_on)
        print("re-ID calibration on training videos:", json.dumps(results["calibration"]))
        rho_reid = rho_reid or round(results["calibration"]["best_threshold"], 2)
        if args.calibrated:
            write_calibrated(args.checkpoint, args.calibrated, round(results["calibration"]["best_threshold"], 2))
    rho_reid = rho_reid or model.cfg.rho_reid
    variants = [] if args.no_ablation else [
        ("base (IoU path, raw flow)", {"reid": False, "refine": False}),
        ("+ re-ID", {"refine": False}),
        ("+ MGA (full)", {}),
        ("base + MGA (no re-ID)", {"reid": False}),
        ("+ MGA on every path's mask", {"refine_candidates": True}),
    ]
    if args.only is not None:
        variants = [(label, options) for label, options in variants if label.startswith(tuple(args.only))]
    variants += [(f"rho_iou {v}", {"rho_iou": v}) for v in args.rho_iou]
    sweep = [*args.rho_reid, *(round(rho_reid * f, 3) for f in args.rho_reid_scale)]
    variants += [(f"rho_reid {v}", {"rho_reid": v}) for v in sweep]
    with tempfile.TemporaryDirectory() as tmp:
        for label, options in variants:
            options = {"rho_reid": rho_reid, **options}
            propagator = SharedWork(model, max_side=args.max_side, **options)
            row = score(f"ovsnet {label}", propagator, index, args, Path(tmp))[0]
            total = sum(propagator.counts.values())
            row["paths"] = {k: v / max(total, 1) for k, v in propagator.counts.items()}
            row["settings"] = {**options, "reid": options.get("reid", True), "refine": options.get("refine", True),
                               "refine_candidates": options.get("refine_candidates", False)}
            results["rows"].append(row)
            paths = ", ".join(f"{k} {v:.1%}" for k, v in row["paths"].items())
            print(f"| {row['method']} | {fmt(row['J&F'])} | {fmt(row['J'])} | {fmt(row['F'])} | {paths} |", flush=True)
    results["rho_reid"] = rho_reid
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
