"""The evaluator reproduces the official DAVIS 2017 toolkit's numbers on real masks.

``../shared/conformance/davis2017`` holds DAVIS-layout ground truth (10 val sequences), two result
folders and the toolkit's global and per-object figures (9 decimals). Every figure must agree to 1e-6.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from vidseg.evaluation import evaluate
from vidseg.evaluation.report import global_csv, per_object_csv

CONFORMANCE = Path(__file__).resolve().parents[1].parent / "shared" / "conformance" / "davis2017"

pytestmark = pytest.mark.skipif(
    not (CONFORMANCE / "expected").is_dir(),
    reason=f"conformance data not found at {CONFORMANCE} (the shared/ folder beside the repository)",
)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize(
    "task, results",
    [("semi-supervised", "semi-lag1"), ("unsupervised", "unsup-rvos")],
)
def test_every_global_and_per_object_figure_matches_the_toolkit(task, results):
    result = evaluate(CONFORMANCE / "gt", CONFORMANCE / "results" / results, task=task, analyses=False)

    expected_global = read_csv(CONFORMANCE / "expected" / f"{results}_global.csv")[0]
    assert set(expected_global) <= set(result.global_metrics)
    for key, value in expected_global.items():
        assert result.global_metrics[key] == pytest.approx(float(value), abs=1e-6), key

    expected_rows = read_csv(CONFORMANCE / "expected" / f"{results}_per_object.csv")
    got_rows = result.per_object
    assert [r["Sequence"] for r in got_rows] == [r["Sequence"] for r in expected_rows]
    for got, expected in zip(got_rows, expected_rows):
        for key, value in expected.items():
            if key != "Sequence":
                assert got[key] == pytest.approx(float(value), abs=1e-6), (expected["Sequence"], key)

    # the CSV files we write have the toolkit's columns and 9 decimals: byte-identical here
    assert global_csv(result) == (CONFORMANCE / "expected" / f"{results}_global.csv").read_text()
    assert per_object_csv(result) == (CONFORMANCE / "expected" / f"{results}_per_object.csv").read_text()


def test_objects_counted_from_the_first_annotation_max_id():
    # lab-coat's first annotation holds ids 3, 4, 5 only; the toolkit still scores objects 1..5
    result = evaluate(CONFORMANCE / "gt", CONFORMANCE / "results" / "semi-lag1", sequences=["lab-coat"], analyses=False)
    assert [o.name for o in result.objects] == [f"lab-coat_{k}" for k in range(1, 6)]
