"""Training end to end on a small phantom cohort: bundle, report, integrity, serving."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from service_harness import CohortMaker
from typer.testing import CliRunner

from model_bundle.bundle import load_bundle, verify_bundle
from model_bundle.features import read_cohort, series_job, series_rois
from model_bundle.imaging import load_series
from model_bundle.serving import BundleModel, ModelName
from onfh_dlr.cli import app
from onfh_dlr.errors import BundleError

TRAIN_YAML = "epochs: 2\nbatch_size: 8\nlasso_folds: 3\ncv_folds: 3\nthreads: 1\nseed: 3\n"


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory, phantom_cohort: CohortMaker
) -> tuple[Path, Path]:
    """A tiny bundle trained with `onfh-dlr train` on 12 phantom patients."""
    root = tmp_path_factory.mktemp("training")
    cohort = phantom_cohort(12, 61).csv
    config = root / "train.yaml"
    config.write_text(TRAIN_YAML)
    bundle = root / "bundle"
    result = CliRunner().invoke(
        app,
        [
            "train",
            str(cohort),
            "--out",
            str(bundle),
            "--config",
            str(config),
            "--workers",
            "2",
            "--synthetic",
        ],
    )
    assert result.exit_code == 0, result.output
    return cohort, bundle


def test_training_writes_a_verified_synthetic_bundle(trained: tuple[Path, Path]) -> None:
    _, path = trained
    report = verify_bundle(path)
    assert report.ok, report.lines()
    bundle = load_bundle(path)
    assert bundle.is_synthetic and "not for clinical use" in bundle.warning
    assert bundle.deployed_model == "dlr" and 0.0 <= bundle.threshold <= 1.0
    for key in ("rad", "dl", "dlr"):
        assert bundle.feature_names(key)
    assert any(n.startswith("deep_pca_") for n in bundle.feature_names("dl"))
    assert (path / "resnet18.safetensors").stat().st_size < 30_000_000  # float16 weights
    html = (path / "report.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," in html and "http://" not in html and "https://" not in html
    metrics = json.loads((path / "metrics.json").read_text())
    assert set(metrics["test"]["models"]) == {"rad", "dl", "dlr"}
    assert set(metrics["thresholds"]) == {"rad", "dl", "dlr"}


def test_predictions_cover_every_hip_and_the_split_is_by_patient(
    trained: tuple[Path, Path],
) -> None:
    cohort, path = trained
    with (path / "predictions.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[:7] == [
        "PatientID",
        "Side",
        "Label",
        "split",
        "prob_rad",
        "prob_dl",
        "prob_dlr",
    ]
    with cohort.open(encoding="utf-8") as fh:
        assert len(rows) == len(list(csv.DictReader(fh)))
    splits: dict[str, set[str]] = {}
    for row in rows:
        splits.setdefault(row["PatientID"], set()).add(row["split"])
        assert row["call"] in ("0", "1")
    assert all(len(s) == 1 for s in splits.values())
    assert {next(iter(s)) for s in splits.values()} == {"train", "test"}


def test_the_served_model_reproduces_the_training_predictions(trained: tuple[Path, Path]) -> None:
    cohort, path = trained
    model = BundleModel.load(path, threads=1)
    with (path / "predictions.csv").open(encoding="utf-8") as fh:
        recorded = {(r["PatientID"], r["Side"]): r for r in csv.DictReader(fh)}
    job = read_cohort(cohort)[0]
    series = load_series(job.image)
    for side, roi in series_rois(series, job.mask).rois.items():
        pred = model.predict_hip(series, roi)
        row = recorded[(job.hips[0]["PatientID"], side)]
        for key in ModelName:
            probability = float(row[f"prob_{key.value}"])
            assert pred.probabilities[key] == pytest.approx(probability, abs=1e-5)
        assert pred.call == int(row["call"])


def test_a_tampered_bundle_is_refused(trained: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    _, path = trained
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    target = copy / "models" / "dlr" / "classifier.json"
    data = bytearray(target.read_bytes())
    data[-5] = ord("7") if data[-5] != ord("7") else ord("8")
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"classifier\.json"):
        BundleModel.load(copy)


def test_evaluate_scores_an_external_cohort_with_auto_segmentation(
    trained: tuple[Path, Path], tmp_path: Path, phantom_cohort: CohortMaker
) -> None:
    _, path = trained
    external = phantom_cohort(4, 62).csv
    # The deployed path: no masks at all.
    with external.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:  # the new CSV lives elsewhere: the shared cohort stays read-only
        row["Image"] = str((external.parent / row["Image"]).resolve())
    stripped = tmp_path / "nomask.csv"
    with stripped.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["PatientID", "Side", "Image", "Label"])
        writer.writeheader()
        writer.writerows({k: r[k] for k in ("PatientID", "Side", "Image", "Label")} for r in rows)
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["evaluate", str(path), str(stripped), "--out", str(out)])
    assert result.exit_code == 0, result.output
    with (out / "predictions.csv").open(encoding="utf-8") as fh:
        scored = list(csv.DictReader(fh))
    assert len(scored) == 8
    assert all(r["roi_source"] == "auto" and r["prob_dlr"] for r in scored)
    assert "data:image/png;base64," in (out / "report.html").read_text(encoding="utf-8")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 8 and metrics["models"]["dlr"]["threshold"] == pytest.approx(
        load_bundle(path).threshold
    )
    assert np.isfinite(metrics["models"]["dlr"]["auc"]["estimate"])


def test_series_job_helper_scores_both_sides(trained: tuple[Path, Path]) -> None:
    cohort, _ = trained
    job = read_cohort(cohort)[0]
    assert [h["Side"] for h in series_job(job.image, job.mask).hips] == ["R", "L"]
