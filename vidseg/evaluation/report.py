"""Tables, CSV, JSON and plots of an :class:`~vidseg.evaluation.results.EvaluationResult`.

The CSV files carry the official toolkit's names (``global_results-<set>.csv``,
``per-sequence_results-<set>.csv``) and columns (``J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,
F-Decay``; per object ``Sequence`` then the six statistics), with 9 decimals. Every file is written
atomically. Plots use matplotlib's Agg canvas directly (no pyplot, no display needed).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from vidseg.evaluation.results import (
    GLOBAL_KEYS,
    STAT_KEYS,
    YTVOS_KEYS,
    EvaluationResult,
)
from vidseg.io.atomic import atomic_path, atomic_write_text

__all__ = [
    "format_global_table",
    "format_sequence_table",
    "global_csv",
    "per_object_csv",
    "plot_report",
    "write_report",
]


def _fmt(value, decimals: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    return f"{float(value):.{decimals}f}"


def _global_keys(result: EvaluationResult) -> list[str]:
    keys = list(GLOBAL_KEYS)
    if result.dataset == "youtube-vos":
        keys = list(YTVOS_KEYS) + keys
    return keys


def _object_keys(result: EvaluationResult) -> list[str]:
    keys = ["Sequence", *STAT_KEYS]
    if result.dataset == "youtube-vos":
        keys += ["Category", "Seen"]
    return keys


def _protocol(result: EvaluationResult) -> str:
    """The task as titles print it, naming first-frame matching (the default sequence matching is implied)."""
    if result.settings.get("matching") == "first-frame":
        return f"{result.task}, first-frame matching"
    return result.task


def _table(header: list[str], rows: list[list[str]], left: int = 0) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells):
        return " ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), *(line(r) for r in rows)])


def _banner(title: str, width: int) -> str:
    pad = max(width - len(title) - 2, 6)
    return f"{'-' * (pad // 2)} {title} {'-' * (pad - pad // 2)}"


def format_global_table(result: EvaluationResult, decimals: int = 3) -> str:
    """The global figures in the DAVIS toolkit's layout."""
    keys = _global_keys(result)
    body = _table(keys, [[_fmt(result.global_metrics.get(k), decimals) for k in keys]])
    width = len(body.splitlines()[0])
    return f"{_banner(f'Global results for {_protocol(result)} ({result.split})', width)}\n{body}"


def format_sequence_table(result: EvaluationResult, decimals: int = 3) -> str:
    """One row per object (``<sequence>_<k>``) with J-Mean and F-Mean, as the DAVIS toolkit prints."""
    keys = ["Sequence", "J-Mean", "F-Mean"]
    if result.dataset == "youtube-vos":
        keys += ["Seen"]
    rows = []
    for obj in result.objects:
        row = [obj.name, _fmt(obj.stats["J-Mean"], decimals), _fmt(obj.stats["F-Mean"], decimals)]
        if result.dataset == "youtube-vos":
            row.append("seen" if obj.seen else "unseen")
        rows.append(row)
    body = _table(keys, rows, left=1)
    width = len(body.splitlines()[0])
    return f"{_banner(f'Per sequence results for {_protocol(result)} ({result.split})', width)}\n{body}"


def global_csv(result: EvaluationResult, decimals: int = 9) -> str:
    keys = _global_keys(result)
    return ",".join(keys) + "\n" + ",".join(_fmt(result.global_metrics.get(k), decimals) for k in keys) + "\n"


def per_object_csv(result: EvaluationResult, decimals: int = 9) -> str:
    keys = _object_keys(result)
    lines = [",".join(keys)]
    for row in result.per_object:
        cells = []
        for key in keys:
            value = row.get(key)
            if key == "Sequence" or key == "Category":
                cells.append("" if value is None else str(value))
            elif key == "Seen":
                cells.append("" if value is None else str(bool(value)).lower())
            else:
                cells.append(_fmt(value, decimals))
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# plots


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


