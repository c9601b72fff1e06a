"""Data retention: the spool and outputs of finished studies are purged after an age.

A study's received instances and its SR/SEG are kept until ``ONFH_RETENTION_DAYS`` after
its series last closed, and only once nothing more will happen to them: delivered (or
failed, superseded, skipped). Dead-lettered results are kept until an operator retries
them. Radiologists' assessment SRs (``listener.verdicts``) are recorded when they arrive;
their files go ``ONFH_RETENTION_DAYS`` after receipt. The state DB keeps the rows (the
history, the verdicts) and records when the data went.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from onfh_dlr.state import StateDB

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PurgeReport:
    """What one purge removed."""

    series: int
    bytes_freed: int
    assessments: int = 0


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def purge_expired(
    db: StateDB, data_dir: Path, *, max_age: float, now: float | None = None
) -> PurgeReport:
    """Remove the spool and output files of series finished more than ``max_age`` s ago,
    and the files of assessment SRs received more than ``max_age`` s ago.

    Only paths under ``data_dir`` are ever removed, whatever the database says.
    """
    now = time.time() if now is None else now
    spool, outputs = data_dir / "spool", data_dir / "outputs"
    purged = freed = 0
    for row, jobs in db.expired_series(now - max_age):
        doomed = [spool / row.study_uid / row.series_uid]
        if row.seg_path:
            doomed.append(Path(row.seg_path))
        doomed += [outputs / job.study_uid / job.id for job in jobs]
        removed = 0
        for path in doomed:
            if not path.exists() or not (_inside(path, spool) or _inside(path, outputs)):
                continue
            size = _size(path)
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed += size
        db.mark_purged(row.series_uid, f"{removed} bytes removed")
        purged += 1
        freed += removed
    assessments = 0
    for assessment in db.expired_assessments(now - max_age):
        path = assessment.path
        if path.is_file() and _inside(path, spool):
            freed += path.stat().st_size
            path.unlink()
            with contextlib.suppress(OSError):  # its series directory, when now empty
                path.parent.rmdir()
        db.mark_assessment_purged(assessment.sop_instance_uid, now)
        assessments += 1
    if purged or assessments:
        log.info(
            "retention: purged %d series and %d assessment SRs, %d bytes",
            purged,
            assessments,
            freed,
        )
    return PurgeReport(purged, freed, assessments)


__all__ = ["PurgeReport", "purge_expired"]
