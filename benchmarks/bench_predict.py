"""``vidseg predict`` against the per-video loop of ``vidseg segment`` a user would otherwise write, end to end.

On a DAVIS-layout split (default: the 6 held-out DAVIS-2016 training videos of the shared data), for each method:
(1) one ``vidseg segment`` process per video, in turn (start-up and model load paid per video); (2) ``vidseg
predict`` in one process; (3) ``vidseg predict --jobs 2``. Wall seconds from the first process start to the last
mask, and a check that the three give identical masks.

    python benchmarks/bench_predict.py --method flow --method match_refine [--markdown docs/predict.md]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from vidseg.data.davis import DavisIndex
from vidseg.io.masks import read_mask
from vidseg.machine import format_machine_info

REPO = Path(__file__).resolve().parents[1]
HELD_OUT = REPO / "vidseg" / "configs" / "cpu" / "s2s++_lite0.yaml"


def vidseg(*args: str) -> float:
    """Wall seconds of one ``vidseg`` process."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vidseg.cli.main", *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def masks(folder: Path) -> dict[str, np.ndarray]:
    return {f"{p.parent.name}/{p.name}": read_mask(p) for p in sorted(folder.glob("*/*.png"))}


def identical(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REPO.parent / "shared" / "data" / "davis2016-train-240p")
    parser.add_argument("--year", default="2016")
    parser.add_argument("--set", dest="split", default="train")
    parser.add_argument("--sequences", nargs="*", help="default: data.val.sequences of configs/cpu/s2s++_lite0.yaml")
    parser.add_argument("--method", action="append", default=None, help="default: flow and match_refine")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    args = parser.parse_args()
    names = args.sequences or yaml.safe_load(HELD_OUT.read_text())["data"]["val"]["sequences"]
    index = DavisIndex(args.root, args.year, args.split, None, sequences=names)
    frames = sum(len(s) for s in index)
    lines = [format_machine_info(), f"settings : {len(index)} videos of {args.root} ({index.resolution}), {frames} "
             f"frames: {', '.join(names)}; threads auto (2 cores: 2 threads; --jobs 2: 1 thread per worker)", "",
             "| method | `segment` per video | `predict` | `predict --jobs 2` | masks identical |", "|---|---|---|---|---|"]
    print("\n".join(lines))
    common = ["--root", str(args.root), "--year", args.year, "--set", args.split, "--sequences", *names, "--quiet"]
    for method in args.method or ["flow", "match_refine"]:
        with tempfile.TemporaryDirectory() as tmp:
            loop = Path(tmp) / "loop"
            loop_seconds = sum(vidseg("segment", str(s.frame_paths[0].parent), "--mask",
                                      str(s.mask_paths[s.frame_names[0]]), "--out", str(loop / s.name), "--method",
                                      method, "--quiet") for s in index)
            one = vidseg("predict", *common, "--method", method, "--out", str(Path(tmp) / "one"))
            two = vidseg("predict", *common, "--method", method, "--out", str(Path(tmp) / "two"), "--jobs", "2")
            reference = masks(loop)
            same = identical(reference, masks(Path(tmp) / "one")) and identical(reference, masks(Path(tmp) / "two"))
        row = (f"| {method} | {loop_seconds:.1f} s ({frames / loop_seconds:.1f} frames/s) | {one:.1f} s "
               f"({frames / one:.1f}) | {two:.1f} s ({frames / two:.1f}) | {'yes' if same else 'NO'} |")
        print(row)
        lines.append(row)
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
