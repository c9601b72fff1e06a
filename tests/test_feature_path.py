"""The demo bundle's predictions do not change when the feature path is refactored.

The expected probabilities below were recorded from the code at commit 78ea418 (before
issue 17's one-feature-path refactoring) by scoring the same phantom with the same
calls, printing each probability with ``repr``. Run to run (and phantom regeneration to
phantom regeneration) they were bit-identical on that code, so the tolerance is only a
guard against the last-bit differences of another BLAS build.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from model_bundle.features import read_cohort
from model_bundle.serving import BundleModel
from onfh_dlr.cli import app
from phantom.cohort import assign_hips, generate_cohort, write_study
from phantom.generator import generate_study
from worker.pipeline import score_series

DEMO = Path(__file__).resolve().parents[1] / "model_bundle" / "demo"
REL_TOL = 1e-9

# Recorded at 78ea418: worker.pipeline.score_series on the seed-7 phantom (3 cases),
# "auto" without a SEG (auto-segmentation), "seg" with the phantom's reference SEG.
EXPECTED: dict[str, dict[str, float]] = {
    "auto PH000700000 L": {"rad": 0.3961593433380531, "dl": 0.0744912235465066},
    "auto PH000700000 R": {"rad": 0.03437939603121889, "dl": 0.3602132190825542},
    "auto PH000700001 L": {"rad": 0.003962070036493517, "dl": 0.1450562666646619},
    "auto PH000700001 R": {"rad": 6.289308176100629e-05, "dl": 0.02245499773312109},
    "auto PH000700002 L": {"rad": 0.00610259291231051, "dl": 0.015828921231078215},
    "auto PH000700002 R": {"rad": 0.9496110504325512, "dl": 0.9221324527043571},
    "seg PH000700000 L": {"rad": 0.6501166608743177, "dl": 0.37037905232263063},
    "seg PH000700000 R": {"rad": 0.030879396031218895, "dl": 0.34919338414231726},
    "seg PH000700001 L": {"rad": 0.0036842922587157385, "dl": 0.08932868498714187},
    "seg PH000700001 R": {"rad": 6.289308176100629e-05, "dl": 0.0277157301473397},
    "seg PH000700002 L": {"rad": 0.002213704023421621, "dl": 0.008283757892653313},
    "seg PH000700002 R": {"rad": 0.9756348599563609, "dl": 0.9387366862003184},
}
# The demo bundle's DLR model selected radiomics only, so its probability equals Rad's.
for _probs in EXPECTED.values():
    _probs["dlr"] = _probs["rad"]


@pytest.fixture(scope="module")
def model() -> BundleModel:
    return BundleModel.load(DEMO)


@pytest.fixture(scope="module")
def fresh_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three patients of the fresh-seed phantom (seed 7, as ``make evaluate-demo``)."""
    return generate_cohort(tmp_path_factory.mktemp("seed7"), cases=3, seed=7, workers=2)


def _worker_probabilities(
    cohort: Path, model: BundleModel, kind: str
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for job in read_cohort(cohort):
        patient = job.hips[0]["PatientID"]
        scored = score_series(job.image, model, seg=job.mask if kind == "seg" else None)
        for side, prediction in scored.predictions.items():
            out[f"{kind} {patient} {side}"] = {
                str(key): value for key, value in prediction.probabilities.items()
            }
    return out


def _assert_close(got: dict[str, dict[str, float]], kind: str) -> None:
    expected = {k: v for k, v in EXPECTED.items() if k.startswith(kind + " ")}
    assert set(got) == set(expected)
    for hip, probs in expected.items():
        assert set(got[hip]) == set(probs), hip
        for key, value in probs.items():
            assert math.isclose(got[hip][key], value, rel_tol=REL_TOL, abs_tol=1e-15), (
                hip,
                key,
                got[hip][key],
                value,
            )


def test_worker_auto_segmentation_predictions_are_unchanged(
    fresh_cohort: Path, model: BundleModel
) -> None:
    _assert_close(_worker_probabilities(fresh_cohort, model, "auto"), "auto")


def test_worker_reference_seg_predictions_are_unchanged(
    fresh_cohort: Path, model: BundleModel
) -> None:
    _assert_close(_worker_probabilities(fresh_cohort, model, "seg"), "seg")


def test_evaluate_writes_the_same_predictions_as_the_worker(
    fresh_cohort: Path, tmp_path: Path
) -> None:
    # `evaluate --auto-roi` is the deployed path on a cohort: its predictions.csv (six
    # decimals, as it always wrote them) must hold the worker's auto-segmentation values.
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        app, ["evaluate", str(DEMO), str(fresh_cohort), "--out", str(out), "--auto-roi"]
    )
    assert result.exit_code == 0, result.output
    with (out / "predictions.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6
    for row in rows:
        expected = EXPECTED[f"auto {row['PatientID']} {row['Side']}"]
        for key, value in expected.items():
            assert row[f"prob_{key}"] == f"{value:.6f}", (row, key)
        assert row["roi_source"] == "auto" and row["reason"] == ""


def test_serving_reproduces_what_training_recorded(model: BundleModel, tmp_path: Path) -> None:
    # The demo bundle was trained on the seed-2024 phantom of 150 patients with reference
    # SEGs (`make bundle`); its predictions.csv holds every hip's probabilities (six
    # decimals). Serving the first two patients (one training, one test hip pair) gives
    # the same Rad and DLR numbers. DL differs by up to ~3e-5 (measured on four
    # patients): training recorded it with the float32 backbone, the bundle ships the
    # weights in float16.
    hips = assign_hips(150, 70 / 150, 2024)
    with (DEMO / "predictions.csv").open(encoding="utf-8", newline="") as fh:
        recorded = {(r["PatientID"], r["Side"]): r for r in csv.DictReader(fh)}
    for index in range(2):
        case = write_study(generate_study(2024, index, hips[index]), tmp_path, index)
        scored = score_series(tmp_path / case.series_dir, model, seg=tmp_path / case.seg_file)
        patient = case.rows[0]["PatientID"]
        assert len(scored.predictions) == 2
        for side, prediction in scored.predictions.items():
            row = recorded[(patient, str(side))]
            for key, value in prediction.probabilities.items():
                if str(key) == "dl":
                    assert abs(value - float(row["prob_dl"])) < 1e-4, (patient, side)
                else:
                    assert f"{value:.6f}" == row[f"prob_{key}"], (patient, side, key)
