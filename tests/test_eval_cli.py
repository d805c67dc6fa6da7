"""``vidseg eval`` end to end on a tiny DAVIS-layout fixture, and one clear error per bad input."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from vidseg.cli.main import main
from vidseg.evaluation import evaluate
from vidseg.io.masks import write_mask

H, W = 40, 64
SEQUENCES = ("alpha", "beta")
N_FRAMES = 6


def gt_frame(t: int) -> np.ndarray:
    out = np.zeros((H, W), dtype=np.uint8)
    out[5:20, 5 + t : 25 + t] = 1
    out[25:38, 35:60] = 2
    return out


def pred_frame(t: int) -> np.ndarray:
    out = gt_frame(t)
    out[5:20, 5 + t : 10 + t] = 0  # object 1 partly missed
    return out


@pytest.fixture()
def davis(tmp_path):
    root = tmp_path / "DAVIS"
    results = tmp_path / "results"
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(SEQUENCES) + "\n")
    for seq in SEQUENCES:
        for t in range(N_FRAMES):
            for task_folder in ("Annotations", "Annotations_unsupervised"):
                write_mask(root / task_folder / "480p" / seq / f"{t:05d}.png", gt_frame(t))
            write_mask(results / seq / f"{t:05d}.png", pred_frame(t))
    return root, results


def run_cli(capsys, *args):
    code = main(["eval", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_prints_tables_and_writes_csv_json_and_plots(davis, tmp_path, capsys):
    root, results = davis
    out = tmp_path / "report"
    code, stdout, _ = run_cli(capsys, "--gt", root, "--results", results, "--out", out, "--plots")
    assert code == 0
    assert "Global results for semi-supervised" in stdout and "J&F-Mean" in stdout
    assert "alpha_1" in stdout and "beta_2" in stdout
    with (out / "global_results-val.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
    with (out / "per-sequence_results-val.csv").open() as handle:
        per_object = list(csv.DictReader(handle))
    assert [r["Sequence"] for r in per_object] == ["alpha_1", "alpha_2", "beta_1", "beta_2"]
    assert float(per_object[1]["J-Mean"]) == 1.0
    assert 0 < float(per_object[0]["J-Mean"]) < 1
    data = json.loads((out / "results-val.json").read_text())
    assert data["global"]["J&F-Mean"] == pytest.approx(float(rows[0]["J&F-Mean"]), abs=1e-9)
    assert len(data["objects"][0]["J"]) == N_FRAMES - 2
    assert set(data["analyses"]) >= {"length", "occlusion", "mean_J_curve"}
    for name in ("jf_per_sequence", "j_over_time", "length_analysis", "occlusion_analysis"):
        assert (out / "plots-val" / f"{name}.png").stat().st_size > 1000


def test_cli_parallel_jobs_give_identical_numbers(davis, tmp_path, capsys):
    root, results = davis
    code, _, _ = run_cli(capsys, "--gt", root, "--results", results, "--out", tmp_path / "o",
                         "--jobs", "2", "--task", "unsupervised")  # no plots unless asked
    assert code == 0
    serial = evaluate(root, results, task="unsupervised", jobs=1)
    written = (tmp_path / "o" / "per-sequence_results-val.csv").read_text()
    from vidseg.evaluation.report import per_object_csv

    assert written == per_object_csv(serial)
    assert not (tmp_path / "o" / "plots-val").exists()


def test_parallel_jobs_of_unequal_length_come_back_in_order(tmp_path):
    """Longest sequences go to the worker first and this process takes the short ones; the order is the split's."""
    from vidseg.evaluation.jobs import build_jobs, run_jobs

    root, results = tmp_path / "DAVIS", tmp_path / "results"
    names, lengths = ("short", "long", "middle", "tiny"), (3, 9, 5, 3)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(names) + "\n")
    for seq, length in zip(names, lengths):
        for t in range(length):
            write_mask(root / "Annotations" / "480p" / seq / f"{t:05d}.png", gt_frame(t))
            write_mask(results / seq / f"{t:05d}.png", pred_frame(t + len(seq)))
    jobs = build_jobs(root, results)
    serial = run_jobs(jobs, 1)
    parallel = run_jobs(jobs, 3)
    assert [s.name for s in parallel] == list(names)
    for a, b in zip(serial, parallel):
        assert [(o.name, o.J.tolist(), o.F.tolist()) for o in a.objects] == [
            (o.name, o.J.tolist(), o.F.tolist()) for o in b.objects]