def plot_report(result: EvaluationResult, out_dir: str | os.PathLike) -> list[Path]:
    """Draw the per-sequence J&F bars, J over time and the analyses into ``out_dir``; return the files."""
    out_dir = Path(out_dir)
    paths = []
    sequences = result.sequences
    title = f"{result.dataset} {result.split} ({_protocol(result)})"

    # per-sequence J&F
    names = [s.name for s in sequences]
    values = [s.jf_mean for s in sequences]
    fig = _figure(max(6.0, 0.28 * len(names) + 2), 4.0)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(range(len(names)), [0 if math.isnan(v) else v for v in values], color="#4c72b0")
    overall = result.global_metrics.get("J&F-Mean", math.nan)
    if not math.isnan(overall):
        ax.axhline(overall, color="#c44e52", linestyle="--", label=f"J&F-Mean {overall:.3f}")
        ax.legend(loc="lower right")
    if len(names) <= 80:
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=90, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("J&F (mean over the sequence's objects)")
    ax.set_title(f"J&F per sequence — {title}")
    paths.append(_save(fig, out_dir / "jf_per_sequence.png"))

    # J over time
    fig = _figure(8.0, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    objects = result.objects
    for obj in objects[:400]:
        ax.plot(obj.t, obj.J, color="#4c72b0", alpha=0.25, linewidth=0.8)
    curve = result.analyses.get("mean_J_curve") if result.analyses else None
    if curve and curve.get("t"):
        ax.plot(curve["t"], curve["J"], color="#c44e52", linewidth=2.0, label="mean over objects")
        ax.legend(loc="lower left")
    ax.set_xlabel("t (annotated frame)")
    ax.set_ylabel("J")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"J over time per object — {title}")
    paths.append(_save(fig, out_dir / "j_over_time.png"))

    analyses = result.analyses or {}
    length = analyses.get("length")
    if length:
        fig = _figure(5.5, 4.0)
        ax = fig.add_subplot(1, 1, 1)
        labels = ["J", "F"]
        early = [length.get("J-early"), length.get("F-early")]
        late = [length.get("J-late"), length.get("F-late")]
        x = np.arange(2)
        ax.bar(x - 0.2, [v or 0 for v in early], 0.4, label=f"t < {length['early_before']}")
        ax.bar(x + 0.2, [v or 0 for v in late], 0.4, label=f"t > {length['late_after']}")
        ax.set_xticks(x)
        ax.set_xticklabels(labels)
        ax.set_ylim(0, 1)
        ax.legend()
        ax.set_title(f"Sequences > {length['min_length']} frames (n={length['n_sequences']})")
        paths.append(_save(fig, out_dir / "length_analysis.png"))
    occlusion = analyses.get("occlusion")
    if occlusion:
        fig = _figure(5.5, 4.0)
        ax = fig.add_subplot(1, 1, 1)
        keys = list(occlusion)
        bars = [occlusion[k]["J&F-Mean"] or 0 for k in keys]
        ax.bar(range(len(keys)), bars, color="#55a868")
        for i, k in enumerate(keys):
            ax.text(i, bars[i] + 0.02, f"n={occlusion[k]['n_objects']}", ha="center", fontsize=8)
        if not math.isnan(overall):
            ax.axhline(overall, color="#c44e52", linestyle="--", label="all frames")
            ax.legend(loc="upper right")
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels([f"{k} px" for k in keys])
        ax.set_ylim(0, 1)
        ax.set_ylabel("J&F after first re-appearance")
        ax.set_title("Occlusion analysis (area threshold)")
        paths.append(_save(fig, out_dir / "occlusion_analysis.png"))
    return paths


def write_report(
    result: EvaluationResult, out_dir: str | os.PathLike, plots: bool = True, per_frame_json: bool = True
) -> dict[str, Path]:
    """Write the CSV files, the JSON file and (optionally) the plots; return their paths by kind."""
    out_dir = Path(out_dir)
    split = result.split
    paths = {
        "global_csv": out_dir / f"global_results-{split}.csv",
        "per_object_csv": out_dir / f"per-sequence_results-{split}.csv",
        "json": out_dir / f"results-{split}.json",
    }
    atomic_write_text(paths["global_csv"], global_csv(result))
    atomic_write_text(paths["per_object_csv"], per_object_csv(result))
    atomic_write_text(paths["json"], json.dumps(result.to_dict(per_frame=per_frame_json), indent=1) + "\n")
    if plots:
        plot_dir = out_dir / f"plots-{split}"
        for path in plot_report(result, plot_dir):
            paths[path.stem] = path
    return paths
