"""Score trained checkpoints and weightless methods (flow, match) on a held-out DAVIS-layout split.

Every method segments each sequence from its first-frame mask (full length, all objects) through ``vidseg
predict``'s runner (:func:`vidseg.inference.predict.predict_videos`); the results are scored with the DAVIS
semi-supervised protocol plus the HS2S analyses (early t < 10 vs late t > 20 frames; frames after a first full
occlusion, 0 px threshold).

    python benchmarks/eval_trained.py --root ../shared/data/davis2016-train-240p --year 2016 \\
        --sequences-from configs/cpu/hs2s.yaml --method s2s=runs/s2s/best.pt --method hs2s=runs/hs2s/best.pt \\
        --runnable flow --runnable match [--online-steps 20] [--record vidseg/weights/heldout.json] \\
        [--zero-shot rvos=runs/rvos_zero_shot/best.pt]

``--record`` writes the weightless methods' scores to the table ``vidseg segment`` chooses its default from.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
import yaml

from vidseg.data.davis import DavisIndex
from vidseg.errors import VidsegError
from vidseg.evaluation import evaluate
from vidseg.inference.methods import build_propagator
from vidseg.inference.predict import ResultsFolder, predict_videos
from vidseg.inference.predict_tasks import davis_tasks
from vidseg.machine import format_machine_info
from vidseg.models.checkpoint import read_checkpoint, save_checkpoint
from vidseg.registry import get_method


def val_sequences(config: Path) -> list[str]:
    """The ``data.val.sequences`` list of a training config."""
    with open(config) as handle:
        values = yaml.safe_load(handle)
    return list(values["data"]["val"]["sequences"])


def segment_all(propagator, index: DavisIndex, out_root: Path, zero_shot: bool,
                settings: dict | None = None) -> float:
    """Segment every sequence not yet done in ``out_root`` with ``vidseg predict``'s runner (from its first-frame
    mask, or with none); returns their frames/s (reading, network and writing, start-up excluded; 0: none to do).
    With ``settings`` (what made the masks: method, weights, options) a folder of other settings is refused, so a
    rerun never scores masks of other weights as these."""
    tasks = davis_tasks(index.root, out_root, index.year, index.split, index.resolution, "semi-supervised",
                        [s.name for s in index]).tasks
    if zero_shot:
        tasks = [replace(task, masks=()) for task in tasks]
    results = ResultsFolder(out_root, settings or {})
    if settings:
        try:
            results.check(overwrite=False)
        except VidsegError as error:  # its fix names predict's --overwrite; here the folder is the benchmark's own
            reason = str(error).removesuffix(f" ({error.fix})")
            raise SystemExit(f"{reason}: delete the folder to score these settings") from None
        results.start(overwrite=False)
    outcomes = predict_videos(tasks, results, propagator)
    failed = [o for o in outcomes if o.error]
    if failed:
        raise SystemExit(f"{out_root}: {failed[0].name}: {failed[0].error}")
    new = [o for o in outcomes if not o.earlier]
    return sum(o.frames for o in new) / sum(o.seconds for o in new) if new else 0.0


def score(name, propagator, index: DavisIndex, args, tmp: Path, zero_shot: bool = False) -> list[dict]:
    """One row (semi-supervised), or two for a zero-shot run: the DAVIS unsupervised protocol and the RVOS
    paper's first-frame matching."""
    out_root = tmp / name
    speed = segment_all(propagator, index, out_root, zero_shot)
    protocols = [("unsupervised", "sequence", " (zero-shot, DAVIS unsupervised)"),
                 ("unsupervised", "first-frame", " (zero-shot, first-frame matching)")] if zero_shot else \
        [("semi-supervised", "sequence", "")]
    rows = []
    for task, matching, label in protocols:
        scores = evaluate(args.root, out_root, task=task, matching=matching, dataset="davis", split=args.split,
                          year=args.year, resolution=index.resolution, sequences=[s.name for s in index])
        g, length, occlusion = scores.global_metrics, scores.analyses["length"], scores.analyses["occlusion"]["0"]
        rows.append({
            "method": name + label,
            "J&F": g["J&F-Mean"], "J": g["J-Mean"], "F": g["F-Mean"],
            "J-early": length["J-early"], "J-late": length["J-late"], "F-early": length["F-early"],
            "F-late": length["F-late"],
            "J&F-after-occlusion": occlusion["J&F-Mean"], "occluded-objects": occlusion["n_objects"],
            "frames/s": speed,
            "per-sequence": {s.name: s.jf_mean for s in scores.sequences},
        })
    return rows


def fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def precision(method: str, dtype: str | None) -> dict[str, str | None]:
    """``dtype`` as a build option, for the methods that take one (a method without it refuses the option)."""
    return {"dtype": dtype} if "dtype" in get_method(method).options else {}


