"""Shadow bundles' results and re-scoring in the state database (issue 15 item 5).

The queries are a mixin of :class:`~onfh_dlr.state.StateDB` (import the names from
:mod:`onfh_dlr.state`); the table is in :mod:`onfh_dlr.state_rows`, the scoring in
:mod:`worker.shadow`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

from sqlalchemy import (
    select,
)

from onfh_dlr.errors import StateDBError
from onfh_dlr.state_rows import (
    FINAL_JOB_STATES,
    EventRow,
    Job,
    JobRow,
    QueryMixin,
    SeriesRow,
    ShadowBundleId,
    ShadowResult,
    ShadowResultRow,
)


class ShadowQueries(QueryMixin):
    """The shadow-bundle and re-scoring queries of :class:`~onfh_dlr.state.StateDB`."""

    # --- shadow bundles and re-scoring (issue 15 item 5) --------------------------------

    def record_shadow(self, results: Sequence[ShadowResult], *, event: str = "") -> None:
        """Store shadow results (replacing a re-run's rows of the same job, bundle and hip),
        with ``event`` on the job's timeline when given. Never changes the job's state."""
        with self.session() as s:
            for r in results:
                row = s.get(ShadowResultRow, (r.job_id, r.bundle.device_uid, r.side))
                if row is None:
                    row = ShadowResultRow(
                        job_id=r.job_id, device_uid=r.bundle.device_uid, side=r.side
                    )
                    s.add(row)
                row.series_uid = r.series_uid
                row.bundle_name, row.bundle_version = r.bundle.name, r.bundle.version
                row.probability, row.call = r.probability, r.call
                row.deployed_probability, row.deployed_call = (
                    r.deployed_probability,
                    r.deployed_call,
                )
                row.error, row.scored_at = r.error, r.scored_at
            if event and results:
                first = results[0]
                s.add(
                    EventRow(
                        at=first.scored_at,
                        series_uid=first.series_uid,
                        job_id=first.job_id,
                        stage="shadow",
                        detail=event,
                    )
                )

    def shadow_results(
        self, *, device_uid: str | None = None, limit: int | None = None
    ) -> list[ShadowResult]:
        """Shadow results, newest first; of one bundle when ``device_uid`` is given."""
        with self.session() as s:
            query = select(ShadowResultRow).order_by(
                ShadowResultRow.scored_at.desc(), ShadowResultRow.side
            )
            if device_uid is not None:
                query = query.where(ShadowResultRow.device_uid == device_uid)
            if limit is not None:
                query = query.limit(limit)
            return [ShadowResult.from_row(r) for r in s.scalars(query)]

    def shadow_bundles(self) -> list[ShadowBundleId]:
        """Every shadow bundle with results, by name and version."""
        with self.session() as s:
            rows = s.execute(
                select(
                    ShadowResultRow.bundle_name,
                    ShadowResultRow.bundle_version,
                    ShadowResultRow.device_uid,
                ).distinct()
            )
            return sorted(ShadowBundleId(*r) for r in rows)

    def add_event(self, job: Job, stage: str, detail: str = "") -> None:
        """One entry on a job's timeline (e.g. a re-scoring that delivered nothing)."""
        with self.session() as s:
            s.add(
                EventRow(
                    at=time.time(),
                    series_uid=job.series_uid,
                    job_id=job.id,
                    stage=stage,
                    detail=detail,
                )
            )

    def rescore_job(self, series_uid: str, detail: str) -> Job:
        """A new generation's job of an admitted series, claimed (``running``) by the
        caller, which scores it with another bundle and delivers it: its SR supersedes the
        previous generation's (:meth:`previous_sr`). The timeline says ``rescored``.

        Raises
        ------
        StateDBError
            No such series, or it was not admitted.
        """
        now = time.time()
        with self.session() as s:
            series = s.get(SeriesRow, series_uid, with_for_update=True)
            if series is None or series.state != "admitted":
                raise StateDBError(f"no admitted series {series_uid}")
            previous = s.scalars(
                select(JobRow)
                .where(JobRow.series_uid == series_uid)
                .order_by(JobRow.generation.desc())
                .limit(1)
            ).first()
            if previous is None:
                raise StateDBError(f"series {series_uid} has no job to re-score")
            series.generation += 1
            job_id = str(uuid.uuid4())
            if previous.state not in FINAL_JOB_STATES:
                previous.state = "superseded"
                previous.reason = f"superseded by job {job_id} (re-scored)"
                previous.finished_at = now
            row = JobRow(
                id=job_id,
                series_uid=series_uid,
                study_uid=series.study_uid,
                generation=series.generation,
                series_dir=previous.series_dir,
                seg_path=previous.seg_path,
                state="running",
                attempts=0,
                created_at=now,
                started_at=now,
                supersedes=previous.id,
            )
            s.add(row)
            s.add(
                EventRow(
                    at=now, series_uid=series_uid, job_id=job_id, stage="rescored", detail=detail
                )
            )
            s.flush()
            return Job.from_row(row)

    # --- end of shadow bundles and re-scoring ------------------------------------------
