"""Segment a whole video from the user's masks and write the results to disk."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from vidseg.data.own_video import OwnVideo
from vidseg.errors import VidsegError
from vidseg.inference.methods import build_propagator
from vidseg.inference.session import InferenceSession, Propagator
from vidseg.io.masks import write_mask
from vidseg.io.overlay import OverlayVideoWriter, overlay_frame


@dataclass(frozen=True)
class SegmentResult:
    method: str
    num_frames: int
    object_ids: list[int]
    seconds: float
    mask_dir: Path
    overlay: Path | None

    @property
    def frames_per_second(self) -> float:
        return self.num_frames / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        text = (
            f"segmented {self.num_frames} frames, {len(self.object_ids)} object(s) with '{self.method}' "
            f"at {self.frames_per_second:.1f} frames/s; masks in {self.mask_dir}"
        )
        return text + (f", overlay {self.overlay}" if self.overlay else "")


def _prepare_output(out_dir: Path, frame_names: list[str], overwrite: bool) -> bool:
    """Check the output folder; return True when this run creates it."""
    if out_dir.exists() and not out_dir.is_dir():
        raise VidsegError("output path exists and is not a folder", out_dir, "choose a folder path for --out")
    if not out_dir.exists():
        return True
    ours = {f"{name}.png" for name in frame_names}
    existing = [p.name for p in out_dir.iterdir()]
    foreign = sorted(name for name in existing if name not in ours)
    if foreign:
        raise VidsegError(
            f"output folder holds other files (e.g. {foreign[0]})", out_dir, "choose an empty or new folder for --out"
        )
    if existing and not overwrite:
        raise VidsegError("output folder already holds masks", out_dir, "pass --overwrite or choose a new folder")
    return False


def segment_video(
    video: str | os.PathLike,
    masks: list[str | os.PathLike],
    out_dir: str | os.PathLike,
    method: str | Propagator = "flow",
    overlay: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> SegmentResult:
    """Segment ``video`` from the given masks; write one palette PNG per frame into ``out_dir``.

    Masks are named after the frame they belong to (a single mask belongs to the first frame; see
    :mod:`vidseg.data.own_video`). Frames before the first mask get empty masks. On an error the
    files written by this call are removed.
    """
    source = OwnVideo(video, masks)
    reader = source.reader
    propagator = build_propagator(method) if isinstance(method, str) else method
    out_dir = Path(out_dir)
    created = _prepare_output(out_dir, reader.frame_names, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    session = InferenceSession(propagator)
    start = time.perf_counter()
    try:
        with contextlib.ExitStack() as stack:
            overlay_writer = (
                stack.enter_context(OverlayVideoWriter(overlay, reader.fps, reader.size)) if overlay else None
            )
            bar = tqdm(
                zip(reader.frame_names, reader.frames()),
                total=len(reader),
                unit="frame",
                desc=Path(video).name,
                disable=not progress,
                dynamic_ncols=True,
            )
            for index, (name, frame) in enumerate(bar):
                prompt = source.prompts.get(index)
                mask = session.step(frame, None if prompt is None else prompt.mask)
                path = out_dir / f"{name}.png"
                write_mask(path, mask)
                written.append(path)
                if overlay_writer is not None:
                    overlay_writer.write(overlay_frame(frame, mask))
    except KeyboardInterrupt:
        raise  # the masks written so far are complete files: keep them
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        if created:
            try:
                out_dir.rmdir()
            except OSError:
                pass
        raise
    return SegmentResult(
        method=propagator.name,
        num_frames=len(reader),
        object_ids=source.object_ids,
        seconds=time.perf_counter() - start,
        mask_dir=out_dir,
        overlay=Path(overlay) if overlay else None,
    )
