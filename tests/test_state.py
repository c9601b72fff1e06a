"""The state database on a real SQLite file: job life cycle, supersede, dead letter."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import delete

from onfh_dlr.settings import OutputKind
from onfh_dlr.state import JobOutputRow, StateDB


@pytest.fixture
def db(tmp_path: Path) -> StateDB:
    return StateDB.for_settings(None, tmp_path)


def _receive(db: StateDB, series: str = "1.2.3.4", at: float = 100.0) -> bool:
    return db.series_received(series_uid=series, study_uid="1.2.3", instances=20, at=at)


def _scored_job(
    db: StateDB, tmp_path: Path, destinations: list[str], series: str = "1.2.3.4"
) -> str:
    """A job of a newly received series, started and scored, its deliveries pending."""
    _receive(db, series)
    job_id = db.admit_series(series, tmp_path)
    db.start_job(job_id)
    assert db.job_scored(
        job_id,
        sr_path=tmp_path / "a.dcm",
        seg_path=tmp_path / "b.dcm",
        sr_uid=f"{series}.9",
        result={},
        destinations=destinations,
    )
    return job_id


def test_a_job_goes_from_pending_to_done_through_its_deliveries(
    db: StateDB, tmp_path: Path
) -> None:
    assert _receive(db) is False
    job_id = db.admit_series("1.2.3.4", tmp_path / "series")
    assert db.jobs_to_enqueue(requeue_after=60) == [job_id]
    db.mark_enqueued(job_id)
    assert db.jobs_to_enqueue(requeue_after=60) == []
    job = db.start_job(job_id)
    assert job is not None and job.state == "running" and job.attempts == 1
    assert db.job_scored(
        job_id,
        sr_path=tmp_path / "sr.dcm",
        seg_path=tmp_path / "seg.dcm",
        sr_uid="1.2.9",
        result={"hips": {}},
        destinations=["PACS@h:104", "ARCHIVE@h:105"],
    )
    db.delivery_attempted(job_id, "PACS@h:104", ok=True)
    assert db.settle_job(job_id) == "scored"
    db.delivery_attempted(job_id, "ARCHIVE@h:105", ok=True)
    assert db.settle_job(job_id) == "done"
    assert db.start_job(job_id) is None  # a redelivered message does nothing
    stages = [e.stage for e in db.events("1.2.3.4")]
    assert stages == [
        "first_instance",
        "closed",
        "started",
        "scored",
        "delivered",
        "delivered",
        "done",
    ]


def test_a_queued_job_that_never_started_is_sent_again_after_the_requeue_time(
    db: StateDB, tmp_path: Path
) -> None:
    _receive(db)
    job_id = db.admit_series("1.2.3.4", tmp_path)
    db.mark_enqueued(job_id)
    job = db.job(job_id)
    assert job is not None
    assert db.jobs_to_enqueue(requeue_after=60, now=job.created_at + 30) == []
    assert db.jobs_to_enqueue(requeue_after=60, now=job.created_at + 3600) == [job_id]


def test_a_reopened_series_gets_a_new_job_that_supersedes_the_unfinished_one(
    db: StateDB, tmp_path: Path
) -> None:
    _receive(db)
    first = db.admit_series("1.2.3.4", tmp_path)
    assert _receive(db, at=200.0) is True  # a late instance re-opens the closed series
    second = db.admit_series("1.2.3.4", tmp_path)
    old, new = db.job(first), db.job(second)
    assert old is not None and new is not None
    assert old.state == "superseded" and new.supersedes == first
    assert new.generation == old.generation + 1
    assert db.start_job(first) is None


def test_a_finished_sr_is_the_predecessor_of_the_next_generation(
    db: StateDB, tmp_path: Path
) -> None:
    first = _scored_job(db, tmp_path, [])
    assert db.settle_job(first) == "done"
    _receive(db, at=300.0)
    second = db.admit_series("1.2.3.4", tmp_path)
    job = db.job(second)
    assert job is not None
    assert db.job(first).state == "done"  # type: ignore[union-attr]
    assert db.previous_sr(job) == tmp_path / "a.dcm"


def test_a_delivery_past_its_retries_is_dead_lettered_and_an_operator_can_retry(
    db: StateDB, tmp_path: Path
) -> None:
    job_id = _scored_job(db, tmp_path, ["PACS@h:104"])
    db.delivery_attempted(job_id, "PACS@h:104", ok=False, error="refused")
    assert db.settle_job(job_id) == "scored"
    db.delivery_attempted(job_id, "PACS@h:104", ok=False, error="refused", final=True)
    assert db.settle_job(job_id) == "dead_letter"
    assert [j.id for j in db.jobs(states=["dead_letter"])] == [job_id]
    assert db.retry_dead_letter(job_id)
    (delivery,) = db.deliveries(job_id)
    assert delivery.state == "pending" and delivery.attempts == 0
    db.delivery_attempted(job_id, "PACS@h:104", ok=True)
    assert db.settle_job(job_id) == "done"


def test_a_failed_job_keeps_its_reason_and_is_not_started_again(
    db: StateDB, tmp_path: Path
) -> None:
    _receive(db)
    job_id = db.admit_series("1.2.3.4", tmp_path)
    db.start_job(job_id)
    db.fail_job(job_id, "FemoralHeadNotFoundError: no right head")
    job = db.job(job_id)
    assert job is not None and job.state == "failed" and "no right head" in job.reason
    assert db.start_job(job_id) is None
    assert db.job_counts() == {"failed": 1}


def test_a_done_job_is_claimed_by_none_of_several_concurrent_redeliveries(
    db: StateDB, tmp_path: Path
) -> None:
    job_id = _scored_job(db, tmp_path, [])
    db.settle_job(job_id)
    results: list[object] = []

    def claim() -> None:
        results.append(StateDB(db.url).start_job(job_id))

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [None] * 4


def test_deliveries_of_many_jobs_come_back_per_job_in_one_call(db: StateDB, tmp_path: Path) -> None:
    first = _scored_job(db, tmp_path, ["PACS@h:104", "ARCHIVE@h:105"], series="1.2.3.4")
    second = _scored_job(db, tmp_path, ["PACS@h:104"], series="1.2.3.5")
    _receive(db, "1.2.3.6")
    unscored = db.admit_series("1.2.3.6", tmp_path)  # no deliveries yet
    db.delivery_attempted(second, "PACS@h:104", ok=False, error="refused")
    found = db.deliveries_of([first, second, unscored, first])
    assert set(found) == {first, second}
    assert [d.destination for d in found[first]] == ["PACS@h:104", "ARCHIVE@h:105"]
    (pacs,) = found[second]
    assert pacs.attempts == 1 and pacs.last_error == "refused"
    assert found[first] == db.deliveries(first)
    assert db.deliveries_of([]) == {}


def test_a_job_whose_worker_keeps_dying_fails_after_max_attempts(
    db: StateDB, tmp_path: Path
) -> None:
    _receive(db)
    job_id = db.admit_series("1.2.3.4", tmp_path)
    for attempt in (1, 2, 3):  # each claim's worker dies before it records anything
        job = db.start_job(job_id, max_attempts=3)
        assert job is not None and job.state == "running" and job.attempts == attempt
    job = db.start_job(job_id, max_attempts=3)
    assert job is not None and job.state == "failed" and job.attempts == 3
    assert job.reason.startswith("WorkerLostError: scoring did not finish in 3 attempts")
    assert db.start_job(job_id, max_attempts=3) is None  # a further redelivery: nothing
    assert db.jobs_to_enqueue(requeue_after=0.0, now=job.created_at + 3600) == []
    assert [e.stage for e in db.events("1.2.3.4")][-1] == "failed"


def test_a_not_analysed_job_ends_failed_with_its_reason_once_its_report_is_delivered(
    db: StateDB, tmp_path: Path
) -> None:
    _receive(db)
    job_id = db.admit_series("1.2.3.4", tmp_path)
    db.start_job(job_id)
    reason = "FemoralHeadNotFoundError: no femoral head"
    assert db.job_scored(
        job_id,
        sr_path=tmp_path / "sr.dcm",
        seg_path=None,
        card_path=tmp_path / "card.dcm",
        sr_uid="1.2.9",
        result={"hips": {}},
        destinations=["PACS@h:104"],
        not_analysed=reason,
    )
    job = db.job(job_id)
    assert job is not None and job.state == "scored" and job.not_analysed == reason
    assert db.job_outputs(job_id) == {
        OutputKind.SR: tmp_path / "sr.dcm",
        OutputKind.CARD: tmp_path / "card.dcm",
    }
    db.delivery_attempted(job_id, "PACS@h:104", ok=False, error="down", final=True)
    assert db.settle_job(job_id) == "dead_letter"
    assert db.retry_dead_letter(job_id)
    assert db.job(job_id) == replace(job, state="scored")  # the reason is kept
    db.delivery_attempted(job_id, "PACS@h:104", ok=True)
    assert db.settle_job(job_id) == "failed"
    job = db.job(job_id)
    assert job is not None and job.reason == reason and job.finished_at is not None
    assert [d.state for d in db.deliveries(job_id)] == ["delivered"]
    assert "not_analysed" in [e.stage for e in db.events("1.2.3.4")]


def test_outputs_of_a_job_scored_before_the_outputs_table_come_from_the_job_row(
    db: StateDB, tmp_path: Path
) -> None:
    job_id = _scored_job(db, tmp_path, ["PACS@h:104"])
    with db.session() as s:
        s.execute(delete(JobOutputRow))
    assert db.job_outputs(job_id) == {
        OutputKind.SR: tmp_path / "a.dcm",
        OutputKind.SEG: tmp_path / "b.dcm",
    }
