"""A series the admission rules refuse (``ONFH_REPORT_SKIPPED``).

Off (the default): the series is skipped with its reason and nothing is sent. On: the
series is still skipped with its reason, and a job sends a "could not analyse: <reason>"
SR and card into its study, delivered like a result. Checked on the tracker with a real
state DB, then end to end with the real service and a receiving SCP.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from dicom_checks import dciodvfy_errors
from service_harness import MODALITY_AE, CohortMaker, Service, wait_until

from listener.rules import AdmissionRules
from listener.spool import StoredInstance
from listener.status_page import StatusPage
from listener.tracker import SeriesTracker
from model_bundle.imaging import Side
from onfh_dlr.refusals import REFUSED_KEY, refused_reason
from onfh_dlr.state import StateDB
from onfh_dlr.web import Request
from worker.sr_output import read_report

FINISHED = {"done", "failed", "dead_letter"}


def as_t1_series(slices: list[Path], out_dir: Path) -> list[Path]:
    """Copies of a phantom series that the default rules refuse as not T2-weighted."""
    out_dir.mkdir(parents=True, exist_ok=True)
    copies = []
    for path in slices:
        ds = pydicom.dcmread(path)
        ds.SeriesDescription = "T1 COR"
        ds.EchoTime, ds.RepetitionTime = 12, 500
        ds.ScanOptions = ""
        if "InversionTime" in ds:
            del ds.InversionTime
        ds.save_as(out_dir / path.name)
        copies.append(out_dir / path.name)
    return copies


def _spooled(spool: Path, path: Path) -> StoredInstance:
    header = pydicom.dcmread(path, stop_before_pixels=True)
    target = spool / str(header.StudyInstanceUID) / str(header.SeriesInstanceUID)
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target / path.name)
    return StoredInstance.from_header(target / path.name, header, calling_ae="MR1")


def _close_through_tracker(
    tmp_path: Path, slices: list[Path], *, report_skipped: bool
) -> tuple[StateDB, list[str], str]:
    db, sent = StateDB.for_settings(None, tmp_path), list[str]()
    tracker = SeriesTracker(
        db,
        AdmissionRules(),
        sent.append,
        series_timeout=3600,
        sweep_interval=0,
        report_skipped=report_skipped,
    )
    stored = [_spooled(tmp_path / "spool", f) for f in slices]
    for instance in stored:
        tracker.instance_stored(instance)
    tracker.association_released("MR1", frozenset({stored[0].series_uid}))
    assert tracker.open_series == []
    return db, sent, stored[0].series_uid


@pytest.fixture(scope="module")
def t1_slices(phantom_cohort: CohortMaker, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    (study,) = phantom_cohort(1, 5, onfh_fraction=1.0).studies
    return as_t1_series(study.slices, tmp_path_factory.mktemp("t1"))


def test_a_refused_series_gets_no_job_by_default(tmp_path: Path, t1_slices: list[Path]) -> None:
    db, sent, uid = _close_through_tracker(tmp_path, t1_slices, report_skipped=False)
    row = db.series(uid)
    assert row is not None and row.state == "skipped"
    assert row.reason.startswith("not T2-weighted")
    assert db.jobs() == [] and sent == []


def test_with_report_skipped_a_refused_series_stays_skipped_and_gets_a_refused_job(
    tmp_path: Path, t1_slices: list[Path]
) -> None:
    db, sent, uid = _close_through_tracker(tmp_path, t1_slices, report_skipped=True)
    row = db.series(uid)
    assert row is not None and row.state == "skipped"
    assert row.reason.startswith("not T2-weighted")
    (job,) = db.jobs()
    assert sent == [job.id] and job.state == "queued"
    assert refused_reason(job) == row.reason and job.reason == row.reason
    html = StatusPage(db, None, lambda _job: None).studies(Request("GET", "/", {}, {}, {}))
    page = html.body.decode()
    assert "s-skipped" in page and "not T2-weighted" in page


# --- end to end -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def service_settings() -> dict[str, str]:
    return {"allowed_calling_aes": MODALITY_AE, "report_skipped": "true", "delivery_retries": "2"}


def test_with_report_skipped_a_refused_series_arrives_as_could_not_analyse_sr_and_card(
    service: Service, phantom_cohort: CohortMaker, tmp_path: Path
) -> None:
    (study,) = phantom_cohort(1, 41, onfh_fraction=1.0).studies
    assert set(service.push(as_t1_series(study.slices, tmp_path))) == {0x0000}
    job = service.wait_for_job(study.series_uid, FINISHED)
    assert job.state == "done", job.reason
    row = service.db.series(study.series_uid)
    assert row is not None and row.state == "skipped"
    reason = row.reason
    assert reason.startswith("not T2-weighted")
    assert job.result[REFUSED_KEY] == reason and job.reason == reason
    assert [d.state for d in service.db.deliveries(job.id)] == ["delivered"]
    received = [r for r in service.pacs.received if r.study_uid == study.study_uid]
    assert sorted(r.modality for r in received) == ["OT", "SR"]  # no ROI, so no SEG
    for item in received:
        assert dciodvfy_errors(item.path) == [], item.modality
    sr = hd.sr.srread(next(r for r in received if r.modality == "SR").path)
    assert sr.StudyInstanceUID == study.study_uid
    hips = read_report(sr)
    assert {side: hip.not_analysed for side, hip in hips.items()} == {
        Side.RIGHT: reason,
        Side.LEFT: reason,
    }
    assert all(hip.score is None and hip.probability is None for hip in hips.values())
    card = pydicom.dcmread(next(r for r in received if r.modality == "OT").path)
    assert card.SOPInstanceUID == job.result["card_uid"]
    for name in ("Right", "Left"):
        assert f"{name} femoral head: could not analyse: {reason}" in str(card.ImageComments)


def test_without_report_skipped_a_refused_series_sends_nothing(
    service: Service, phantom_cohort: CohortMaker, tmp_path: Path
) -> None:
    service.restart_listener(report_skipped=None)
    try:
        (study,) = phantom_cohort(1, 43, onfh_fraction=1.0).studies
        assert set(service.push(as_t1_series(study.slices, tmp_path))) == {0x0000}

        def settled() -> bool:
            row = service.db.series(study.series_uid)
            return row is not None and row.state == "skipped"

        # Once skipped the series is settled: without a job nothing can be sent later.
        wait_until(settled, 60, "the refused series to be skipped")
        assert service.jobs_of(study.series_uid) == []
        assert [r for r in service.pacs.received if r.study_uid == study.study_uid] == []
    finally:
        service.restart_listener(report_skipped="true")