def test_cli_first_frame_matching(davis, tmp_path, capsys):
    import pickle

    from vidseg.evaluation.jobs import build_jobs
    from vidseg.io.masks import read_mask

    root, results = davis
    for path in results.glob("*/*.png"):  # proposal ids swapped against the ground truth's object ids
        write_mask(path, np.choose(read_mask(path), [0, 2, 1]).astype(np.uint8))
    out = tmp_path / "ff"
    code, stdout, _ = run_cli(capsys, "--gt", root, "--results", results, "--out", out, "--no-plots",
                              "--task", "unsupervised", "--matching", "first-frame")
    assert code == 0
    assert "Global results for unsupervised, first-frame matching" in stdout
    data = json.loads((out / "results-val.json").read_text())
    assert data["settings"]["matching"] == "first-frame"
    objects = data["objects"]
    assert [o["name"] for o in objects] == ["alpha_1", "alpha_2", "beta_1", "beta_2"]
    assert [o["proposal_id"] for o in objects] == [2, 1, 2, 1]
    assert [o["t"] for o in objects] == [list(range(1, N_FRAMES - 1))] * 4
    assert objects[1]["J-Mean"] == 1.0 and 0 < objects[0]["J-Mean"] < 1
    job = build_jobs(root, results, task="unsupervised", matching="first-frame")[0]
    assert pickle.loads(pickle.dumps(job)) == job


def expect_error(capsys, args, *fragments):
    code, stdout, stderr = run_cli(capsys, *args, "--no-plots")
    assert code == 2
    lines = [line for line in stderr.splitlines() if line.startswith("vidseg: error:")]
    assert len(lines) == 1, stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Global results" not in stdout  # never a score from partial data
    return lines[0]


def test_missing_result_sequence(davis, capsys):
    root, results = davis
    for f in (results / "beta").iterdir():
        f.unlink()
    (results / "beta").rmdir()
    expect_error(capsys, ["--gt", root, "--results", results], "no results for sequence(s) beta", "1 of 2 missing",
                 "score only those you have with --sequences")


def test_missing_result_frame(davis, capsys):
    root, results = davis
    (results / "alpha" / "00003.png").unlink()
    expect_error(capsys, ["--gt", root, "--results", results], "sequence 'alpha'", "00003.png is missing")


