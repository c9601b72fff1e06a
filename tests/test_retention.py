"""Data retention on a real SQLite state DB and real files."""

from __future__ import annotations

import time
from pathlib import Path

import sqlalchemy

from listener.retention import purge_expired
from onfh_dlr.state import (
    Assessment,
    AssessmentState,
    HipVerdict,
    ModelIdentity,
    StateDB,
    Verdict,
    default_database_url,
)

DAY = 86400.0


def _study(db: StateDB, data: Path, series: str, *, delivered: bool) -> tuple[Path, Path]:
    """A closed series with a scored job; delivered or dead-lettered."""
    spool = data / "spool" / "1.2.3" / series
    spool.mkdir(parents=True)
    (spool / "1.2.3.9.dcm").write_bytes(b"x" * 100)
    db.series_received(series_uid=series, study_uid="1.2.3", instances=1, at=time.time())
    job_id = db.admit_series(series, spool)
    outputs = data / "outputs" / "1.2.3" / job_id
    outputs.mkdir(parents=True)
    (outputs / "SR.dcm").write_bytes(b"y" * 50)
    db.start_job(job_id)
    db.job_scored(
        job_id,
        sr_path=outputs / "SR.dcm",
        seg_path=outputs / "SR.dcm",
        sr_uid="1.9",
        result={},
        destinations=["PACS@h:104"],
    )
    db.delivery_attempted(job_id, "PACS@h:104", ok=delivered, final=not delivered)
    db.settle_job(job_id)
    return spool, outputs


def test_delivered_studies_are_purged_after_the_retention_age_and_dead_letters_kept(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    db = StateDB.for_settings(None, data)
    done_spool, done_outputs = _study(db, data, "1.2.3.4", delivered=True)
    dead_spool, dead_outputs = _study(db, data, "1.2.3.5", delivered=False)
    outside = tmp_path / "elsewhere.dcm"
    outside.write_bytes(b"z")
    db.link_seg("1.2.3.4", outside)  # a path the DB names outside the data directory

    assert purge_expired(db, data, max_age=7 * DAY).series == 0  # too young
    report = purge_expired(db, data, max_age=7 * DAY, now=time.time() + 8 * DAY)
    assert report.series == 1 and report.bytes_freed == 150
    assert not done_spool.exists() and not done_outputs.exists()
    assert dead_spool.exists() and dead_outputs.exists()
    assert outside.exists()
    assert [e.stage for e in db.events("1.2.3.4")][-1] == "purged"
    again = purge_expired(db, data, max_age=7 * DAY, now=time.time() + 9 * DAY)
    assert again.series == 0


def _assessment(db: StateDB, path: Path, uid: str, received_at: float, job_id: str) -> None:
    """An assessment SR file in the spool, recorded with one hip's verdict."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"s" * 30)
    db.record_assessment(
        Assessment(
            sop_instance_uid=uid,
            study_uid="1.2.3",
            path=path,
            calling_ae="PACS",
            referenced_sr_uid="1.9",
            job_id=job_id,
            state=AssessmentState.RECORDED,
            reason="",
            observer="Doe^A",
            received_at=received_at,
        ),
        [HipVerdict(side="R", verdict=Verdict.ACCEPT, radiologist_call=True, model_call=True)],
        model=ModelIdentity("onfh-dlr-demo", "2.1.0", "1.2.3.100"),
        sr_uid="1.9",
    )


def _judged_study(tmp_path: Path) -> tuple[Path, StateDB, str, Path]:
    """A data directory with a delivered study; its job id; where an assessment SR of it
    is stored (not yet written)."""
    data = tmp_path / "data"
    db = StateDB.for_settings(None, data)
    _study(db, data, "1.2.3.4", delivered=True)
    [job] = db.jobs()
    return data, db, job.id, data / "spool" / "1.2.3" / "1.2.3.80" / "1.2.3.81.dcm"


def test_assessment_srs_are_purged_after_the_retention_age_and_their_verdicts_kept(
    tmp_path: Path,
) -> None:
    data, db, job_id, old = _judged_study(tmp_path)
    now = time.time()
    new = data / "spool" / "1.2.3" / "1.2.3.90" / "1.2.3.91.dcm"
    outside = tmp_path / "elsewhere-sr.dcm"
    _assessment(db, old, "1.2.3.81", now - 10 * DAY, job_id)
    _assessment(db, new, "1.2.3.91", now - 1 * DAY, job_id)
    _assessment(db, outside, "1.2.3.99", now - 10 * DAY, job_id)  # the DB names a foreign path

    report = purge_expired(db, data, max_age=7 * DAY, now=now)

    assert report.assessments == 2 and report.bytes_freed == 30
    assert not old.exists() and not old.parent.exists()  # and its emptied series folder
    assert new.exists() and outside.exists()
    assert len(db.verdicts()) == 3  # the verdicts are the history: kept
    assert purge_expired(db, data, max_age=7 * DAY, now=now).assessments == 0
    # Sent again, the SR is in the spool again and waits out its own retention.
    _assessment(db, old, "1.2.3.81", now, job_id)
    assert purge_expired(db, data, max_age=7 * DAY, now=now + DAY).assessments == 0
    assert old.exists()
    assert purge_expired(db, data, max_age=7 * DAY, now=now + 8 * DAY).assessments == 2
    assert not old.exists() and not new.exists()


def test_an_assessments_table_from_before_retention_gains_purged_at_and_is_purged(
    tmp_path: Path,
) -> None:
    data, db, job_id, old = _judged_study(tmp_path)
    _assessment(db, old, "1.2.3.81", time.time() - 10 * DAY, job_id)
    db.dispose()
    engine = sqlalchemy.create_engine(default_database_url(data))
    with engine.begin() as connection:  # the table as the release before this one had it
        connection.execute(sqlalchemy.text("ALTER TABLE assessments DROP COLUMN purged_at"))
    engine.dispose()

    db = StateDB.for_settings(None, data)  # adds the column; the old row is not purged yet

    assert purge_expired(db, data, max_age=7 * DAY).assessments == 1
    assert not old.exists() and len(db.verdicts()) == 1
