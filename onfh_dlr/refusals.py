"""Refused series that still get a report in their study (``ONFH_REPORT_SKIPPED``).

A series the admission rules refuse is normally closed as ``skipped`` and nothing is
sent. With ``report_skipped`` on, :func:`refuse_series` closes it as ``skipped`` with the
rule's reason *and* writes a job flagged as refused, in one transaction, so that the
worker writes a "could not analyse: <reason>" SR and card instead of scoring it
(:func:`refused_reason` tells it which jobs those are). The job then runs like any
other (queued, running, scored, delivered) and ends ``done`` once its report is
delivered: refusing a series is the admission rules working, not a failure, and must
not count as one in the failed-jobs alert.

Kept beside :mod:`onfh_dlr.state` (whose sessions and rows it uses) rather than in it
while another branch edits that module; it belongs in :class:`~onfh_dlr.state.StateDB`.
Imported by the listener's tracker (to write the job) and the worker (to read the flag).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Final

from sqlalchemy import select

from onfh_dlr.errors import StateDBError
from onfh_dlr.state import FINAL_JOB_STATES, EventRow, Job, JobRow, SeriesRow, StateDB

#: The key of ``Job.result`` that marks a job written for a refused series; its value is
#: the admission rules' reason. The worker keeps it in the result it records.
REFUSED_KEY: Final = "refused"


def refuse_series(
    db: StateDB, series_uid: str, series_dir: Path, reason: str, *, instances: int | None = None
) -> str:
    """Close a series as skipped with ``reason`` and write its refused job; the job id.

    The series' state stays ``skipped`` (the status page and the metrics say so); the
    job (``pending``, its reason the rule's) makes the worker send the refusal to the
    study. As with :meth:`StateDB.admit_series`, the series' generation goes up and an
    unfinished job of an earlier generation is superseded.

    Raises
    ------
    StateDBError
        If the series is unknown or the database is unavailable.
    """
    now = time.time()
    with db.session() as s:
        row = s.get(SeriesRow, series_uid)
        if row is None:
            raise StateDBError(f"no series {series_uid}")
        row.generation += 1
        row.state, row.reason, row.closed_at = "skipped", reason, now
        if instances is not None:
            row.instances = instances
        previous = s.scalars(
            select(JobRow)
            .where(JobRow.series_uid == series_uid)
            .order_by(JobRow.generation.desc())
            .limit(1)
        ).first()
        job_id = str(uuid.uuid4())
        if previous is not None and previous.state not in FINAL_JOB_STATES:
            previous.state = "superseded"
            previous.reason = f"superseded by job {job_id} (series re-opened)"
            previous.finished_at = now
        s.add(
            JobRow(
                id=job_id,
                series_uid=series_uid,
                study_uid=row.study_uid,
                generation=row.generation,
                series_dir=str(series_dir),
                seg_path=row.seg_path,
                state="pending",
                reason=reason,
                result_json=json.dumps({REFUSED_KEY: reason}),
                created_at=now,
                supersedes=previous.id if previous is not None else None,
            )
        )
        s.add(EventRow(at=now, series_uid=series_uid, stage="skipped", detail=reason))
        s.add(
            EventRow(
                at=now, series_uid=series_uid, job_id=job_id, stage="refusal_report", detail=reason
            )
        )
        return job_id


def refused_reason(job: Job) -> str | None:
    """The admission rules' reason when ``job`` was written for a refused series."""
    reason = job.result.get(REFUSED_KEY)
    return str(reason) if reason else None


__all__ = ["REFUSED_KEY", "refuse_series", "refused_reason"]
