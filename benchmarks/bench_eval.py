"""Speed and memory of ``vidseg.evaluation`` on the DAVIS 2017 conformance set, against the official toolkit.

    python benchmarks/bench_eval.py [--data ../shared/conformance/davis2017] [--jobs 1 2] [--repeat 3]

It ends with the ``vidseg eval`` command timed end to end (interpreter start to plots written), defaults
(one process per core, no plots) and with ``--plots`` / ``--jobs 1``. With ``--official DIR`` (a checkout of
the official toolkit, ``davisvideochallenge/davis2017-evaluation``, and ``--official-python`` an interpreter
that has its dependencies) the official ``evaluation_method.py`` is timed end to end in the same run, on a
copy of the results folder (it writes its CSVs there), and the command's speed-up is taken against it;
without it, against the figures above.

Each (task, jobs) run happens in a fresh Python process so that its peak memory is its own. Printed:
machine info, wall and CPU time (of the main process), peak RSS (the main process's ``VmHWM``, and
the sampled peak of the sum over the whole process tree, workers included), whether every figure
equals the toolkit's expected CSV, and the speed-up over the official toolkit's figures measured on
this set (one process): semi-supervised 20.4 s / 3.4 GB, unsupervised 272 s / 11.3 GB; per 480p
frame-object J 0.90 ms, F 3.71 ms.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vidseg.bench import ANCHORS, EVAL_RESULTS, eval_child
from vidseg.machine import format_machine_info

OFFICIAL = ANCHORS["eval"]["tasks"]
OFFICIAL_J_MS, OFFICIAL_F_MS = 0.90, 3.71
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "conformance" / "davis2017"


def per_pair_timing(data: Path, repeat: int = 3) -> tuple[float, float]:
    """Mean ms per 480p frame-object for J and for F (single-pair API, masks as given)."""
    from vidseg.evaluation.metrics import f_measure, jaccard
    from vidseg.io.masks import read_mask

    pairs = []
    gt_dir = data / "gt" / "Annotations" / "480p" / "gold-fish"
    for path in sorted(gt_dir.glob("*.png"))[1:21]:
        gt = read_mask(path)
        pred = read_mask(data / "results" / "semi-lag1" / "gold-fish" / path.name)
        for k in range(1, int(gt.max()) + 1):
            pairs.append((gt == k, pred == k))
    best_j = best_f = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for g, p in pairs:
            jaccard(g, p)
        best_j = min(best_j, (time.perf_counter() - start) / len(pairs) * 1e3)
        start = time.perf_counter()
        for g, p in pairs:
            f_measure(g, p)
        best_f = min(best_f, (time.perf_counter() - start) / len(pairs) * 1e3)
    return best_j, best_f


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="conformance folder (gt/, results/, expected/)")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--tasks", nargs="+", default=list(EVAL_RESULTS), choices=list(EVAL_RESULTS))
    parser.add_argument("--repeat", type=int, default=3, help="runs per setting; the fastest is reported")
    parser.add_argument("--official", type=Path, metavar="DIR",
                        help="official toolkit checkout (holds evaluation_method.py) to time side by side")
    parser.add_argument("--official-python", default=sys.executable, metavar="PYTHON",
                        help="interpreter with the official toolkit's dependencies (default: this one)")
    parser.add_argument("--official-tasks", nargs="+", default=["semi-supervised"], choices=list(EVAL_RESULTS),
                        help="tasks to time the official toolkit on (unsupervised: minutes and ~11 GB)")
    parser.add_argument("--child", nargs=2, metavar=("TASK", "JOBS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        eval_child(str(args.data), args.child[0], args.child[1])
        return 0
    if not (args.data / "gt").is_dir():
        print(f"conformance data not found at {args.data}", file=sys.stderr)
        return 2

    import scipy

    print(format_machine_info())
    print(f"scipy    : {scipy.__version__}")
    j_ms, f_ms = per_pair_timing(args.data)
    print(f"per 480p frame-object: J {j_ms:.3f} ms (official {OFFICIAL_J_MS} ms, x{OFFICIAL_J_MS / j_ms:.1f}), "
          f"F {f_ms:.3f} ms (official {OFFICIAL_F_MS} ms, x{OFFICIAL_F_MS / f_ms:.1f})")
    official_here = {}  # task -> (wall s, peak RSS GB) of the official toolkit in this run
    if args.official is not None:
        for task in args.official_tasks:
            seconds, rss_mb = official_run(args.data, task, args.official, args.official_python)
            official_here[task] = {"wall_s": seconds, "rss_gb": rss_mb / 1024}
            print(f"official toolkit, {task}: {seconds:.2f} s end to end, peak RSS {rss_mb:.0f} MB (this run)")

    def official_for(task: str) -> tuple[dict, str]:
        return (official_here[task], "official, this run") if task in official_here else (
            OFFICIAL[task], "official anchor")

    print(f"{'task':<16} {'jobs':>4} {'wall s':>8} {'cpu s':>8} {'RSS MB':>8} {'tree MB':>8} "
          f"{'speed-up':>9} {'mem /':>6} {'max |diff|':>11}  against")
    for task in args.tasks:
        for jobs in args.jobs:
            runs = []
            for _ in range(args.repeat):
                out = subprocess.run(
                    [sys.executable, __file__, "--data", str(args.data), "--child", task, str(jobs)],
                    check=True, capture_output=True, text=True,
                )
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            best = min(runs, key=lambda r: r["wall_s"])
            official, against = official_for(task)
            peak_mb = max(best["rss_mb"], best["tree_rss_mb"])
            diff = "n/a" if best["max_abs_diff"] is None else f"{best['max_abs_diff']:.1e}"
            print(f"{task:<16} {jobs:>4} {best['wall_s']:>8.2f} {best['cpu_s']:>8.2f} {best['rss_mb']:>8.0f} "
                  f"{best['tree_rss_mb']:>8.0f} {official['wall_s'] / best['wall_s']:>8.1f}x "
                  f"{official['rss_gb'] * 1024 / peak_mb:>5.0f}x {diff:>11}  {against}")
    print("speed-up = official wall time / ours; mem / = official peak RSS / our peak (max of process and tree)")
    print("\nthe `vidseg eval` command end to end (a fresh interpreter, imports, scoring, tables, CSV/JSON, plots):")
    print(f"{'task':<16} {'options':<22} {'wall s':>8} {'speed-up':>9}  against")
    for task in args.tasks:
        official, against = official_for(task)
        for options in ([], ["--plots"], ["--jobs", "1"]):
            best = min(cli_seconds(args.data, task, options) for _ in range(args.repeat))
            label = " ".join(options) or "defaults"
            print(f"{task:<16} {label:<22} {best:>8.2f} {official['wall_s'] / best:>8.1f}x  {against}")
    return 0


def official_run(data: Path, task: str, toolkit: Path, python: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of the official toolkit's ``evaluation_method.py`` on a copy of the results."""
    import resource
    import shutil

    with tempfile.TemporaryDirectory() as scratch:
        results = Path(scratch) / EVAL_RESULTS[task]
        shutil.copytree(data / "results" / EVAL_RESULTS[task], results)
        command = [python, str(toolkit / "evaluation_method.py"), "--task", task, "--results_path", str(results),
                   "--davis_path", str(data / "gt")]
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=toolkit)
        seconds = time.perf_counter() - start
    # the largest child so far: the toolkit dwarfs the evaluator children measured before it
    return seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def cli_seconds(data: Path, task: str, options: list[str]) -> float:
    """Wall seconds of one ``vidseg eval`` run on the conformance set, interpreter start included."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "vidseg.cli.main", "eval", "--gt", str(data / "gt"), "--results",
                   str(data / "results" / EVAL_RESULTS[task]), "--task", task, "--out", out, *options]
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