def test_result_id_above_ground_truth(davis, capsys):
    root, results = davis
    bad = pred_frame(2)
    bad[0:2, 0:2] = 3
    write_mask(results / "beta" / "00002.png", bad)
    expect_error(capsys, ["--gt", root, "--results", results],
                 "sequence 'beta' frame 00002: result id 3 is not a ground-truth object", "objects 1..2")


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_result_size_mismatch(davis, capsys, jobs):
    root, results = davis
    write_mask(results / "alpha" / "00004.png", np.zeros((H // 2, W // 2), np.uint8))
    expect_error(capsys, ["--gt", root, "--results", results, "--jobs", jobs],
                 "sequence 'alpha' frame 00004: result size 32x20 differs from the ground truth's 64x40")


def test_non_indexed_colour_png(davis, capsys):
    root, results = davis
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[10:20, 10:20] = (10, 200, 30)  # not a DAVIS palette colour
    Image.fromarray(rgb, mode="RGB").save(results / "beta" / "00001.png")
    line = expect_error(capsys, ["--gt", root, "--results", results], "not in the DAVIS palette")
    assert "beta/00001.png" in line


def test_empty_results_folder(davis, tmp_path, capsys):
    root, _ = davis
    empty = tmp_path / "empty"
    empty.mkdir()
    expect_error(capsys, ["--gt", root, "--results", empty], "results folder is empty")


def test_missing_results_folder(davis, tmp_path, capsys):
    root, _ = davis
    expect_error(capsys, ["--gt", root, "--results", tmp_path / "nowhere"], "results folder not found")


def test_too_many_unsupervised_proposals(davis, capsys):
    root, results = davis
    bad = pred_frame(0)
    bad[0:2, 0:2] = 21
    write_mask(results / "alpha" / "00000.png", bad)
    expect_error(capsys, ["--gt", root, "--results", results, "--task", "unsupervised"],
                 "sequence 'alpha' frame 00000: result id 21 is above the 20 proposals allowed")


def test_davis_2016_merges_objects(davis):
    root, results = davis
    (root / "ImageSets" / "2016").mkdir()
    (root / "ImageSets" / "2016" / "val.txt").write_text("alpha\n")
    result = evaluate(root, results, year="2016", analyses=False)
    assert [o.name for o in result.objects] == ["alpha_1"]
    gt = [(gt_frame(t) > 0) for t in range(1, N_FRAMES - 1)]
    pred = [(pred_frame(t) > 0) for t in range(1, N_FRAMES - 1)]
    expected = [np.sum(g & p) / np.sum(g | p) for g, p in zip(gt, pred)]
    np.testing.assert_allclose(result.objects[0].J, expected)


def test_unknown_sequence_is_a_clear_error(davis, capsys):
    root, results = davis
    expect_error(capsys, ["--gt", root, "--results", results, "--sequences", "gamma"], "gamma", "not found")


@pytest.mark.parametrize("prefetch", [False, True])
def test_read_ahead_gives_identical_scores_and_errors(davis, prefetch):
    import dataclasses

    from vidseg.errors import VidsegError
    from vidseg.evaluation.jobs import build_jobs, run_job

    root, results = davis
    jobs = [dataclasses.replace(job, prefetch=prefetch) for job in build_jobs(root, results)]
    reference = [run_job(dataclasses.replace(job, prefetch=False)) for job in jobs]
    for job, expected in zip(jobs, reference):
        got = run_job(job)
        for a, b in zip(got.objects, expected.objects):
            np.testing.assert_array_equal(a.J, b.J)
            np.testing.assert_array_equal(a.F, b.F)
    bad = pred_frame(3)
    bad[0:2, 0:2] = 9
    write_mask(results / "alpha" / "00003.png", bad)
    with pytest.raises(VidsegError, match="frame 00003: result id 9"):
        run_job(jobs[0])


def test_first_frame_matching_needs_the_unsupervised_task(davis, capsys):
    root, results = davis
    expect_error(capsys, ["--gt", root, "--results", results, "--matching", "first-frame"],
                 "--matching first-frame applies to --task unsupervised only")


def test_a_davis_2016_root_at_another_resolution_is_detected_and_said(davis, tmp_path, capsys):
    root, results = davis
    (root / "ImageSets" / "2017").rename(root / "ImageSets" / "2016")
    (root / "ImageSets" / "2016" / "val.txt").rename(root / "ImageSets" / "2016" / "train.txt")
    for task_folder in ("Annotations", "Annotations_unsupervised"):
        (root / task_folder / "480p").rename(root / task_folder / "240p")
    expect_error(capsys, ["--gt", root, "--results", results],
                 "ImageSets/2016/val.txt: split file not found (this root has: --year 2016 --set train)")
    code, stdout, stderr = run_cli(capsys, "--gt", root, "--results", results, "--set", "train", "--no-plots",
                                   "--out", tmp_path / "report")
    assert code == 0 and "J&F-Mean" in stdout
    assert "--year 2016 --resolution 240p (detected; pass them to choose)" in stderr
    assert json.loads((tmp_path / "report" / "results-train.json").read_text())["settings"]["year"] == "2016"


@pytest.mark.slow
def test_the_readme_python_example_runs_as_a_script_and_a_guardless_one_says_why(davis, tmp_path):
    import subprocess
    import sys

    root, results = davis
    call = f'evaluate({str(root)!r}, {str(results)!r}, jobs=2, progress=False)'
    guarded = f'from vidseg.evaluation import evaluate\nif __name__ == "__main__":\n    print({call}.global_metrics["J&F-Mean"])\n'
    bare = f"from vidseg.evaluation import evaluate\nprint({call}.global_metrics['J&F-Mean'])\n"
    for name, text in (("guarded.py", guarded), ("bare.py", bare)):
        (tmp_path / name).write_text(text)
    done = subprocess.run([sys.executable, str(tmp_path / "guarded.py")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and 0 < float(done.stdout.strip()) <= 1, done.stderr[-2000:]
    done = subprocess.run([sys.executable, str(tmp_path / "bare.py")], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and 'needs its code under `if __name__ == "__main__":`' in done.stderr, done.stderr[-2000:]


def test_one_sequence_as_two_folders(tmp_path, capsys):
    gt_dir, result_dir = tmp_path / "gt", tmp_path / "res"
    for t in (0, 10, 20, 30):  # ground truth drawn for a few frames only
        write_mask(gt_dir / f"{t:05d}.png", gt_frame(t))
    for t in range(31):
        write_mask(result_dir / f"{t:05d}.png", gt_frame(t))
    code, stdout, _ = run_cli(capsys, "--gt", gt_dir, "--results", result_dir, "--no-plots", "--out", tmp_path / "o")
    assert code == 0 and "gt_1" in stdout
    metrics = json.loads((tmp_path / "o" / "results-gt.json").read_text())
    assert metrics["global"]["J&F-Mean"] == pytest.approx(1.0)
    (result_dir / "00020.png").unlink()
    expect_error(capsys, ["--gt", gt_dir, "--results", result_dir], "res: result 00020.png is missing (1 of 4")