def with_model_options(checkpoint: Path, options: list[str], folder: Path) -> Path:
    """``checkpoint``, or a copy in ``folder`` whose model config has the ``KEY=VALUE`` ``options`` (YAML values)."""
    if not options:
        return checkpoint
    content = read_checkpoint(checkpoint)
    changes = {key: yaml.safe_load(value) for key, _, value in (option.partition("=") for option in options)}
    copy = folder / f"{checkpoint.stem}-{'-'.join(options)}.pt"
    return save_checkpoint(copy, {**content, "model_config": {**content["model_config"], **changes}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="DAVIS-layout dataset root")
    parser.add_argument("--year", default="2016")
    parser.add_argument("--split", default="train", help="ImageSets split the sequences come from")
    parser.add_argument("--resolution", default=None)
    parser.add_argument("--sequences", nargs="*", help="sequence names (default: the whole split)")
    parser.add_argument("--sequences-from", type=Path, help="take data.val.sequences of this training config")
    parser.add_argument("--method", action="append", default=[], metavar="NAME=CHECKPOINT")
    parser.add_argument("--runnable", action="append", default=[], metavar="NAME",
                        help="also score this method with its defaults (flow, match, a bundled network)")
    parser.add_argument("--zero-shot", action="append", default=[], metavar="NAME[=CHECKPOINT]",
                        help="segment with no mask (a zero-shot checkpoint, or a bundled zero-shot method) and score "
                        "with the DAVIS unsupervised protocol and with first-frame matching")
    parser.add_argument("--record", type=Path, help="write the --runnable scores as a held-out table (heldout.json)")
    parser.add_argument("--max-side", type=int, default=224, help="working size of the networks (their training size)")
    parser.add_argument("--dtype", default=None, help="precision of the --method / --zero-shot networks (default auto: "
                        "bfloat16 where native, else float32)")
    parser.add_argument("--online-steps", type=int, default=0,
                        help="also score every network with S2S-OL fine-tuning of this many steps")
    parser.add_argument("--online-lr", type=float, default=1e-4)
    parser.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                        help="change an inference setting of every --method checkpoint's model config "
                             "(e.g. feedback=match for match_refine)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.sequences or (val_sequences(args.sequences_from) if args.sequences_from else None)
    index = DavisIndex(args.root, year=args.year, split=args.split, resolution=args.resolution, sequences=names)
    print(format_machine_info())
    print(f"settings : {len(index)} sequences of {args.root} ({index.resolution}), networks at max side "
          f"{args.max_side}, {args.threads} threads")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.method:
            name, _, checkpoint = spec.partition("=")
            checkpoint = with_model_options(Path(checkpoint), args.model_option, Path(tmp))
            network = build_propagator(checkpoint=checkpoint, max_side=args.max_side, dtype=args.dtype)
            rows += score(name, network, index, args, Path(tmp))
            if args.online_steps:
                tuned = build_propagator(checkpoint=checkpoint, max_side=args.max_side, online_steps=args.online_steps,
                                        online_lr=args.online_lr)
                rows += score(f"{name}+OL{args.online_steps}", tuned, index, args, Path(tmp))
        for name in args.runnable:
            rows += score(name, build_propagator(name), index, args, Path(tmp))
        for spec in args.zero_shot:
            name, _, checkpoint = spec.partition("=")
            propagator = build_propagator(name if not checkpoint else None, checkpoint or None, max_side=args.max_side,
                                          dtype=args.dtype)
            rows += score(name, propagator, index, args, Path(tmp), zero_shot=True)
    header = ["method", "J&F", "J", "F", "J early", "J late", "F early", "F late", "J&F after occlusion", "frames/s"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        occl = f"{fmt(r['J&F-after-occlusion'])} ({r['occluded-objects']} obj.)"
        print(f"| {r['method']} | {fmt(r['J&F'])} | {fmt(r['J'])} | {fmt(r['F'])} | {fmt(r['J-early'])} | "
              f"{fmt(r['J-late'])} | {fmt(r['F-early'])} | {fmt(r['F-late'])} | {occl} | {r['frames/s']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if args.record:
        videos = f"{len(index)} held-out DAVIS-{args.year} videos ({', '.join(s.name for s in index)}), full length"
        table = {"videos": videos, "command": "python benchmarks/eval_trained.py " + " ".join(sys.argv[1:]),
                 "machine": format_machine_info(), "methods": {
                     r["method"]: {k: round(r[k], 4) for k in ("J&F", "J", "F", "frames/s")}
                     for r in rows if r["method"] in args.runnable}}
        args.record.write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
