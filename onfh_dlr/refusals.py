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
from pathlib import Path
from typing import Final

from onfh_dlr.state import EventRow, Job, StateDB, close_series

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
        job = close_series(s, series_uid, series_dir, "skipped", reason, now, instances)
        job.reason = reason
        job.result_json = json.dumps({REFUSED_KEY: reason})
        job_id = job.id
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
