"""``vidseg segment`` end to end with the default method, as a user times it: process start to last mask written.

Two real 480p clips (DAVIS-2016 training videos of the shared data, up-scaled to 480x854 as 480p DAVIS is): one
object (a DAVIS video, its own mask), and three (a composite of three training videos' objects over a fourth's
background, `vidseg.data.composite`). Each clip is segmented in a fresh process by every build given: the working
tree and, with ``--before COMMIT``, that commit checked out into a temporary git worktree, in turns (``--repeats``
rounds) so a change in the machine's load hits them alike. Prints wall seconds, frames/s end to end and the loop's
own frames/s (what ``segment`` prints), and checks the builds' masks agree.

    python benchmarks/bench_default_speed.py --before 4153ea4 --repeats 2 --threads 2 [--markdown docs/default_speed.md]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from vidseg.data.composite import CompositeConfig, CompositeClip
from vidseg.data.davis import DavisIndex
from vidseg.io.masks import read_mask, write_mask
from vidseg.machine import format_machine_info

REPO = Path(__file__).resolve().parents[1]
SIZE = (480, 854)


def davis_clip(root: Path, sequence: str, out: Path) -> tuple[Path, Path]:
    """``sequence`` up-scaled to 480x854 (JPEG frames) and its first mask."""
    video = next(iter(DavisIndex(root, "2016", "train", "240p", sequences=[sequence])))
    frames = out / "frames"
    frames.mkdir(parents=True)
    for path in video.frame_paths:
        image = cv2.resize(cv2.imread(str(path)), SIZE[::-1], interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(frames / path.name), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    mask = read_mask(video.mask_paths[video.frame_names[0]])
    write_mask(out / "00000.png", cv2.resize(mask, SIZE[::-1], interpolation=cv2.INTER_NEAREST))
    return frames, out / "00000.png"


def composite_clip(root: Path, sequences: list[str], frames: int, out: Path) -> tuple[Path, Path]:
    """A 480x854 composite of ``sequences`` (background first) with three objects, and its first mask."""
    sources = list(DavisIndex(root, "2016", "train", "240p", sequences=sequences))
    config = CompositeConfig(seed=7, num_frames=frames, height=SIZE[0], width=SIZE[1], max_pasted=2,
                             still_fraction=0.0)
    folder = out / "frames"
    folder.mkdir(parents=True)
    for t, (frame, ids) in enumerate(CompositeClip(sources, config, 0)):
        image = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(folder / f"{t:05d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        if t == 0:
            write_mask(out / "00000.png", ids)
    return folder, out / "00000.png"


def run_segment(source: Path, frames: Path, mask: Path, out: Path, threads: int) -> dict:
    """One ``vidseg segment`` process of the build in ``source``; wall time from start to exit."""
    env = {**os.environ, "PYTHONPATH": str(source)}
    command = [sys.executable, "-m", "vidseg.cli.main", "segment", str(frames), "--mask", str(mask), "--out", str(out),
               "--threads", str(threads), "--quiet", "--overwrite"]
    start = time.perf_counter()
    # run from the build's folder: `python -m` puts the working folder first on the path
    result = subprocess.run(command, env=env, cwd=source, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if result.returncode:
        raise RuntimeError(f"{source}: {result.stderr.strip().splitlines()[-1]}")
    loop = float(re.search(r"at ([\d.]+) frames/s", result.stdout).group(1))
    precision = re.search(r"precision: (\S+)", result.stderr)
    return {"wall": wall, "loop": loop, "precision": precision.group(1) if precision else "-"}


def agreement(a: Path, b: Path) -> float:
    """Mean fraction of pixels with the same id in two mask folders."""
    return float(np.mean([(read_mask(x) == read_mask(b / x.name)).mean() for x in sorted(a.glob("*.png"))]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REPO.parent / "shared/data/davis2016-train-240p")
    parser.add_argument("--sequence", default="bmx-bumps", help="the one-object clip (a training video)")
    parser.add_argument("--composite", nargs="+", default=["car-turn", "bear", "elephant", "rollerblade"],
                        help="background video, then the videos whose objects are pasted (training videos)")
    parser.add_argument("--before", help="a commit to time beside the working tree (checked out in a git worktree)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vidseg-default-speed-") as tmp:
        tmp = Path(tmp)
        builds = {"now": REPO}
        if args.before:
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tmp / "before"), args.before],
                           check=True, capture_output=True)
            builds = {f"before ({args.before})": tmp / "before", "now": REPO}
        try:
            one = davis_clip(args.root, args.sequence, tmp / "one")
            count = len(list(one[0].glob("*.jpg")))
            clips = {f"{args.sequence}, 1 object": one,
                     "composite, 3 objects": composite_clip(args.root, args.composite, count, tmp / "three")}
            rows = []
            for clip, (frames, mask) in clips.items():
                times: dict[str, list[dict]] = {name: [] for name in builds}
                for _ in range(args.repeats):
                    for name, source in builds.items():
                        times[name].append(run_segment(source, frames, mask, tmp / "out" / name, args.threads))
                same = agreement(tmp / "out" / "now", tmp / "out" / next(iter(builds))) if args.before else 1.0
                for name, runs in times.items():
                    wall = float(np.median([r["wall"] for r in runs]))
                    rows.append([clip, name, runs[0]["precision"], str(count), f"{wall:.1f}", f"{count / wall:.2f}",
                                 f"{np.median([r['loop'] for r in runs]):.1f}", f"{same:.4f}"])
                    print(" | ".join(rows[-1]), flush=True)
        finally:
            if args.before:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tmp / "before")],
                               check=False, capture_output=True)
    header = ["clip (480x854)", "build", "precision", "frames", "wall s (start to last mask)", "frames/s end to end",
              "frames/s in the loop", "pixels equal to the first build"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    command = "python benchmarks/bench_default_speed.py " + " ".join(sys.argv[1:])
    text = "\n".join([f"`{command}`", "", "```", format_machine_info(), "```", "", *lines, ""])
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
