"""The service end to end: real Redis, real listener and worker processes, real associations.

One service runs for the whole module (a worker loads the bundle once); each test pushes
its own phantom study. Destinations go down and come back by stopping and restarting the
receiving SCP; the broker goes down by stopping Redis.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from dicom_checks import dciodvfy_errors
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage, Verification  # type: ignore[attr-defined]
from service_harness import (
    MODALITY_AE,
    SERVICE_AE,
    CohortMaker,
    PhantomStudy,
    Service,
    wait_until,
)

from model_bundle.imaging import Side
from onfh_dlr.broker import free_port
from onfh_dlr.cli.receiver import Receiver
from worker.seg_output import segment_numbers_by_side
from worker.sr_output import read_report

STORESCU = shutil.which("storescu")
FINISHED = {"done", "failed", "dead_letter"}


@pytest.fixture(scope="module")
def make_study(phantom_cohort: CohortMaker) -> Callable[[int], PhantomStudy]:
    """A phantom patient with early ONFH per seed."""
    return lambda seed: phantom_cohort(1, seed, onfh_fraction=1.0).studies[0]


@pytest.fixture(scope="module")
def service_settings() -> dict[str, str]:
    return {"allowed_calling_aes": f"{MODALITY_AE},STORESCU", "delivery_retries": "3"}


@pytest.fixture
def pacs_up(service: Service) -> Service:
    """The service, with its destination PACS running (tests may stop it)."""
    if service.pacs._server is None:
        service.pacs.start()
    return service


def test_a_pushed_study_comes_back_as_a_valid_sr_seg_and_card_in_the_same_study(
    pacs_up: Service, make_study: Callable[[int], PhantomStudy]
) -> None:
    study = make_study(2024)  # early ONFH on the right, healthy left
    assert set(pacs_up.push(study.slices)) == {0x0000}
    job = pacs_up.wait_for_job(study.series_uid, FINISHED)
    assert job.state == "done", job.reason
    received = [r for r in pacs_up.pacs.received if r.study_uid == study.study_uid]
    assert sorted(r.modality for r in received) == ["OT", "SEG", "SR"]  # OT: the card
    for item in received:
        assert dciodvfy_errors(item.path) == [], item.modality
        assert item.series_uid != study.series_uid
    sr_item = next(r for r in received if r.modality == "SR")
    seg_item = next(r for r in received if r.modality == "SEG")
    card = pydicom.dcmread(next(r for r in received if r.modality == "OT").path)
    assert card.SOPInstanceUID == job.result["card_uid"]
    assert "Right femoral head: early ONFH suspected" in str(card.ImageComments)
    hips = read_report(pydicom.dcmread(sr_item.path))
    assert set(hips) == {"L", "R"}
    seg = hd.seg.segread(seg_item.path)
    numbers = segment_numbers_by_side(seg)
    labels = {seg.get_segment_description(n).segment_label for n in numbers.values()}
    assert labels == {"Left femoral head", "Right femoral head"}
    for side, hip in hips.items():
        expected = job.result["hips"][side]
        assert hip.probability == pytest.approx(expected["probability"])
        assert hip.necrosis_present == bool(expected["call"])
        assert hip.segmentation_uid == seg_item.sop_instance_uid
        assert hip.segment_number == numbers[side]
    # The phantom's right hip has a large ARCO I lesion, the left is healthy.
    assert hips[Side.RIGHT].necrosis_present and not hips[Side.LEFT].necrosis_present
    referenced = {
        str(ref.ReferencedSOPInstanceUID)
        for frame in seg.PerFrameFunctionalGroupsSequence
        for derivation in frame.DerivationImageSequence
        for ref in derivation.SourceImageSequence
    }
    sent = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in study.slices}
    assert referenced and referenced <= sent


@pytest.mark.skipif(STORESCU is None, reason="DCMTK storescu is required (make system-deps)")
def test_a_study_sent_by_dcmtk_storescu_is_scored(
    pacs_up: Service, make_study: Callable[[int], PhantomStudy]
) -> None:
    study = make_study(3)
    run = subprocess.run(
        [str(STORESCU), "-aet", "STORESCU", "-aec", SERVICE_AE, "127.0.0.1", str(pacs_up.port)]
        + [str(p) for p in study.slices],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    job = pacs_up.wait_for_job(study.series_uid, FINISHED)
    assert job.state == "done", job.reason
    assert len(pacs_up.srs_received(study.study_uid)) == 1


def test_a_series_the_rules_refuse_is_skipped_with_its_reason(
    pacs_up: Service, make_study: Callable[[int], PhantomStudy], tmp_path: Path
) -> None:
    study = make_study(5)
    t1 = []
    for path in study.slices:
        ds = pydicom.dcmread(path)
        ds.SeriesDescription = "T1 TSE COR"
        ds.EchoTime, ds.RepetitionTime = 12, 550
        ds.ScanOptions = ""
        ds.save_as(tmp_path / path.name)
        t1.append(tmp_path / path.name)
    assert set(pacs_up.push(t1)) == {0x0000}

    def skipped() -> bool:
        row = pacs_up.db.series(study.series_uid)
        return row is not None and row.state == "skipped"

    wait_until(skipped, 30, "the T1 series to be skipped")
    row = pacs_up.db.series(study.series_uid)
    assert row is not None and "not T2-weighted" in row.reason and "TE 12" in row.reason
    assert pacs_up.jobs_of(study.series_uid) == []


def test_a_received_seg_is_linked_to_its_series_and_used_as_the_roi(
    pacs_up: Service, make_study: Callable[[int], PhantomStudy]
) -> None:
    study = make_study(8)
    assert set(pacs_up.push([study.seg, *study.slices])) == {0x0000}
    job = pacs_up.wait_for_job(study.series_uid, FINISHED)
    assert job.state == "done", job.reason
    assert job.seg_path is not None and job.seg_path.name.startswith(
        str(pydicom.dcmread(study.seg, stop_before_pixels=True).SOPInstanceUID)
    )
    assert {hip["roi_source"] for hip in job.result["hips"].values()} == {"seg"}


def test_a_late_instance_reopens_the_series_and_the_new_sr_supersedes_the_old(
    pacs_up: Service, make_study: Callable[[int], PhantomStudy]
) -> None:
    study = make_study(11)
    *first_part, last = study.slices  # without its last slice the series still looks whole
    assert set(pacs_up.push(first_part)) == {0x0000}
    first = pacs_up.wait_for_job(study.series_uid, FINISHED)
    assert first.state == "done", first.reason
    assert set(pacs_up.push([last])) == {0x0000}
    wait_until(lambda: len(pacs_up.jobs_of(study.series_uid)) == 2, 30, "a second job")
    second = pacs_up.wait_for_job(study.series_uid, FINISHED)
    assert second.state == "done", second.reason
    assert second.supersedes == first.id and second.generation == first.generation + 1
    srs = {r.sop_instance_uid: r.path for r in pacs_up.srs_received(study.study_uid)}
    assert set(srs) == {first.sr_uid, second.sr_uid}
    newest = pydicom.dcmread(srs[str(second.sr_uid)])
    predecessors = {
        str(instance.ReferencedSOPInstanceUID)
        for item in newest.PredecessorDocumentsSequence
        for series in item.ReferencedSeriesSequence
        for instance in series.ReferencedSOPSequence
    }
    assert predecessors == {first.sr_uid}


def test_resending_a_scored_study_sends_no_second_result(
    pacs_up: Service, make_study: Callable[[int], PhantomStudy]
) -> None:
    study = make_study(2024)  # scored by the first test
    before = len(pacs_up.srs_received(study.study_uid))
    assert before >= 1
    assert set(pacs_up.push(study.slices)) == {0x0000}
    # Wait past the series timeout: a re-opened series would have closed by then.
    wait_until(lambda: not pacs_up.db.jobs(states=["pending", "queued", "running"]), 30, "idle")
    time.sleep(float(pacs_up.env["ONFH_SERIES_TIMEOUT"]) + 2)
    assert len(pacs_up.jobs_of(study.series_uid)) == 1
    assert len(pacs_up.srs_received(study.study_uid)) == before


def test_a_calling_ae_not_on_the_allow_list_is_rejected(pacs_up: Service) -> None:
    ae = AE(ae_title="INTRUDER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", pacs_up.port, ae_title=SERVICE_AE)
    assert assoc.is_rejected
    ae = AE(ae_title=MODALITY_AE)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", pacs_up.port, ae_title=SERVICE_AE)
    assert assoc.is_established
    assoc.release()


def test_a_malformed_dataset_gets_a_failure_status_and_the_service_keeps_serving(
    pacs_up: Service, make_study: Callable[[int], PhantomStudy]
) -> None:
    study = make_study(13)
    ds = pydicom.dcmread(study.slices[0])
    with pytest.warns(UserWarning, match="VR UI"):
        ds.SeriesInstanceUID = "../../etc"
    ae = AE(ae_title=MODALITY_AE)
    ae.add_requested_context(MRImageStorage, [str(ds.file_meta.TransferSyntaxUID)])
    assoc = ae.associate("127.0.0.1", pacs_up.port, ae_title=SERVICE_AE)
    assert assoc.is_established
    status = assoc.send_c_store(ds)
    assoc.release()
    assert status.Status >= 0xA000  # a failure, not success or warning
    assert not list((pacs_up.data_dir / "spool").rglob("etc"))
    assert set(pacs_up.push(study.slices)) == {0x0000}
    assert pacs_up.wait_for_job(study.series_uid, FINISHED).state == "done"


def test_a_series_with_no_femoral_head_arrives_as_could_not_analyse_and_the_job_fails(
    pacs_up: Service, make_study: Callable[[int], PhantomStudy], tmp_path: Path
) -> None:
    study = make_study(17)
    rng = np.random.default_rng(0)
    noise = []
    for path in study.slices:
        ds = pydicom.dcmread(path)
        pixels = rng.integers(100, 400, size=ds.pixel_array.shape).astype(ds.pixel_array.dtype)
        ds.PixelData = pixels.tobytes()
        ds.save_as(tmp_path / path.name)
        noise.append(tmp_path / path.name)
    assert set(pacs_up.push(noise)) == {0x0000}
    job = pacs_up.wait_for_job(study.series_uid, FINISHED)
    assert job.state == "failed"
    assert "FemoralHeadNotFoundError" in job.reason
    assert [d.state for d in pacs_up.db.deliveries(job.id)] == ["delivered"]
    # The study receives an SR and a card that say so, and no SEG (there is no ROI).
    received = [r for r in pacs_up.pacs.received if r.study_uid == study.study_uid]
    assert sorted(r.modality for r in received) == ["OT", "SR"]
    for item in received:
        assert dciodvfy_errors(item.path) == [], item.modality
    sr = pydicom.dcmread(next(r for r in received if r.modality == "SR").path)
    hips = read_report(sr)
    assert set(hips) == {Side.LEFT, Side.RIGHT}
    for hip in hips.values():
        assert hip.not_analysed is not None and "FemoralHeadNotFoundError" in hip.not_analysed
        assert hip.score is None and hip.probability is None
    card = pydicom.dcmread(next(r for r in received if r.modality == "OT").path)
    assert "Right femoral head: could not analyse: FemoralHeadNotFoundError" in str(
        card.ImageComments
    )
    good = make_study(19)
    pacs_up.push(good.slices)
    assert pacs_up.wait_for_job(good.series_uid, FINISHED).state == "done"


def test_a_destination_configured_card_only_receives_only_the_card(
    pacs_up: Service, make_study: Callable[[int], PhantomStudy], tmp_path: Path
) -> None:
    viewer = Receiver(tmp_path / "viewer", free_port(), ae_title="CARD_VIEWER").start()
    destinations = pacs_up.env["ONFH_DESTINATIONS"]
    try:
        pacs_up.restart_worker(
            destinations=f"{destinations},CARD_VIEWER@127.0.0.1:{viewer.port}",
            destination_objects="CARD_VIEWER=card",
        )
        study = make_study(37)
        assert set(pacs_up.push(study.slices)) == {0x0000}
        job = pacs_up.wait_for_job(study.series_uid, FINISHED)
        assert job.state == "done", job.reason
        at_viewer = [r for r in viewer.received if r.study_uid == study.study_uid]
        assert [r.sop_instance_uid for r in at_viewer] == [job.result["card_uid"]]
        at_pacs = [r for r in pacs_up.pacs.received if r.study_uid == study.study_uid]
        assert sorted(r.modality for r in at_pacs) == ["OT", "SEG", "SR"]
    finally:
        pacs_up.restart_worker(destinations=destinations, destination_objects=None)
        viewer.stop()


def test_a_study_received_while_the_broker_is_down_is_scored_when_it_is_back(
    pacs_up: Service, make_study: Callable[[int], PhantomStudy]
) -> None:
    study = make_study(23)
    pacs_up.redis.stop()
    try:
        assert set(pacs_up.push(study.slices)) == {0x0000}  # the listener does not need it

        def pending() -> bool:
            jobs = pacs_up.jobs_of(study.series_uid)
            return bool(jobs) and jobs[0].state == "pending"

        wait_until(pending, 30, "the job to wait in the pending state")
    finally:
        pacs_up.redis.start()
    job = pacs_up.wait_for_job(study.series_uid, FINISHED, timeout=180)
    assert job.state == "done", job.reason


def test_results_for_a_destination_that_was_down_are_delivered_when_it_is_back(
    pacs_up: Service, make_study: Callable[[int], PhantomStudy]
) -> None:
    study = make_study(29)
    pacs_up.pacs.stop()
    try:
        pacs_up.push(study.slices)

        def failed_once() -> bool:
            jobs = pacs_up.jobs_of(study.series_uid)
            return bool(jobs) and any(d.attempts >= 1 for d in pacs_up.db.deliveries(jobs[0].id))

        wait_until(failed_once, 120, "a failed delivery attempt")
    finally:
        pacs_up.pacs.start()
    job = pacs_up.wait_for_job(study.series_uid, FINISHED)
    assert job.state == "done", job.reason
    (delivery,) = pacs_up.db.deliveries(job.id)
    assert delivery.state == "delivered" and delivery.attempts >= 2
    assert len(pacs_up.srs_received(study.study_uid)) == 1


def test_a_destination_down_past_the_retries_is_dead_lettered_and_an_operator_retry_delivers(
    pacs_up: Service, make_study: Callable[[int], PhantomStudy]
) -> None:
    study = make_study(31)
    pacs_up.pacs.stop()
    try:
        pacs_up.push(study.slices)
        job = pacs_up.wait_for_job(study.series_uid, FINISHED, timeout=120)
        assert job.state == "dead_letter"
        (delivery,) = pacs_up.db.deliveries(job.id)
        assert delivery.state == "dead_letter" and delivery.attempts == 4  # 1 + 3 retries
        assert "association not established" in delivery.last_error
    finally:
        pacs_up.pacs.start()
    run = subprocess.run(
        [sys.executable, "-m", "onfh_dlr", "retry", job.id],
        env=pacs_up.env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    job = pacs_up.wait_for_job(study.series_uid, {"done"})
    assert len(pacs_up.srs_received(study.study_uid)) == 1
    run = subprocess.run(
        [sys.executable, "-m", "onfh_dlr", "status", "--json"],
        env=pacs_up.env,
        capture_output=True,
        text=True,
        check=True,
    )
    status = json.loads(run.stdout)
    assert status["jobs"]["done"] >= 8 and status["queue_depth"] == 0
    assert any("FemoralHeadNotFoundError" in f["reason"] for f in status["failures"])
    assert any("not T2-weighted" in s["reason"] for s in status["skipped"])
