"""Radiologists' verdicts (IHE AIRA): the assessment SR written, read, recorded, summarised.

A real SR of ours is built from a phantom study (``worker.sr_output.build_report``), a
job that produced it is written to a state database, and the assessment SRs are written
by ``feedback send --out`` (the command a site runs) or its builder.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_checks import dciodvfy_errors
from html_checks import ParsedHtml
from pydicom.dataset import Dataset
from statsmodels.stats.proportion import proportion_confint
from typer.testing import CliRunner

from listener import verdicts
from listener.rules import AdmissionRules
from listener.status_page import StatusPage
from listener.tracker import SeriesTracker
from listener.verdicts import AssessmentError, parse_assessment, record, summarise
from model_bundle.imaging import HipROI, Side, load_series
from model_bundle.serving import HipPrediction, ModelName
from onfh_dlr.cli import app
from onfh_dlr.cli.feedback import build_assessment
from onfh_dlr.state import AssessmentState, Job, StateDB, Verdict
from onfh_dlr.web import Request
from phantom.dicom_writer import write_series
from phantom.generator import generate_study
from worker.seg_output import HEAD_OF_FEMUR, LATERALITY, OutputDevice, build_segmentation
from worker.sr_output import ABSENT, NECROSIS, PRESENT, build_report

DEVICE = OutputDevice(
    name="onfh-dlr-test",
    version="2.3.4",
    device_uid="1.2.826.0.1.3680043.8.498.1234567890",
    not_for_clinical_use=True,
    warning="synthetic demonstration \u2014 not for clinical use",
    threshold=0.4,
    deployed_model=ModelName.DLR,
    intended_use="Second reader for early ONFH.",
)
PROBABILITIES = {Side.LEFT: 0.12, Side.RIGHT: 0.87}  # the model: left negative, right positive


def _prediction(side: Side, probability: float) -> HipPrediction:
    return HipPrediction(
        side=side,
        probabilities={ModelName.DLR: probability},
        deployed_model=ModelName.DLR,
        probability=probability,
        score=math.log(probability / (1 - probability)),
        threshold=DEVICE.threshold,
        call=int(probability >= DEVICE.threshold),
        roi_source="auto",
        roi_description="truth",
        inputs={"deep_pca_003": -1.25},
    )


@dataclass(frozen=True)
class Scored:
    sr_path: Path
    sr: Dataset


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> Scored:
    """One SR of ours, as the worker writes it."""
    study = generate_study(21, 1, (False, True))
    directory = tmp_path_factory.mktemp("verdicts")
    write_series(study, directory / "series")
    series = load_series(directory / "series")
    rois: dict[Side, HipROI] = {}
    for segment in study.segments:
        if segment.kind == "femoral_head":
            mask = sitk.GetImageFromArray(segment.mask.astype(np.uint8))
            mask.CopyInformation(series.image)
            rois[Side(segment.side)] = HipROI(Side(segment.side), mask, "auto", "truth")
    seg = build_segmentation(series, rois, DEVICE, series_number=9001)
    predictions = {side: _prediction(side, p) for side, p in PROBABILITIES.items()}
    sr = build_report(series, seg, predictions, DEVICE, series_number=9002)
    path = directory / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    return Scored(path, pydicom.dcmread(path))


def _job_for(db: StateDB, scored: Scored, tmp_path: Path) -> Job:
    """A scored job whose SR is ``scored`` (as the worker records one)."""
    series = "1.2.3.4"
    db.series_received(
        series_uid=series, study_uid=str(scored.sr.StudyInstanceUID), instances=1, at=1.0
    )
    job_id = db.admit_series(series, tmp_path)
    db.start_job(job_id)
    hips = {
        side.value: {"call": int(p >= DEVICE.threshold), "probability": p}
        for side, p in PROBABILITIES.items()
    }
    db.job_scored(
        job_id,
        sr_path=scored.sr_path,
        seg_path=None,
        sr_uid=str(scored.sr.SOPInstanceUID),
        result={"hips": hips},
        destinations=[],
    )
    job = db.job(job_id)
    assert job is not None
    return job


@pytest.fixture
def db(tmp_path: Path) -> StateDB:
    return StateDB.for_settings(None, tmp_path / "db")


def _send_out(scored: Scored, out: Path, *args: str) -> Dataset:
    run = CliRunner().invoke(
        app, ["feedback", "send", str(scored.sr_path), *args, "--out", str(out)]
    )
    assert run.exit_code == 0, run.output
    return pydicom.dcmread(out)


def test_the_assessment_sr_written_by_feedback_send_passes_dciodvfy(
    scored: Scored, tmp_path: Path
) -> None:
    out = tmp_path / "assessment.dcm"
    sr = _send_out(
        scored, out, "--hip", "right", "--reject", "--call", "absent", "--observer", "Doe^Jane"
    )
    assert dciodvfy_errors(out) == []
    assert sr.SOPClassUID == verdicts.COMPREHENSIVE_SR
    assert sr.StudyInstanceUID == scored.sr.StudyInstanceUID
    assert sr.PatientID == scored.sr.PatientID


def test_an_assessment_reads_back_as_the_verdict_call_and_reference_written(
    scored: Scored, tmp_path: Path
) -> None:
    sr = _send_out(
        scored,
        tmp_path / "a.dcm",
        "--hip",
        "left",
        "--hip",
        "right",
        "--modify",
        "--call",
        "present",
    )
    parsed = parse_assessment(sr)
    assert parsed.referenced_sr_uids == (str(scored.sr.SOPInstanceUID),)
    assert [(h.side, h.verdict, h.call) for h in parsed.hips] == [
        ("L", Verdict.MODIFY, True),
        ("R", Verdict.MODIFY, True),
    ]
    assert all(h.tracking_uid for h in parsed.hips)  # the exact results judged
    assert parsed.observer == "Radiologist^"


def test_the_listener_reads_the_same_standard_codes_our_sr_writes() -> None:
    assert (
        verdicts.HEAD_OF_FEMUR.value,
        verdicts.HEAD_OF_FEMUR.scheme_designator,
    ) == HEAD_OF_FEMUR[:2]
    for side, code in LATERALITY.items():
        assert (verdicts.SIDES[side.value].value, "SCT") == code[:2]
    for ours, theirs in (
        (verdicts.NECROSIS, NECROSIS),
        (verdicts.PRESENT, PRESENT),
        (verdicts.ABSENT, ABSENT),
    ):
        assert (ours.value, ours.scheme_designator) == (theirs.value, theirs.scheme_designator)


def test_verdicts_are_recorded_with_the_job_and_the_model_that_made_the_result(
    db: StateDB, scored: Scored, tmp_path: Path
) -> None:
    job = _job_for(db, scored, tmp_path)
    accept = build_assessment(scored.sr, [("L", Verdict.ACCEPT, None)], observer="Doe^Jane")
    reject = build_assessment(scored.sr, [("R", Verdict.REJECT, None)], observer="Doe^Jane")
    for sr in (accept, reject):
        assert record(db, sr, path=tmp_path / "x.dcm").state is AssessmentState.RECORDED
    found = {v.hip.side: v for v in db.verdicts()}
    assert {v.job_id for v in found.values()} == {job.id}
    # Left: model negative, accepted -> radiologist negative; right: positive, rejected.
    assert (found["L"].hip.radiologist_call, found["L"].hip.model_call) == (False, False)
    assert (found["R"].hip.radiologist_call, found["R"].hip.model_call) == (False, True)
    assert found["R"].model.device_uid == DEVICE.device_uid
    assert (found["R"].model.name, found["R"].model.version) == (DEVICE.name, DEVICE.version)
    assert job.id == db.job_for_sr(str(scored.sr.SOPInstanceUID)).id  # type: ignore[union-attr]
    assert db.job(job.id).state == "scored"  # type: ignore[union-attr]  # a verdict scores nothing
    [summary] = summarise(db.verdicts())
    assert summary.counts == {Verdict.ACCEPT: 1, Verdict.REJECT: 1, Verdict.MODIFY: 0}
    assert (summary.agreement.successes, summary.agreement.total) == (1, 2)
    assert (summary.ppv.successes, summary.ppv.total) == (0, 1)
    assert (summary.npv.successes, summary.npv.total) == (1, 1)


def test_a_resent_assessment_replaces_its_verdicts_and_a_later_one_overrides(
    db: StateDB, scored: Scored, tmp_path: Path
) -> None:
    _job_for(db, scored, tmp_path)
    first = build_assessment(scored.sr, [("R", Verdict.REJECT, None)], observer="Doe^A")
    record(db, first, path=tmp_path / "1.dcm", received_at=10.0)
    record(db, first, path=tmp_path / "1.dcm", received_at=20.0)  # the same SR again
    assert len(db.verdicts()) == 1
    later = build_assessment(scored.sr, [("R", Verdict.ACCEPT, None)], observer="Doe^A")
    record(db, later, path=tmp_path / "2.dcm", received_at=30.0)
    assert len(db.verdicts()) == 2
    [summary] = summarise(db.verdicts())
    assert summary.counts[Verdict.ACCEPT] == 1 and summary.hips == 1


def test_an_sr_that_is_not_an_assessment_is_kept_as_not_recorded_with_the_reason(
    db: StateDB, scored: Scored, tmp_path: Path
) -> None:
    _job_for(db, scored, tmp_path)
    kept = record(db, scored.sr, path=scored.sr_path)  # our own report, sent back to us
    assert kept.state is AssessmentState.NOT_RECORDED
    assert "not an assessment" in kept.reason
    assert db.verdicts() == []
    assert [a.reason for a in db.assessments()] == [kept.reason]


def test_an_assessment_of_an_sr_we_did_not_produce_is_not_recorded(
    db: StateDB, scored: Scored, tmp_path: Path
) -> None:
    # No job in this database produced the SR.
    sr = build_assessment(scored.sr, [("R", Verdict.ACCEPT, None)], observer="Doe^A")
    kept = record(db, sr, path=tmp_path / "a.dcm")
    assert kept.state is AssessmentState.NOT_RECORDED
    assert "references no SR this service produced" in kept.reason
    assert str(scored.sr.SOPInstanceUID) in kept.reason


def test_a_malformed_assessment_says_what_is_missing(scored: Scored) -> None:
    sr = build_assessment(scored.sr, [("R", Verdict.ACCEPT, None)], observer="Doe^A")
    group = sr.ContentSequence[-1]
    group.ContentSequence = [
        i for i in group.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue != "AIRA-VERDICT"
    ]
    with pytest.raises(AssessmentError, match="has no assessment"):
        parse_assessment(sr)
    with pytest.raises(ValueError, match="needs the radiologist's call"):
        build_assessment(scored.sr, [("R", Verdict.MODIFY, None)], observer="Doe^A")


def test_feedback_send_refuses_no_verdict_and_two_verdicts(scored: Scored, tmp_path: Path) -> None:
    base = [
        "feedback",
        "send",
        str(scored.sr_path),
        "--hip",
        "right",
        "--out",
        str(tmp_path / "x.dcm"),
    ]
    assert CliRunner().invoke(app, base).exit_code == 2
    assert CliRunner().invoke(app, [*base, "--accept", "--reject"]).exit_code == 2


@pytest.mark.parametrize(("successes", "total"), [(0, 1), (1, 1), (3, 7), (9, 10), (45, 50)])
def test_the_wilson_interval_matches_statsmodels(successes: int, total: int) -> None:
    expected = proportion_confint(successes, total, alpha=0.05, method="wilson")
    assert verdicts.wilson_interval(successes, total) == pytest.approx(expected, abs=1e-9)


def test_feedback_export_prints_the_verdicts_and_the_table_as_json(
    scored: Scored, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    db = StateDB.for_settings(None, data)
    _job_for(db, scored, tmp_path)
    record(
        db,
        build_assessment(
            scored.sr, [("L", Verdict.ACCEPT, None), ("R", Verdict.ACCEPT, None)], observer="Doe^A"
        ),
        path=tmp_path / "a.dcm",
    )
    db.dispose()
    monkeypatch.setenv("ONFH_DATA_DIR", str(data))
    run = CliRunner().invoke(app, ["feedback", "export", "--json"])
    assert run.exit_code == 0, run.output
    out = json.loads(run.stdout)
    assert sorted(v["hip"] for v in out["verdicts"]) == ["left", "right"]
    [summary] = out["summary"]
    assert summary["counts"] == {"accept": 2, "reject": 0, "modify": 0}
    assert summary["agreement"]["value"] == 1.0
    assert summary["ppv"]["total"] == 1 and summary["npv"]["total"] == 1
    csv_run = CliRunner().invoke(app, ["feedback", "export", "--csv"])
    assert csv_run.exit_code == 0 and len(csv_run.stdout.strip().splitlines()) == 3


def test_the_status_page_shows_counts_agreement_ppv_npv_and_why_an_sr_was_not_recorded(
    db: StateDB, scored: Scored, tmp_path: Path
) -> None:
    _job_for(db, scored, tmp_path)
    both = [("L", Verdict.ACCEPT, None), ("R", Verdict.REJECT, None)]
    record(db, build_assessment(scored.sr, both, observer="Doe^A"), path=tmp_path / "a.dcm")
    record(db, scored.sr, path=scored.sr_path)  # not an assessment
    page = StatusPage(db, None, lambda _job: None)
    answer = page.verdicts(Request("GET", "/verdicts", {}, {}, {}))
    assert answer.status == 200
    html = answer.body.decode()
    parsed = ParsedHtml()
    parsed.feed(html)
    assert parsed.errors == []
    assert DEVICE.name in html and DEVICE.version in html
    assert "1/2 = 0.50" in html  # agreement
    assert "0/1 = 0.00" in html and "1/1 = 1.00" in html  # PPV, NPV
    assert "not an assessment" in html
    assert "1 of the latest assessment SRs were stored but not recorded" in html


def test_the_tracker_records_an_assessment_from_the_spool_at_start_up_without_a_series(
    db: StateDB, scored: Scored, tmp_path: Path
) -> None:
    job = _job_for(db, scored, tmp_path)
    sr = build_assessment(scored.sr, [("R", Verdict.ACCEPT, None)], observer="Doe^A")
    spool = tmp_path / "spool"
    path = spool / str(sr.StudyInstanceUID) / str(sr.SeriesInstanceUID) / f"{sr.SOPInstanceUID}.dcm"
    path.parent.mkdir(parents=True)
    sr.save_as(path, enforce_file_format=True)
    record(db, pydicom.dcmread(path), path=path, calling_ae="PACS", received_at=5.0)
    sent: list[str] = []
    tracker = SeriesTracker(db, AdmissionRules(), sent.append, series_timeout=3600)
    tracker.recover(spool)  # as at every start: the SR is read again
    [kept] = db.assessments()
    assert (kept.state, kept.calling_ae, kept.received_at) == (
        AssessmentState.RECORDED,
        "PACS",
        5.0,
    )
    assert [v.job_id for v in db.verdicts()] == [job.id]
    assert tracker.open_series == [] and sent == []  # no series opened, nothing scored
    assert db.series(str(sr.SeriesInstanceUID)) is None
