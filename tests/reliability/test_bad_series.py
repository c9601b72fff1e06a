"""Bad series that get past the listener: each ends failed or skipped with its reason.

Inconsistent geometry, too few slices, too many slices, a SEG that does not belong to
the series it names: the worker records why and goes on (one attempt, no crash loop, the
same worker process scores the next good study).
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import Scale
from pydicom.uid import generate_uid
from service_harness import CohortMaker, Service, wait_until

FINISHED = {"done", "failed", "dead_letter"}


@pytest.fixture(scope="module")
def service_settings() -> dict[str, str]:
    return {"series_timeout": "3"}


@pytest.fixture(scope="module")
def cohort(phantom_cohort: CohortMaker) -> list[tuple[list[Path], Path]]:
    """(slices, reference SEG) per patient; tests change only restamped copies."""
    return [(s.slices, s.seg) for s in phantom_cohort(3, 610).studies]


def restamped(files: list[Path], out: Path, change: object = None) -> list[Path]:
    """Copies of a series with new Study/Series/SOP UIDs (a distinct study each time)."""
    out.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    paths = []
    for index, path in enumerate(files):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        if callable(change):
            change(index, ds)
        # by index: a series may repeat one source file (the many-slices case)
        paths.append(out / f"{index:05d}.dcm")
        ds.save_as(paths[-1])
    return paths


def series_of(paths: list[Path]) -> str:
    return str(pydicom.dcmread(paths[0], stop_before_pixels=True).SeriesInstanceUID)


def outcome(service: Service, series_uid: str) -> tuple[str, str, int]:
    """(state, reason, attempts) of a series: its job's, or the series' own when skipped."""

    def closed() -> bool:
        row = service.db.series(series_uid)
        if row is not None and row.state == "skipped":
            return True
        jobs = service.jobs_of(series_uid)
        return bool(jobs) and jobs[-1].state in FINISHED

    wait_until(closed, 180, f"series {series_uid} to end")
    row = service.db.series(series_uid)
    assert row is not None
    if row.state == "skipped":
        return "skipped", row.reason, 0
    (job,) = service.jobs_of(series_uid)
    return job.state, job.reason, job.attempts


def test_bad_series_end_failed_or_skipped_with_a_reason_and_the_worker_goes_on(
    service: Service, cohort: list[tuple[list[Path], Path]], scale: Scale, tmp_path: Path
) -> None:
    files, seg = cohort[0]
    worker_pid = service.processes["worker"].pid
    cases: dict[str, list[Path]] = {}

    def tilt(index: int, ds: pydicom.Dataset) -> None:
        if index % 2:  # every other slice in another orientation
            ds.ImageOrientationPatient = [1, 0, 0, 0, 0.7071068, -0.7071068]

    cases["inconsistent geometry"] = restamped(files, tmp_path / "tilted", tilt)
    cases["two slices"] = restamped(files[:2], tmp_path / "two")
    if scale.full:  # 5,000 tiny slices: past the loader's 2,000-slice limit
        template = pydicom.dcmread(files[0])

        def tiny(index: int, ds: pydicom.Dataset) -> None:
            ds.Rows = ds.Columns = 32  # the loader's smallest matrix
            ds.PixelData = np.full((32, 32), 100, dtype=np.uint16).tobytes()
            position = np.array(template.ImagePositionPatient, dtype=float)
            ds.ImagePositionPatient = [float(v) for v in position + np.array([0, 0.5 * index, 0])]
            ds.InstanceNumber = index + 1

        many = [files[0]] * 5000
        cases["5,000 slices"] = restamped(many, tmp_path / "many", tiny)

    # A SEG that names this series but segments another one (its frames and frame of
    # reference are those of the first phantom patient).
    other_files, _ = cohort[1]
    target = restamped(other_files, tmp_path / "target")
    bad_seg = pydicom.dcmread(seg)
    bad_seg = copy.deepcopy(bad_seg)
    bad_seg.SOPInstanceUID = bad_seg.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    bad_seg.SeriesInstanceUID = generate_uid()
    bad_seg.StudyInstanceUID = pydicom.dcmread(target[0]).StudyInstanceUID
    bad_seg.ReferencedSeriesSequence[0].SeriesInstanceUID = series_of(target)
    bad_seg.save_as(tmp_path / "bad-seg.dcm")
    cases["SEG of another series"] = [tmp_path / "bad-seg.dcm", *target]

    results: dict[str, dict[str, str | int | float]] = {}
    reasons: dict[str, str] = {}
    for name, paths in cases.items():
        started = time.monotonic()
        assert set(service.push(paths)) == {0}, name
        images = [p for p in paths if p.name != "bad-seg.dcm"]
        assert len({p.name for p in images}) == len(images), name  # distinct instances
        state, reason, attempts = outcome(service, series_of(images))
        results[name] = {
            "instances": len(paths),
            "state": state,
            "reason": reason[:120],
            "attempts": attempts,
            "push_to_end_s": round(time.monotonic() - started, 1),
        }
        reasons[name] = reason
        assert state in ("failed", "skipped"), (name, state, reason)
        assert reason, name
        assert attempts <= 1, (name, attempts)  # permanent: never retried in a loop
    print(json.dumps(results, indent=1))
    assert "MixedOrientation" in reasons["inconsistent geometry"]
    assert "TooFewSlices" in reasons["two slices"]
    assert "SegmentationReferenceError" in reasons["SEG of another series"]
    if scale.full:
        assert "ImageSizeError" in reasons["5,000 slices"], reasons
        assert "5000 slices, more than the limit" in reasons["5,000 slices"], reasons

    # The same worker process scores the next good study.
    good = restamped(cohort[2][0], tmp_path / "good")
    assert set(service.push(good)) == {0}
    state, reason, _ = outcome(service, series_of(good))
    assert state == "done", reason
    assert service.processes["worker"].pid == worker_pid
    assert service.processes["worker"].poll() is None


def test_an_mr_image_that_says_ct_is_refused_at_the_door(
    service: Service, cohort: list[tuple[list[Path], Path]], tmp_path: Path
) -> None:
    def ct(_index: int, ds: pydicom.Dataset) -> None:
        ds.Modality = "CT"

    paths = restamped(cohort[0][0][:3], tmp_path / "ct", ct)
    statuses = service.push(paths)
    assert all(status >= 0xA000 for status in statuses)
    assert service.db.series(series_of(paths)) is None
