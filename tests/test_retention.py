"""Data retention on a real SQLite state DB and real files."""

from __future__ import annotations

import time
from pathlib import Path

from listener.retention import purge_expired
from onfh_dlr.state import StateDB

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
