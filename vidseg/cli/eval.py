"""``vidseg eval``: score a results folder against DAVIS or YouTube-VOS ground truth."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="score a results folder (DAVIS J/F as the official toolkit, YouTube-VOS seen/unseen)",
        description=(
            "Score one folder of PNG masks per sequence against the ground truth. Prints the global and "
            "per-object tables, writes global_results-<set>.csv, per-sequence_results-<set>.csv, "
            "results-<set>.json (and, with --plots, plots-<set>/) into --out (default: the results folder)."
        ),
        epilog="examples:\n"
        "  vidseg eval --gt DAVIS --results results/my-method --set val --jobs 2\n"
        "  vidseg eval --gt DAVIS --results results/rvos --task unsupervised --matching first-frame\n"
        "  vidseg eval --gt YouTubeVOS --results results/ytvos --dataset youtube-vos --set val-20",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--gt", required=True, metavar="ROOT",
                        help="dataset root (DAVIS or YouTube-VOS), or one sequence's folder of ground-truth PNGs "
                        "(then --results is that sequence's folder of result PNGs)")
    parser.add_argument("--results", required=True, metavar="DIR", help="folder with one sub-folder per sequence")
    parser.add_argument("--task", default="semi-supervised", choices=("semi-supervised", "unsupervised"),
                        help="semi-supervised: result ids are the first annotation's objects (first and last frames "
                        "not scored); unsupervised: up to 20 proposals matched to the objects (default: "
                        "semi-supervised)")
    parser.add_argument(
        "--matching", default="sequence", choices=("sequence", "first-frame"),
        help="unsupervised task: how proposals are assigned to objects. sequence (default): the official DAVIS "
        "protocol, Hungarian matching on J&F over the whole sequence, every frame scored; first-frame: the RVOS "
        "paper's zero-shot protocol, Hungarian matching on the first frame's J only, then each object scored "
        "against its proposal as in the semi-supervised task (first and last frames excluded)",
    )
    parser.add_argument("--dataset", default="davis", choices=("davis", "youtube-vos"),
                        help="ground-truth layout (default: davis)")
    parser.add_argument(
        "--set", dest="split", default=None,
        help="DAVIS ImageSets split (default val) or YouTube-VOS split: train, valid, train-80, val-20 (default)",
    )
    parser.add_argument("--year", default=None, choices=("2016", "2017"),
                        help="DAVIS year (2016 merges objects; default: 2017, or 2016 when the root has only "
                        "ImageSets/2016)")
    parser.add_argument("--resolution", default=None,
                        help="DAVIS resolution folder (480p, Full-Resolution, ...; default: 480p, or the only one)")
    parser.add_argument("--jobs", type=int, default=None, metavar="N",
                        help="processes scoring sequences in parallel: this one and N-1 workers (default: one per "
                        "core; 1: no workers)")
    parser.add_argument("--out", default=None, metavar="DIR", help="where to write CSV/JSON/plots (default: --results)")
    parser.add_argument("--plots", action="store_true",
                        help="also draw plots-<set>/*.png (J&F per sequence, J over time, length and occlusion "
                        "analyses; about 1 s more)")
    parser.add_argument("--no-plots", action="store_true", help=argparse.SUPPRESS)  # the default since plots are opt-in
    parser.add_argument(
        "--void", default="exclude", choices=("exclude", "background"),
        help="GT void pixels (255): left out of every measure (default), or counted as background as the "
        "released DAVIS toolkit effectively does",
    )
    parser.add_argument("--sequences", nargs="+", default=None, metavar="SEQ", help="only these sequences")
    parser.set_defaults(func=run)


def davis_layout(root: str, year: str | None, resolution: str | None, task: str,
                 say: bool = True) -> tuple[str, str]:
    """The DAVIS year and resolution folder to use: the ones given, else detected (and said on stderr)."""
    from vidseg.data.davis import detect_layout

    year, resolution, detected = detect_layout(root, year, resolution, task)
    if say and detected and (Path(root) / "ImageSets").is_dir():
        print(f"DAVIS layout of {root}: {' '.join(detected)} (detected; pass them to choose)", file=sys.stderr)
    return year, resolution


def run(args: argparse.Namespace) -> int:
    from vidseg.errors import VidsegError
    from vidseg.evaluation import evaluate
    from vidseg.evaluation.jobs import evaluate_folders, is_mask_folder
    from vidseg.machine import usable_cores

    if args.jobs is None:
        args.jobs = usable_cores()
    if args.jobs < 1:
        raise VidsegError(f"--jobs must be at least 1, got {args.jobs}")
    if args.matching != "sequence" and args.task != "unsupervised":
        raise VidsegError(f"--matching {args.matching} applies to --task unsupervised only",
                          fix="add --task unsupervised, or leave --matching out")
    split = args.split or ("val" if args.dataset == "davis" else "val-20")
    start = time.perf_counter()
    if is_mask_folder(args.gt):  # one sequence: a folder of ground-truth PNGs against a folder of results
        result = evaluate_folders(args.gt, args.results, args.task, void=args.void, matching=args.matching)
    else:
        if args.dataset == "davis":
            args.year, args.resolution = davis_layout(args.gt, args.year, args.resolution, args.task)
        result = evaluate(
            args.gt,
            args.results,
            task=args.task,
            dataset=args.dataset,
            split=split,
            year=args.year,
            resolution=args.resolution,
            jobs=args.jobs,
            void=args.void,
            sequences=args.sequences,
            matching=args.matching,
        )
    print_report(result, Path(args.out) if args.out else Path(args.results), args.plots,
                 time.perf_counter() - start)
    return 0


def print_report(result, out_dir: Path, plots: bool, seconds: float) -> None:
    """Print the global and per-sequence tables; write the CSV / JSON report (and plots) into ``out_dir``."""
    from vidseg.evaluation.report import (
        format_global_table,
        format_sequence_table,
        write_report,
    )

    paths = write_report(result, out_dir, plots=plots)
    print(format_global_table(result))
    print()
    print(format_sequence_table(result))
    print()
    summary = f"Evaluated {len(result.sequences)} sequences, {len(result.objects)} objects in {seconds:.2f} s"
    print(summary, file=sys.stderr)
    print(f"Wrote {paths['global_csv']}, {paths['per_object_csv']} and {paths['json']}", file=sys.stderr)
