"""The paths a user runs: demo, segment -> eval on real and synthetic data in both layouts."""

import json
import time

from vidseg.cli.main import main
from vidseg.data.synth import SynthConfig, write_davis, write_youtube_vos
from vidseg.data.youtube_vos import YouTubeVOSIndex
from vidseg.inference.runner import segment_video


def test_demo_runs_the_bundled_model_quickly_and_prints_scores(tmp_path, capsys):
    start = time.perf_counter()
    assert main(["demo", "--out", str(tmp_path / "demo"), "--frames", "20"]) == 0
    assert time.perf_counter() - start < 60
    out = capsys.readouterr().out
    for case in ("synthetic", "scene"):
        assert f"[{case}] method:  match_refine" in out  # the bundled network with the best held-out score
        score = float(out.split(f"[{case}] score:   J&F ")[1].split()[0])
        flow = float(out.split(f"[{case}] score:")[1].split("(flow: J&F ")[1].split(")")[0])
        assert 0.0 < score <= 1.0 and 0.0 < flow <= 1.0
        assert len(list((tmp_path / "demo" / case / "masks").glob("*.png"))) == 20
        assert (tmp_path / "demo" / case / "overlay.mp4").stat().st_size > 0
    # a second run replaces its own output
    assert main(["demo", "--out", str(tmp_path / "demo"), "--frames", "20", "--case", "scene", "--method", "flow"]) == 0
    assert "[scene] method:  flow" in capsys.readouterr().out


def test_segment_then_eval_on_real_davis(tmp_path, davis_240p, capsys):
    results = tmp_path / "results"
    for name in ("bear", "boat"):
        code = main(["segment", str(davis_240p / "JPEGImages/240p" / name), "--mask",
                     str(davis_240p / "Annotations/240p" / name / "00000.png"), "--out", str(results / name), "--quiet",
                     "--method", "flow"])
        assert code == 0
    capsys.readouterr()
    code = main(["eval", "--gt", str(davis_240p), "--results", str(results), "--year", "2016", "--set", "train",
                 "--resolution", "240p", "--sequences", "bear", "boat", "--no-plots", "--out", str(tmp_path / "scores")])
    assert code == 0
    scores = json.loads((tmp_path / "scores" / "results-train.json").read_text())
    jf = scores["global"]["J&F-Mean"]
    assert 0.4 < jf < 1.0  # flow propagation tracks these two slow sequences


def test_segment_then_eval_on_synthetic_davis_layout(tmp_path, capsys):
    config = SynthConfig(seed=3, num_frames=12, height=96, width=160, num_objects=2)
    write_davis(tmp_path / "synth", num_sequences=2, config=config)
    root = tmp_path / "synth"
    split = (root / "ImageSets/2017/val.txt").read_text().split()
    resolution = "96p"
    for name in split:
        segment_video(root / "JPEGImages" / resolution / name, [root / "Annotations" / resolution / name / "00000.png"],
                      tmp_path / "results" / name, progress=False)
    code = main(["eval", "--gt", str(root), "--results", str(tmp_path / "results"), "--resolution", resolution,
                 "--no-plots"])
    assert code == 0
    assert "J&F-Mean" in capsys.readouterr().out


def test_segment_then_eval_on_synthetic_youtube_vos_layout(tmp_path, capsys):
    config = SynthConfig(seed=4, num_frames=16, height=96, width=160, num_objects=2)
    write_youtube_vos(tmp_path / "yt", num_sequences=5, config=config, sparse_every=5)
    index = YouTubeVOSIndex(tmp_path / "yt", split="val-20")
    for sequence in index:
        # objects first given at a later frame come as extra masks named after that frame
        masks = [sequence.mask_paths[info.first_frame] for info in sequence.objects.values()]
        segment_video(sequence.frame_paths[0].parent, sorted(set(masks)), tmp_path / "results" / sequence.name,
                      progress=False)
    code = main(["eval", "--gt", str(tmp_path / "yt"), "--results", str(tmp_path / "results"),
                 "--dataset", "youtube-vos", "--set", "val-20", "--no-plots"])
    assert code == 0
    assert "Overall" in capsys.readouterr().out
