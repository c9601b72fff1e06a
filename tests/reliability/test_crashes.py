"""kill -9 of workers and of the listener: no study, instance or result lost or doubled.

Real processes throughout: Redis, ``onfh_dlr listener`` and ``onfh_dlr worker``, a
receiving PACS. Worker kills alternate between the pool process running the task (Celery
sees the worker lost and requeues the late-acknowledged message) and the whole worker
(the message stays unacknowledged in Redis and is handed out again after the visibility
timeout, or the listener's sweeper re-sends the job).
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pydicom
import pytest
from conftest import Scale
from service_harness import MODALITY_AE, SERVICE_AE, CohortMaker, Service, wait_until

from onfh_dlr.errors import DeliveryError
from worker.scu import wait_for_echo

FINISHED = {"done", "failed", "dead_letter"}
StudyMaker = Callable[[int], tuple[list[Path], str, str]]


@pytest.fixture(scope="module")
def make_study(phantom_cohort: CohortMaker) -> StudyMaker:
    def make(seed: int) -> tuple[list[Path], str, str]:
        (study,) = phantom_cohort(1, seed).studies
        return study.slices, study.study_uid, study.series_uid

    return make


@pytest.fixture(scope="module")
def service_settings() -> dict[str, str]:
    return {"visibility_timeout": "30", "requeue_after": "60", "sweep_interval": "2"}


def _kill_worker(service: Service, whole: bool) -> int:
    """SIGKILL the pool processes (and the main worker process when ``whole``)."""
    main = psutil.Process(service.processes["worker"].pid)
    victims = main.children(recursive=True) + ([main] if whole else [])
    for process in victims:
        process.send_signal(signal.SIGKILL)
    if whole:
        service.processes["worker"].wait(10)
        service.start_process("worker")  # as systemd, compose or `serve` would
    return len(victims)


def test_worker_killed_mid_task_still_yields_exactly_one_sr_per_study(
    service: Service, make_study: StudyMaker, scale: Scale
) -> None:
    rng = random.Random(7)
    summary = []
    for kill in range(scale.worker_kills):
        files, study_uid, series_uid = make_study(300 + kill)
        assert set(service.push(files)) == {0}
        service.wait_for_job(series_uid, {"running", *FINISHED}, timeout=240)
        # Scoring takes seconds: a kill within the first second or two lands mid-task.
        time.sleep(rng.uniform(0.1, 1.5))
        job = service.jobs_of(series_uid)[0]
        assert job.state == "running", "the kill must land while the job runs"
        whole = kill % 2 == 1
        _kill_worker(service, whole)
        job = service.wait_for_job(series_uid, FINISHED, timeout=300)
        summary.append(
            {
                "kill": kill + 1,
                "whole_worker": whole,
                "state": job.state,
                "attempts": job.attempts,
            }
        )
        assert job.state == "done", job.reason
    # Every study: one job, exactly one distinct SR at the PACS, the one the job recorded.
    lost = doubled = 0
    for kill in range(scale.worker_kills):
        files, study_uid, series_uid = make_study(300 + kill)
        (job,) = service.jobs_of(series_uid)
        received = service.srs_at_pacs(study_uid)
        lost += not received
        doubled += len(received) > 1
        assert received == {job.sr_uid}
        assert job.attempts >= 2  # it was really redelivered after the kill
    print(json.dumps({"worker_kills": summary, "studies_lost": lost, "srs_doubled": doubled}))
    assert lost == 0 and doubled == 0


def test_listener_killed_mid_push_keeps_every_acknowledged_instance(
    service: Service, make_study: StudyMaker
) -> None:
    files, study_uid, series_uid = make_study(400)
    answered: dict[Path, int] = {}
    half = len(files) // 2

    def on_file(path: Path, status: int) -> None:
        answered[path] = status
        if len(answered) == half:
            # Killed from the sender's own thread as the next instance goes out: a push
            # of 20 small instances is over in a fraction of a second, and a kill from
            # another thread sometimes came after the last answer.
            service.processes["listener"].send_signal(signal.SIGKILL)

    def sender() -> None:
        # The association dies with the listener, as it should.
        with contextlib.suppress(DeliveryError):
            service.push(files, on_file=on_file)

    thread = threading.Thread(target=sender)
    thread.start()
    try:
        wait_until(lambda: len(answered) >= half, 60, "half of the study to be answered")
        service.processes["listener"].wait(10)
        thread.join(60)
    finally:
        if service.processes["listener"].poll() is None:  # never reached half: stop it
            service.processes["listener"].kill()
            service.processes["listener"].wait(10)
        # Restarted whatever happens, as systemd would: the module's other tests need it.
        service.start_process("listener")
    acknowledged = [p for p, status in answered.items() if status == 0]
    assert half <= len(acknowledged) < len(files)

    spool = service.data_dir / "spool" / study_uid / series_uid
    lost = []
    for path in acknowledged:
        sent = pydicom.dcmread(path)
        stored = spool / f"{sent.SOPInstanceUID}.dcm"
        if not stored.exists():
            lost.append(path.name)
            continue
        kept = pydicom.dcmread(stored)
        assert kept.PixelData == sent.PixelData
    assert lost == []
    # Nothing half-written is ever an instance: every .dcm in the spool reads whole.
    for path in (service.data_dir / "spool").rglob("*.dcm"):
        assert ".tmp" not in path.parts
        pydicom.dcmread(path).pixel_array  # noqa: B018 - decoding is the check

    assert wait_for_echo("127.0.0.1", service.port, SERVICE_AE, 30, calling_ae=MODALITY_AE)
    assert set(service.push(files)) == {0}  # the sender's retry of the whole study
    job = service.wait_for_job(series_uid, FINISHED, timeout=240)
    assert job.state == "done", job.reason
    assert len(service.srs_at_pacs(study_uid)) == 1
    print(json.dumps({"listener_kill": {"acknowledged": len(acknowledged), "lost": len(lost)}}))


def test_a_series_open_when_the_listener_dies_is_recovered_from_the_spool(
    service: Service, make_study: StudyMaker
) -> None:
    """The listener dies while a series is open (a slice still missing): on restart the
    spool is the record, the series is open again, and the missing slice completes it."""
    files, study_uid, series_uid = make_study(401)
    middle = len(files) // 2
    assert set(service.push(files[:middle] + files[middle + 1 :])) == {0}
    time.sleep(1)  # the release is handled; the series stays open (gap at the middle)
    assert service.jobs_of(series_uid) == []
    service.processes["listener"].send_signal(signal.SIGKILL)
    service.processes["listener"].wait(10)
    service.start_process("listener")
    assert wait_for_echo("127.0.0.1", service.port, SERVICE_AE, 30, calling_ae=MODALITY_AE)
    assert set(service.push([files[middle]])) == {0}
    job = service.wait_for_job(series_uid, FINISHED, timeout=240)
    assert job.state == "done", job.reason
    row = service.db.series(series_uid)
    assert row is not None and row.instances == len(files)
    assert len(service.srs_at_pacs(study_uid)) == 1


def test_a_series_that_kills_its_worker_every_time_fails_instead_of_looping(
    service: Service, make_study: StudyMaker
) -> None:
    """A poison series (one that takes its worker process down, as an out-of-memory kill
    would) is tried ``ONFH_MAX_ATTEMPTS`` times (3), then failed with a reason; the
    worker goes on with the next study."""
    files, study_uid, series_uid = make_study(402)
    assert set(service.push(files)) == {0}
    kills = 0
    for attempt in (1, 2, 3):

        def running(attempt: int = attempt) -> bool:
            jobs = service.jobs_of(series_uid)
            return bool(jobs) and jobs[0].state == "running" and jobs[0].attempts == attempt

        wait_until(running, 240, f"attempt {attempt} to run")
        time.sleep(0.3)
        kills += _kill_worker(service, whole=False) > 0
    job = service.wait_for_job(series_uid, FINISHED, timeout=240)
    assert job.state == "failed", job.state
    assert job.reason.startswith("WorkerLostError: scoring did not finish in 3 attempts")
    assert job.attempts == 3 and kills == 3
    assert service.srs_at_pacs(study_uid) == set()
    # the job is not sent again, and the worker scores the next study
    files, study_uid, series_uid = make_study(403)
    assert set(service.push(files)) == {0}
    good = service.wait_for_job(series_uid, FINISHED, timeout=240)
    assert good.state == "done", good.reason
    (failed,) = service.jobs_of(job.series_uid)
    assert failed.state == "failed" and failed.attempts == 3
    print(json.dumps({"poison_series": {"kills": kills, "state": job.state, "lost": 0}}))
