"""Outputs of a job beyond the SR, SEG and card that ``StateDB.job_scored`` records.

The result card's Encapsulated PDF (``OutputKind.PDF``) is one more row of the
``job_outputs`` table; :func:`record_output` writes it *before* ``job_scored`` makes the
job ``scored``, so a job that is scored always has it (a crash in between leaves the
job ``running``: its re-run writes the same row again). ``job_outputs`` then lists it
with the others and ``deliver_job`` sends it where it is configured.

Kept beside :mod:`onfh_dlr.state` (whose sessions and rows it uses) rather than in it
while another branch edits that module; it belongs in ``StateDB.job_scored`` (a mapping
of further outputs). Imported by the worker.
"""

from __future__ import annotations

from pathlib import Path

from onfh_dlr.settings import OutputKind
from onfh_dlr.state import JobOutputRow, StateDB


def record_output(
    db: StateDB, job_id: str, kind: OutputKind, path: Path, sop_instance_uid: str
) -> None:
    """Record (or replace) the ``kind`` output of a job.

    Raises
    ------
    StateDBError
        If the database is unavailable (or the job unknown).
    """
    with db.session() as s:
        row = s.get(JobOutputRow, (job_id, kind.value))
        if row is None:
            row = JobOutputRow(job_id=job_id, kind=kind.value)
            s.add(row)
        row.path = str(path)
        row.sop_instance_uid = sop_instance_uid


__all__ = ["record_output"]
