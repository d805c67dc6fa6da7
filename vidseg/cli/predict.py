"""``vidseg predict``: run a method over a whole dataset split into the benchmark's layout, and score it."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from vidseg.cli.method_args import add_method_arguments, check_method_options, resolve_method
from vidseg.machine import THREADS_HELP, parse_threads


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="run a method over a dataset split (DAVIS, YouTube-VOS, a folder of videos) and score it",
        description="Segment every video of a split with one method, loaded once per process, into the "
        "benchmark's layout: DAVIS OUT/<sequence>/<frame>.png; YouTube-VOS OUT/Annotations/<video>/<frame>.png and "
        "OUT/submission.zip for the server; a folder of videos OUT/<video>/<frame>.png. Rerunning the command "
        "continues: finished videos are kept, an interrupted one resumes exactly, a failed one is retried. Under "
        "torchrun each process takes a share of the videos on its own device; the first one zips and scores.",
        epilog="examples:\n"
        "  vidseg predict --dataset davis --root DAVIS --set val --method match_refine --out results/mr --score\n"
        "  vidseg predict --root ../shared/data/davis2016-train-240p --method flow --out R --score --jobs 2\n"
        "  vidseg predict --dataset youtube-vos --root YTVOS --set valid --out results/yt   # + results/yt/submission.zip\n"
        "  vidseg predict --dataset folder --root videos/ --masks first_masks/ --out masks/\n"
        "  torchrun --nproc_per_node 8 -m vidseg.cli.main predict --root DAVIS --set val --out R --score",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data = parser.add_argument_group("the split")
    data.add_argument("--dataset", default="davis", choices=("davis", "youtube-vos", "folder"),
                      help="dataset layout (default davis)")
    data.add_argument("--root", required=True, metavar="DIR",
                      help="dataset root; for --dataset folder: a folder of video files or frame folders")
    data.add_argument("--set", dest="split", default=None,
                      help="DAVIS ImageSets split (default val) or YouTube-VOS split: valid (default), train, train-80, "
                      "val-20")
    data.add_argument("--year", default=None, choices=("2016", "2017"),
                      help="DAVIS year (default: 2017, or 2016 when the root has only ImageSets/2016)")
    data.add_argument("--resolution", default=None,
                      help="DAVIS resolution folder (default: 480p, or the only one)")
    data.add_argument("--sequences", nargs="+", default=None, metavar="NAME", help="only these videos")
    data.add_argument("--task", default="semi-supervised", choices=("semi-supervised", "unsupervised"),
                      help="semi-supervised (default): start from the given masks; unsupervised: no masks, the "
                      "method discovers the objects (a zero-shot method)")
    data.add_argument("--masks", metavar="DIR",
                      help="--dataset folder: the masks of video NAME as DIR/NAME/ (PNGs named after their frames) or "
                      "DIR/NAME.png (the first frame's); without it the method discovers the objects")
    add_method_arguments(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="results folder")
    parser.add_argument("--score", action="store_true",
                        help="then score the results as `vidseg eval` does (tables printed, CSV/JSON into --out)")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="worker processes, each with its share of the cores, longest videos first (default 1: "
                        "this process)")
    parser.add_argument("--threads", type=parse_threads, default="auto", metavar="N",
                        help=THREADS_HELP + "; with --jobs, per worker (default: the cores / N)")
    parser.add_argument("--overwrite", action="store_true", help="redo every video, replacing the results in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _split_tasks(args: argparse.Namespace, out: Path):
    from vidseg.cli.eval import davis_layout
    from vidseg.errors import VidsegError
    from vidseg.inference import predict_tasks

    if args.masks and args.dataset != "folder":
        raise VidsegError("--masks applies to --dataset folder", fix="drop it: DAVIS and YouTube-VOS give their own")
    if args.dataset != "folder":
        args.split = args.split or ("val" if args.dataset == "davis" else "valid")
    if args.dataset == "davis":
        args.year, args.resolution = davis_layout(args.root, args.year, args.resolution, args.task,
                                                  say=os.environ.get("RANK", "0") == "0")
        return predict_tasks.davis_tasks(args.root, out, args.year, args.split, args.resolution, args.task,
                                         args.sequences)
    if args.dataset == "youtube-vos":
        return predict_tasks.youtube_vos_tasks(args.root, out, args.split, args.task, args.sequences)
    if args.task == "unsupervised" and args.masks:
        raise VidsegError("--task unsupervised takes no --masks", fix="drop one of them")
    return predict_tasks.folder_tasks(args.root, out, args.masks, args.sequences)


def _settings(args: argparse.Namespace, method: str | None, options: dict) -> dict:
    """What a rerun into the same --out must repeat (not --sequences: a subset now, the rest later is fine)."""
    def resolved(path: str | None) -> str | None:
        return None if path is None else str(Path(path).resolve())

    return {"dataset": args.dataset, "root": resolved(args.root), "set": args.split, "year": args.year,
            "resolution": args.resolution, "task": args.task, "masks": resolved(args.masks), "method": method,
            "checkpoint": resolved(args.checkpoint), "options": options}


def _threads(args: argparse.Namespace, node_processes: int) -> tuple[int | str, str]:
    from vidseg.machine import usable_cores

    processes = node_processes * args.jobs
    if processes == 1:
        return args.threads, ""
    threads = args.threads if args.threads != "auto" else max(1, usable_cores() // processes)
    return threads, f", {args.jobs} jobs x {threads} thread(s)" if args.jobs > 1 else ""


def run(args: argparse.Namespace) -> int:
    from vidseg.errors import VidsegError
    from vidseg.inference import predict
    from vidseg.machine import set_threads
    from vidseg.registry import get_method

    if args.jobs < 1:
        raise VidsegError(f"--jobs must be at least 1, got {args.jobs}", fix="e.g. --jobs 2")
    check_method_options(args)
    zero_shot = args.task == "unsupervised" or (args.dataset == "folder" and not args.masks)
    method, options = resolve_method(args, zero_shot=zero_shot)
    if zero_shot and method is not None and not get_method(method).zero_shot:
        raise VidsegError(f"method {method!r} needs the mask of each object (it cannot discover objects)",
                          fix="choose a zero-shot method with --method" + (", or give --masks" if args.masks is None
                                                                          and args.dataset == "folder" else ""))
    out = Path(args.out)
    split = _split_tasks(args, out)
    results = predict.ResultsFolder(out, _settings(args, method, options))
    results.check(args.overwrite)
    rank, world_size, node_processes = predict.join_torchrun(method, options)
    try:
        if rank == 0:
            results.start(args.overwrite)
        predict.torchrun_barrier(world_size)
        share = predict.shard(split.tasks, world_size, rank)
        threads, layout = _threads(args, node_processes)
        recipe = predict.MethodRecipe(method, args.checkpoint, options)
        built = None
        if args.jobs == 1 and results.to_do(share, args.overwrite):  # all done: nothing to build
            threads_line = set_threads(threads)
            built = recipe.build()
            layout = f", {threads_line}" if threads_line else ""
            if built.precision is not None:
                layout += f", precision {built.precision[0]}"
        ranks = f" (rank {rank} of {world_size}: {len(share)} videos)" if world_size > 1 else ""
        if not args.quiet:
            print(f"predict: {len(split.tasks)} videos of {split.description}, {sum(t.num_frames for t in split.tasks)} "
                  f"frames, method {built.name if built else method or args.checkpoint}{layout}{ranks}",
                  file=sys.stderr)
        progress = predict.SplitProgress(share, split.description, enabled=not args.quiet and rank == 0)
        start = time.perf_counter()
        try:
            outcomes = predict.predict_videos(share, results, built or recipe, jobs=args.jobs, threads=threads,
                                              progress=progress, overwrite=args.overwrite)
        finally:
            progress.close()
        seconds = time.perf_counter() - start
        outcomes, seconds = predict.gather_outcomes(outcomes, seconds, world_size)
    finally:
        predict.leave_torchrun(world_size)
    if rank != 0:
        return 0
    return _finish(args, split, results, outcomes, seconds)


def _finish(args: argparse.Namespace, split, results, outcomes: list, seconds: float) -> int:
    """Rank 0 (or the only process): check every video is there, say what failed, zip, score."""
    from vidseg.inference import predict

    new = [o for o in outcomes if not o.earlier and o.error is None]
    frames = sum(o.frames for o in new)
    earlier = sum(o.earlier for o in outcomes)
    done = (f"predicted {len(new)} videos, {frames} frames in {seconds:.1f} s ({frames / max(seconds, 1e-9):.1f} "
            f"frames/s)") if new else "nothing new predicted"
    print(f"{done}{f'; {earlier} videos done by an earlier run' if earlier else ''}; results in {args.out}")
    missing = results.unfinished(split.tasks)
    if missing:
        for name, why in missing.items():
            print(f"vidseg: error: video {name}: {why}", file=sys.stderr)
        print(f"vidseg: {len(missing)} of {len(split.tasks)} videos failed; rerun the same command to retry them "
              "(finished videos are kept)", file=sys.stderr)
        return 1
    if split.zip_layout:
        print(f"submission: {predict.write_submission_zip(Path(args.out), split.tasks)}")
    if args.score:
        _score(args, split)
    return 0


def _score(args: argparse.Namespace, split) -> None:
    from vidseg.cli.eval import print_report
    from vidseg.evaluation import evaluate

    if split.no_ground_truth:
        print(f"vidseg: not scored: {split.no_ground_truth}", file=sys.stderr)
        return
    start = time.perf_counter()
    names = [task.name for task in split.tasks]
    result = evaluate(args.root, args.out, task=args.task, dataset=args.dataset, split=args.split, year=args.year,
                      resolution=args.resolution, jobs=args.jobs, sequences=names)
    print_report(result, Path(args.out), plots=False, seconds=time.perf_counter() - start)
