"""J&F of methods on the held-out sets, per set and per video, with picture strips of the worst videos.

The sets, all made from the 6 held-out DAVIS-2016 training videos of the shared data (never trained on):
- ``davis``: the 6 videos themselves (DAVIS 2016, one object);
- ``composites``: 12 composite clips of 2-4 of their objects over one of them (``bundle_rvos.heldout_composites``);
- ``lookalike``: each video with its own object, mirrored and 12 frames later, pasted in as object 2
  (:func:`vidseg.data.lookalike.lookalike_clip`);
- ``crossing``: each video's object crossed by the next video's object (:func:`vidseg.data.lookalike.crossing_clip`).

Every method runs through ``vidseg predict``'s runner from the first frame's masks; the results stay in
``--runs/heldout-results/<method>/<set>`` (a rerun with the same weights, options and precision continues; one with
others is refused: delete the folder). The worst three videos of the first method over the
multi-object sets get a strip each in ``--strips``: six frames, its masks above the ground truth.

    python benchmarks/eval_heldout_sets.py --method match_refine --method match --method flow \\
        [--online-steps 30] [--long-term 4] [--background-stride 2] [--max-side 448] \\
        [--strips docs/failures] [--json docs/heldout_sets.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
from bundle_rvos import heldout_composites
from eval_trained import segment_all, val_sequences
from PIL import Image

from vidseg.data.davis import DavisIndex
from vidseg.data.lookalike import crossing_set, lookalike_set
from vidseg.evaluation import evaluate
from vidseg.inference.methods import build_propagator
from vidseg.io.masks import read_mask
from vidseg.io.overlay import overlay_frame
from vidseg.machine import format_machine_info
from vidseg.models.checkpoint import read_checkpoint
from vidseg.registry import get_method
from vidseg.weights import bundled_methods, bundled_path

REPO = Path(__file__).resolve().parents[1]
SETS = ("davis", "composites", "lookalike", "crossing")


TUNING = ["breakdance-flare", "car-turn", "kite-walk", "lucia", "motorbike"]


def held_out_sets(shared: Path, runs: Path, tuning: bool = False) -> dict[str, tuple[Path, str]]:
    """Set name -> (DAVIS-layout root, year); written under ``runs`` the first time. ``tuning``: the same sets made
    from 5 training videos (:data:`TUNING`; no composites), to choose settings on without looking at the held-out
    ones."""
    davis = shared / "data" / "davis2016-train-240p"
    names = TUNING if tuning else val_sequences(REPO / "vidseg" / "configs" / "cpu" / "s2s++_lite0.yaml")
    prefix = "tuning" if tuning else "heldout"
    sources = list(DavisIndex(davis, "2016", "train", "240p", sequences=names))
    sets = {"davis": (davis, "2016")}
    if not tuning:
        heldout_composites(shared, names, runs / "composite-heldout")
        sets["composites"] = (runs / "composite-heldout", "2017")
    for name, write in (("lookalike", lookalike_set), ("crossing", crossing_set)):
        if not (runs / f"{prefix}-{name}" / "ImageSets").is_dir():
            write(runs / f"{prefix}-{name}", sources, "240p")
        sets[name] = (runs / f"{prefix}-{name}", "2017")
    return sets


def split_of(root: Path, year: str) -> str:
    return "train" if (root / "ImageSets" / year / "train.txt").is_file() else "val"


def run_set(propagator, root: Path, year: str, names: list[str] | None, out: Path,
            settings: dict) -> tuple[dict, float]:
    """J&F of ``propagator`` on one set (its masks kept in ``out``: a rerun with the same ``settings`` continues,
    one with others is refused) and the frames/s of the videos segmented now."""
    split = split_of(root, year)
    index = DavisIndex(root, year, split, "240p", sequences=names)
    speed = segment_all(propagator, index, out, zero_shot=False, settings=settings)
    scores = evaluate(root, out, year=year, split=split, resolution="240p", sequences=index.names)
    return {"J&F": scores.global_metrics["J&F-Mean"], "per-video": {s.name: s.jf_mean for s in scores.sequences}}, speed


def strip(root: Path, results: Path, name: str, height: int = 100) -> np.ndarray:
    """Six evenly spaced frames of ``name``: the results' overlay above the ground truth's."""
    frames = sorted((root / "JPEGImages" / "240p" / name).glob("*.jpg"))
    picks = np.linspace(0, len(frames) - 1, 6).round().astype(int)
    columns = []
    for index in picks:
        frame = np.asarray(cv2.cvtColor(cv2.imread(str(frames[index])), cv2.COLOR_BGR2RGB))
        stem = frames[index].stem
        rows = [overlay_frame(frame, read_mask(folder / f"{stem}.png"), label=label)
                for folder, label in ((results / name, f"{stem} result"), (root / "Annotations" / "240p" / name,
                                                                           "truth"))]
        column = np.concatenate(rows, axis=0)
        columns.append(cv2.resize(column, (round(column.shape[1] * 2 * height / column.shape[0]), 2 * height),
                                  interpolation=cv2.INTER_AREA))
    return np.concatenate(columns, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", action="append", metavar="NAME[=CHECKPOINT]",
                        help="a method (bundled weights) or a label and a `vidseg train` checkpoint; "
                             "default: match_refine, match, flow")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--runs", type=Path, default=REPO / "runs")
    parser.add_argument("--sets", nargs="*", default=list(SETS), choices=SETS)
    parser.add_argument("--online-steps", type=int, action="append", default=[], metavar="N",
                        help="also run each method that adapts online with N first-frame steps (as NAME+olN)")
    parser.add_argument("--long-term", type=int, action="append", default=[], metavar="N",
                        help="also run each method with a long-term memory of N frames (as NAME+ltN)")
    parser.add_argument("--background-stride", type=int, action="append", default=[], metavar="N",
                        help="also run each method that takes it with --background-stride N (as NAME+bgN)")
    parser.add_argument("--max-side", type=int, action="append", default=[], metavar="PX",
                        help="also run each method at this working size (as NAME@PX)")
    parser.add_argument("--dtype", default="auto", help="precision of every method (auto: bfloat16 where native)")
    parser.add_argument("--tuning", action="store_true",
                        help="the sets made from 5 training videos instead of the held-out ones (to choose settings)")
    parser.add_argument("--strips", type=Path, help="write the worst three videos' strips (first method) here")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    checkpoints = dict(m.split("=", 1) if "=" in m else (m, None) for m in args.method or
                       ["match_refine", "match", "flow"])
    method_of = {name: read_checkpoint(path)["method"] if path else name for name, path in checkpoints.items()}
    variants = {name: (name, {}) for name in checkpoints}  # label -> (method label, options)
    option_variants = {"online_steps": ("ol", args.online_steps), "long_term": ("lt", args.long_term),
                       "background_stride": ("bg", args.background_stride)}  # option -> (label suffix, values)
    for name in list(variants):
        taken = get_method(method_of[name]).options
        for option, (suffix, values) in option_variants.items():
            if option in taken:
                variants.update({f"{name}+{suffix}{value}": (name, {option: value}) for value in values})
        variants.update({f"{name}@{side}": (name, {"max_side": side}) for side in args.max_side})
    methods = list(variants)
    sets = held_out_sets(args.shared, args.runs, args.tuning)
    args.sets = [s for s in args.sets if s in sets]
    print(format_machine_info())
    figures: dict[str, dict] = {}
    davis_videos = TUNING if args.tuning else val_sequences(REPO / "vidseg" / "configs" / "cpu" / "s2s++_lite0.yaml")
    for method, (base, options) in variants.items():
        dtype = args.dtype if "dtype" in get_method(method_of[base]).options else None  # flow has no network
        propagator = build_propagator(None if checkpoints[base] else base, checkpoints[base], dtype=dtype, **options)
        weights = checkpoints[base] or (bundled_path(base) if base in bundled_methods() else None)
        settings = {"method": base, "options": options, "dtype": args.dtype,
                    "weights": weights and hashlib.sha256(Path(weights).read_bytes()).hexdigest()}
        for set_name in args.sets:
            root, year = sets[set_name]
            out = args.runs / ("tuning-results" if args.tuning else "heldout-results") / method / set_name
            names = davis_videos if set_name == "davis" else None
            scores, speed = run_set(propagator, root, year, names, out, settings)
            figures.setdefault(method, {})[set_name] = {**scores, "frames/s": speed}
            timing = f"{speed:.1f} frames/s" if speed else "masks of an earlier run"
            print(f"{method:14s} {set_name:11s} J&F {scores['J&F']:.3f}  ({timing})", flush=True)
    print("\n| method | " + " | ".join(args.sets) + " |\n|---|" + "---|" * len(args.sets))
    for method, per_set in figures.items():
        print(f"| {method} | " + " | ".join(f"{per_set[s]['J&F']:.3f}" for s in args.sets) + " |")
    print("\nper video (J&F):")
    for set_name in args.sets:
        videos = figures[methods[0]][set_name]["per-video"]
        print(f"\n| {set_name} | " + " | ".join(methods) + " |\n|---|" + "---|" * len(methods))
        for video in videos:
            print(f"| {video} | " + " | ".join(f"{figures[m][set_name]['per-video'][video]:.3f}" for m in methods)
                  + " |")
    if args.strips:
        worst = sorted((score, set_name, video) for set_name in args.sets if set_name != "davis"
                       for video, score in figures[methods[0]][set_name]["per-video"].items())[:3]
        args.strips.mkdir(parents=True, exist_ok=True)
        for score, set_name, video in worst:
            root, _ = sets[set_name]
            picture = strip(root, args.runs / ("tuning-results" if args.tuning else "heldout-results") / methods[0]
                            / set_name, video)
            path = args.strips / f"{methods[0]}-{set_name}-{video}.png"
            Image.fromarray(picture).quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)  # ~4x smaller
            print(f"strip: {path} (J&F {score:.3f})")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
