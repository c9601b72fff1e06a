"""The per-hip feature pipeline and `onfh-dlr features`, on phantom series."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import pytest
from service_harness import CohortMaker
from typer.testing import CliRunner

from model_bundle import (
    DEEP_FEATURE_NAMES,
    FEATURE_NAMES,
    FeatureSpec,
    cohort_features,
    read_cohort,
    run_series_job,
    series_job,
)
from model_bundle.imaging import Side
from onfh_dlr.cli import app

# A small spread of radiomics names (shape, first order, texture, filtered images).
SUBSET = (
    "original_shape_Sphericity",
    "original_firstorder_Mean",
    "original_glcm_Contrast",
    "wavelet-LLH_glrlm_RunEntropy",
    "log-sigma-3-0-mm-3D_firstorder_90Percentile",
)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory, phantom_cohort: CohortMaker) -> Path:
    """Two phantom patients (one with ONFH) and a cohort.csv; a third row points at junk."""
    # A copy: the shared cohort is read-only, and this one gets a broken row.
    out = tmp_path_factory.mktemp("features") / "cohort"
    shutil.copytree(phantom_cohort(2, 41).root, out)
    csv_path = out / "cohort.csv"
    # A hospital's cohort will contain a broken series now and then.
    broken = out / "broken"
    broken.mkdir()
    (broken / "note.txt").write_text("not DICOM")
    with csv_path.open("a", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["PHBROKEN", "L", "broken", "", "0"] + [""] * 25)
    return csv_path


def test_cohort_rows_are_grouped_per_series_with_paths_resolved(cohort: Path) -> None:
    jobs = read_cohort(cohort)
    assert len(jobs) == 3
    assert [len(j.hips) for j in jobs] == [2, 2, 1]
    assert all(j.image.is_absolute() for j in jobs)
    assert jobs[0].mask is not None and jobs[0].mask.name == "seg.dcm"
    assert jobs[2].mask is None


def test_both_hips_of_a_series_get_all_features_from_the_seg(cohort: Path) -> None:
    job = read_cohort(cohort)[0]
    spec = FeatureSpec(radiomics=SUBSET, deep=True)
    rows = run_series_job(job, spec)
    assert [r.side for r in rows] == [h["Side"] for h in job.hips]
    for row in rows:
        assert row.status == "ok" and row.roi_source == "seg"
        assert list(row.values) == [*SUBSET, *DEEP_FEATURE_NAMES]
        assert all(math.isfinite(v) for v in row.values.values())
        assert row.extra["HeadRadius"]  # truth columns are carried through
    assert rows[0].values != rows[1].values


def test_selective_features_equal_the_full_run_through_the_pipeline(cohort: Path) -> None:
    job = read_cohort(cohort)[0]
    full = run_series_job(job, FeatureSpec(radiomics=None, deep=False))
    subset = run_series_job(job, FeatureSpec(radiomics=SUBSET, deep=False))
    for f, s in zip(full, subset, strict=True):
        assert len(f.values) == len(FEATURE_NAMES) == 1197
        assert {n: f.values[n] for n in SUBSET} == s.values


def test_a_hip_without_a_mask_is_auto_segmented(cohort: Path) -> None:
    job = read_cohort(cohort)[1]
    rows = run_series_job(
        series_job(job.image, None, "X"), FeatureSpec(radiomics=SUBSET, deep=False)
    )
    assert [r.status for r in rows] == ["ok", "ok"]
    assert {r.roi_source for r in rows} == {"auto"}


def test_a_failed_series_is_reported_and_the_rest_go_on(cohort: Path) -> None:
    spec = FeatureSpec(radiomics=SUBSET, deep=False)
    rows = list(cohort_features(read_cohort(cohort), spec, workers=2))
    assert len(rows) == 5
    failed = [r for r in rows if r.status == "failed"]
    assert [r.patient_id for r in failed] == ["PHBROKEN"]
    assert "SeriesNotFoundError" in failed[0].reason
    assert all(r.values for r in rows if r.status == "ok")


def test_features_command_writes_one_row_per_hip(cohort: Path, tmp_path: Path) -> None:
    names = tmp_path / "names.txt"
    names.write_text("\n".join(SUBSET) + "\n")
    out = tmp_path / "features.csv"
    job = read_cohort(cohort)[0]
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "features",
            str(job.image),
            "--seg",
            str(job.mask),
            "--out",
            str(out),
            "--no-deep",
            "--features",
            str(names),
        ],
    )
    assert result.exit_code == 0, result.output
    with out.open(encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    assert [r["Side"] for r in table] == ["R", "L"]
    assert all(r["status"] == "ok" for r in table)
    assert list(table[0])[-len(SUBSET) :] == list(SUBSET)
    # An unknown feature name is refused with its name, not silently dropped.
    names.write_text("original_firstorder_NoSuchThing\n")
    result = runner.invoke(
        app,
        [
            "features",
            str(job.image),
            "--seg",
            str(job.mask),
            "--out",
            str(out),
            "--no-deep",
            "--features",
            str(names),
        ],
    )
    assert result.exit_code == 2
    assert "unknown radiomics feature(s): original_firstorder_NoSuchThing" in result.output


def test_the_deep_input_region_holds_the_whole_roi_with_its_margin(cohort: Path) -> None:
    import numpy as np
    import SimpleITK as sitk

    from model_bundle import load_series, rois_from_seg
    from model_bundle.features import HIP_MARGIN, hip_region, preprocessed

    job = read_cohort(cohort)[0]
    assert job.mask is not None
    series = load_series(job.image)
    roi = rois_from_seg(job.mask, series)[Side.LEFT]
    image, mask = hip_region(series.image, roi.mask)
    assert sitk.GetArrayFromImage(mask).sum() == sitk.GetArrayFromImage(roi.mask).sum()
    # The margin is there (unless the image ends first) and the grid is the series' own.
    assert image.GetSpacing() == series.image.GetSpacing()
    columns = np.nonzero(sitk.GetArrayFromImage(mask))[2]
    spacing = image.GetSpacing()
    assert columns.min() * spacing[0] >= HIP_MARGIN - spacing[0] or columns.min() == 0
    iso, iso_mask = preprocessed(series, roi)
    assert iso.GetSpacing() == (1.0, 1.0, 1.0)
    values = sitk.GetArrayFromImage(iso)
    assert abs(float(values.mean())) < 1e-3 and abs(float(values.std()) - 1) < 1e-3
    assert sitk.GetArrayFromImage(iso_mask).sum() > 0
