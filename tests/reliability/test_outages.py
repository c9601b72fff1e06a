"""Broker and destination outages while studies keep arriving: delayed, never lost.

Redis is stopped while studies arrive (the listener keeps answering, the jobs wait in the
state DB as ``pending``, the sweeper sends them once Redis is back); the destination PACS
is stopped while results are ready (deliveries back off and retry, and arrive once it is
back). The dead-letter path and the operator's retry are in tests/test_service.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import Scale
from service_harness import Cohort, CohortMaker, Service, wait_until

FINISHED = {"done", "failed", "dead_letter"}


@pytest.fixture(scope="module")
def service_settings() -> dict[str, str]:
    # Enough delivery retries (backoff capped at 5 s) to outlast the longest outage.
    return {
        "delivery_retries": "200",
        "delivery_backoff": "1",
        "delivery_backoff_max": "5",
        "sweep_interval": "2",
    }


def studies(cohort: Cohort) -> list[tuple[list[Path], str, str]]:
    """Phantom studies, each sent with its reference SEG as the ROI: these tests are about
    the queue, and the auto-segmenter misses a femoral head in some phantom patients
    (e.g. seed 510's fifth), which would end that job failed, outage or not."""
    return [([s.seg, *s.slices], s.study_uid, s.series_uid) for s in cohort.studies]


def test_studies_arriving_while_redis_is_down_are_all_scored_after_it_returns(
    service: Service, scale: Scale, phantom_cohort: CohortMaker
) -> None:
    batch = studies(phantom_cohort(scale.studies, 510))
    service.redis.stop()
    started = time.monotonic()
    try:
        for files, _study, _series in batch:
            assert set(service.push(files)) == {0}  # the listener needs no broker to receive
        for _files, _study, series in batch:
            service.wait_for_job(series, {"pending"}, timeout=60)
        time.sleep(max(0.0, scale.broker_outage_s - (time.monotonic() - started)))
    finally:
        service.redis.start()
    outage = time.monotonic() - started
    lost = 0
    for _files, study, series in batch:
        job = service.wait_for_job(series, FINISHED, timeout=300)
        assert job.state == "done", job.reason
        lost += service.srs_at_pacs(study) != {job.sr_uid}
    print(json.dumps({"broker_outage_s": round(outage, 1), "studies": len(batch), "lost": lost}))
    assert lost == 0


def test_results_wait_out_a_destination_outage_and_are_delivered_once(
    service: Service, scale: Scale, phantom_cohort: CohortMaker
) -> None:
    batch = studies(phantom_cohort(scale.studies, 520))
    service.pacs.stop()
    started = time.monotonic()
    try:
        for files, _study, _series in batch:
            assert set(service.push(files)) == {0}
        for _files, _study, series in batch:
            job = service.wait_for_job(series, {"scored"}, timeout=300)
            # Scored, and its destination already refused it at least once.
            wait_until(
                lambda job_id=job.id: service.db.deliveries(job_id)[0].attempts >= 1,  # type: ignore[misc]
                60,
                "a failed delivery attempt",
            )
        time.sleep(max(0.0, scale.destination_outage_s - (time.monotonic() - started)))
        for _files, _study, series in batch:
            (job,) = service.jobs_of(series)
            assert job.state == "scored"
            (delivery,) = service.db.deliveries(job.id)
            assert delivery.state == "pending" and delivery.attempts >= 1
    finally:
        service.pacs.start()
    outage = time.monotonic() - started
    lost = doubled = 0
    for _files, study, series in batch:
        job = service.wait_for_job(series, FINISHED, timeout=120)
        assert job.state == "done", job.reason
        received = service.srs_at_pacs(study)
        lost += not received
        doubled += len(received) > 1
    print(
        json.dumps(
            {
                "destination_outage_s": round(outage, 1),
                "studies": len(batch),
                "lost": lost,
                "doubled": doubled,
            }
        )
    )
    assert lost == 0 and doubled == 0
