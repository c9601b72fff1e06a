"""The state database: series, jobs, deliveries and their timeline.

SQLAlchemy 2; SQLite under the data directory by default, PostgreSQL (or any SQLAlchemy
URL) when ``ONFH_DATABASE_URL`` is set. Listener and workers share it. Every state change
of a job is one short transaction, and the transitions that must not happen twice (a job
starting, a delivery succeeding) are compare-and-set updates, so two workers that got the
same redelivered message cannot both act on it.

Job states::

    pending ──▶ queued ──▶ running ──▶ scored ──▶ done
       ▲          │           │          │
       └─sweeper──┘           ▼          ▼
                            failed    dead_letter ──retry──▶ scored

A job whose series was admitted but cannot be scored (no femoral head, unusable SEG)
still goes ``running ──▶ scored``: its "could not analyse" SR and card are delivered
like a result, and once delivered it ends ``failed`` with the reason, not ``done``.

``pending``: written before the broker is asked; the sweeper re-enqueues pending jobs
(broker was down) and queued jobs that never started (message lost). ``scored``: SR and
SEG are on disk and deliveries are under way. ``superseded``: a newer job of the same
series (re-opened by late instances) replaced this one before it finished.

The worker that scores a job, and then the one that delivers it, is recorded on its row
(:class:`~onfh_dlr.liveness.WorkerIdentity`). When that worker dies, a ``running`` job
goes back to ``queued`` and a ``scored`` one has its delivery sent again, at once
(:meth:`StateDB.requeue_jobs_of`, :mod:`onfh_dlr.liveness`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    create_engine,
    event,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from onfh_dlr.errors import StateDBError
from onfh_dlr.liveness import WorkerIdentity
from onfh_dlr.logs import redacted_url
from onfh_dlr.settings import OutputKind, Transport
from onfh_dlr.state_rows import (
    ADDED_COLUMNS,
    DELIVERY_STATES,
    FINAL_JOB_STATES,
    JOB_STATES,
    NOT_ANALYSED_KEY,
    SERIES_STATES,
    Base,
    Delivery,
    DeliveryRow,
    EventRow,
    Job,
    JobOutputRow,
    JobRow,
    SeriesRow,
    ShadowBundleId,
    ShadowResult,
)
from onfh_dlr.state_shadow import ShadowQueries
from onfh_dlr.state_verdicts import (
    Assessment,
    AssessmentState,
    HipVerdict,
    ModelIdentity,
    RecordedVerdict,
    Verdict,
    VerdictQueries,
)


def default_database_url(data_dir: Path) -> str:
    """SQLite file under the data directory (the one-machine default)."""
    return f"sqlite:///{(data_dir / 'state.db').resolve()}"


def _fail(s: Session, row: JobRow, reason: str, now: float) -> None:
    """End ``row`` as failed with ``reason`` and record the event, in session ``s``."""
    row.state, row.reason, row.finished_at = "failed", reason, now
    s.add(EventRow(at=now, series_uid=row.series_uid, job_id=row.id, stage="failed", detail=reason))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the listener write while workers read; a busy timeout instead of
    # "database is locked" when two processes commit at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def close_series(
    s: Session,
    series_uid: str,
    series_dir: Path,
    state: str,
    reason: str,
    now: float,
    instances: int | None = None,
) -> JobRow:
    """Close a series into a new generation with its ``pending`` job, in session ``s``.

    The series takes ``state`` and ``reason``; an unfinished job of an earlier generation
    is superseded by the new one, which is returned (added to ``s``, not yet committed).

    Raises
    ------
    StateDBError
        If the series is unknown.
    """
    row = s.get(SeriesRow, series_uid)
    if row is None:
        raise StateDBError(f"no series {series_uid}")
    row.generation += 1
    row.state, row.reason, row.closed_at = state, reason, now
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
    job = JobRow(
        id=job_id,
        series_uid=series_uid,
        study_uid=row.study_uid,
        generation=row.generation,
        series_dir=str(series_dir),
        seg_path=row.seg_path,
        state="pending",
        created_at=now,
        supersedes=previous.id if previous is not None else None,
    )
    s.add(job)
    return job


class StateDB(VerdictQueries, ShadowQueries):
    """The state database of one process.

    Parameters
    ----------
    url
        SQLAlchemy URL (``sqlite:///...``, ``postgresql+psycopg://...``).

    Attributes
    ----------
    claimant
        The worker this process claims jobs as (:meth:`start_job` records it); set by
        the worker process, ``None`` elsewhere.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.claimant: WorkerIdentity | None = None
        try:
            self.engine: Engine = create_engine(url, pool_pre_ping=True, future=True)
        except (SQLAlchemyError, ImportError) as exc:
            # Never the URL itself in a message: it may carry the database password.
            problem = str(exc).replace(url, redacted_url(url))
            raise StateDBError(
                f"cannot open state database {redacted_url(url)!r}: {problem}"
            ) from exc
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def for_settings(cls, database_url: str | None, data_dir: Path) -> StateDB:
        """Open the configured database (SQLite in ``data_dir`` when no URL), with schema."""
        if database_url is None:
            data_dir.mkdir(parents=True, exist_ok=True)
        db = cls(database_url or default_database_url(data_dir))
        db.create_schema()
        return db

    def create_schema(self) -> None:
        """Create missing tables (idempotent, and safe when processes start together)."""
        for attempt in range(3):
            try:
                Base.metadata.create_all(self.engine)
                self._add_columns()
                return
            except SQLAlchemyError as exc:
                # Another process created a table between our check and our CREATE:
                # the next pass sees it and skips it.
                if attempt == 2:
                    raise StateDBError(
                        f"cannot create the schema in {redacted_url(self.url)!r}: {exc}"
                    ) from exc
                time.sleep(0.2)

    def _add_columns(self) -> None:
        """Add the columns newer than existing tables (SQLite and PostgreSQL)."""
        inspector = inspect(self.engine)
        for table, columns in ADDED_COLUMNS.items():
            present = {c["name"] for c in inspector.get_columns(table)}
            missing = [name for name in columns if name not in present]
            if not missing:
                continue
            with self.engine.begin() as connection:
                for name in missing:
                    # Names and DDL are the constants above, never input. A process
                    # starting at the same time may win the race: create_schema's retry
                    # sees the column.
                    connection.execute(
                        text(f"ALTER TABLE {table} ADD COLUMN {name} {columns[name]}")
                    )

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction; translates database errors into :class:`StateDBError`."""
        try:
            with self._sessions.begin() as session:
                yield session
        except OperationalError as exc:
            raise StateDBError(f"state database unavailable: {exc.orig}") from exc
        except SQLAlchemyError as exc:
            raise StateDBError(f"state database error: {exc}") from exc

    def ping(self) -> None:
        """Raise :class:`StateDBError` unless the database answers."""
        with self.session() as s:
            s.execute(select(1))

    # --- series -----------------------------------------------------------------

    def series_received(
        self,
        *,
        series_uid: str,
        study_uid: str,
        instances: int,
        at: float,
        accession_number: str = "",
        modality: str = "",
        description: str = "",
        calling_ae: str = "",
        transport: Transport = Transport.DIMSE,
        peer_address: str = "",
    ) -> bool:
        """Record that a series received instances; re-open it if it was closed.

        ``transport`` and ``peer_address`` are those of the instance that opened the
        series; later ones keep them (a series recovered from the spool after a restart
        does not know how it came).

        Returns True when the series was closed before (a late instance re-opened it).
        """
        with self.session() as s:
            row = s.get(SeriesRow, series_uid)
            if row is None:
                s.add(
                    SeriesRow(
                        series_uid=series_uid,
                        study_uid=study_uid,
                        accession_number=accession_number[:16],
                        modality=modality[:16],
                        description=description[:64],
                        calling_ae=calling_ae[:16],
                        transport=transport,
                        peer_address=peer_address[:64],
                        state="receiving",
                        instances=instances,
                        first_received=at,
                        last_received=at,
                    )
                )
                s.add(EventRow(at=at, series_uid=series_uid, stage="first_instance"))
                return False
            reopened = row.state != "receiving"
            row.state = "receiving"
            row.instances = instances
            row.last_received = at
            if reopened:
                s.add(EventRow(at=at, series_uid=series_uid, stage="reopened"))
            return reopened

    def link_seg(self, series_uid: str, seg_path: Path) -> None:
        """Remember a received DICOM-SEG as the ROI source of a series."""
        with self.session() as s:
            row = s.get(SeriesRow, series_uid)
            if row is None:
                raise StateDBError(f"no series {series_uid} to link a SEG to")
            row.seg_path = str(seg_path)
            s.add(EventRow(at=time.time(), series_uid=series_uid, stage="seg_linked"))

    def series(self, series_uid: str) -> SeriesRow | None:
        with self.session() as s:
            return s.get(SeriesRow, series_uid)

    def skip_series(self, series_uid: str, reason: str, *, instances: int | None = None) -> None:
        """Close a series without scoring it, with the reason."""
        now = time.time()
        with self.session() as s:
            row = s.get(SeriesRow, series_uid)
            if row is None:
                raise StateDBError(f"no series {series_uid}")
            row.state, row.reason, row.closed_at = "skipped", reason, now
            if instances is not None:
                row.instances = instances
            s.add(EventRow(at=now, series_uid=series_uid, stage="skipped", detail=reason))

    def admit_series(
        self, series_uid: str, series_dir: Path, note: str = "", *, instances: int | None = None
    ) -> str:
        """Close a series for scoring: write its job (``pending``) and return the job id.

        An unfinished job of an earlier generation of the series is superseded by this one.
        """
        now = time.time()
        with self.session() as s:
            job = close_series(s, series_uid, series_dir, "admitted", note, now, instances)
            s.add(EventRow(at=now, series_uid=series_uid, job_id=job.id, stage="closed"))
            return job.id

    # --- jobs -------------------------------------------------------------------

    def job(self, job_id: str) -> Job | None:
        with self.session() as s:
            row = s.get(JobRow, job_id)
            return Job.from_row(row) if row is not None else None

    def mark_enqueued(self, job_id: str) -> None:
        now = time.time()
        with self.session() as s:
            s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state.in_(("pending", "queued")))
                .values(state="queued", enqueued_at=now)
            )

    def mark_unsent(self, job_id: str) -> None:
        """A queued job whose message did not reach the broker: ``pending`` again, so
        that the sweeper sends it."""
        with self.session() as s:
            s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state == "queued")
                .values(state="pending")
            )

    def jobs_to_enqueue(self, *, requeue_after: float, now: float | None = None) -> list[str]:
        """Jobs the sweeper must (re-)send to the broker.

        ``pending`` jobs never reached it; ``queued`` jobs not started ``requeue_after``
        seconds after they were sent lost their message (a broker restarted without its
        data); ``running`` jobs started that long ago lost their worker and their message
        (a whole worker killed, its message not redelivered). Tasks are idempotent, so a
        rare duplicate costs time, not correctness.
        """
        now = time.time() if now is None else now
        stale = now - requeue_after
        with self.session() as s:
            rows = s.scalars(
                select(JobRow.id).where(
                    (JobRow.state == "pending")
                    | ((JobRow.state == "queued") & (JobRow.enqueued_at < stale))
                    | ((JobRow.state == "running") & (JobRow.started_at < stale))
                )
            )
            return list(rows)

    def start_job(
        self,
        job_id: str,
        *,
        max_attempts: int | None = None,
        worker: WorkerIdentity | None = None,
    ) -> Job | None:
        """Claim a job for a worker (``worker``, else :attr:`claimant`, is recorded on
        it); ``None`` when there is nothing to do.

        A job already done, failed or superseded is not run again (a redelivered message).
        A ``running`` job is claimed again: its worker died (the broker redelivered it).
        A job that has already been claimed ``max_attempts`` times without finishing is
        failed instead and returned in state ``failed``: a series that kills its worker
        (e.g. out of memory) must not be redelivered forever.
        """
        now = time.time()
        with self.session() as s:
            row = s.get(JobRow, job_id, with_for_update=True)
            if row is None or row.state in FINAL_JOB_STATES or row.state == "dead_letter":
                return None
            unfinished = row.state in ("pending", "queued", "running")
            if unfinished and max_attempts is not None and row.attempts >= max_attempts:
                reason = (
                    f"WorkerLostError: scoring did not finish in {row.attempts} attempts "
                    "(the worker process died each time, e.g. out of memory); not retried"
                )
                _fail(s, row, reason, now)
                return Job.from_row(row)
            if unfinished:
                row.state = "running"
                row.started_at = now
                row.attempts += 1
                claimant = worker or self.claimant
                if claimant is not None:
                    row.worker_host, row.worker_pid = claimant.host, claimant.pid
                    row.worker_name = claimant.name
                detail = claimant.name if claimant is not None else ""
                s.add(
                    EventRow(
                        at=now,
                        series_uid=row.series_uid,
                        job_id=job_id,
                        stage="started",
                        detail=detail,
                    )
                )
            return Job.from_row(row)

    #: A worker holds a job while it scores it (``running``), and a ``scored`` job with a
    #: delivery still pending that it scored or is delivering (see hold_for_delivery).
    _HELD = (JobRow.state == "running") | (
        (JobRow.state == "scored")
        & JobRow.id.in_(select(DeliveryRow.job_id).where(DeliveryRow.state == "pending"))
    )

    def holding_worker_pids(self, host: str) -> set[int]:
        """The main pids of the workers on ``host`` that hold jobs."""
        with self.session() as s:
            pids = s.scalars(
                select(JobRow.worker_pid).where(
                    self._HELD, JobRow.worker_host == host, JobRow.worker_pid.is_not(None)
                )
            )
            return {int(pid) for pid in pids if pid is not None}

    def holding_worker_names(self) -> set[str]:
        """The Celery node names of the workers that hold jobs."""
        with self.session() as s:
            names = s.scalars(
                select(JobRow.worker_name).where(self._HELD, JobRow.worker_name.is_not(None))
            )
            return {str(name) for name in names if name}

    def hold_again(
        self, job_id: str, *, host: str, pid: int | None = None, name: str | None = None
    ) -> None:
        """Name the dead worker again on a scored job nobody holds (its redelivery could
        not be sent): the next watch sees it and tries again."""
        with self.session() as s:
            s.execute(
                update(JobRow)
                .where(
                    JobRow.id == job_id,
                    JobRow.state == "scored",
                    JobRow.worker_host.is_(None),
                    JobRow.worker_pid.is_(None),
                    JobRow.worker_name.is_(None),
                )
                .values(worker_host=host, worker_pid=pid, worker_name=name)
            )

    def hold_for_delivery(self, job_id: str) -> None:
        """Record :attr:`claimant` as the worker delivering a scored job now."""
        if self.claimant is None:
            return
        worker = self.claimant
        with self.session() as s:
            s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state == "scored")
                .values(worker_host=worker.host, worker_pid=worker.pid, worker_name=worker.name)
            )

    def requeue_jobs_of(
        self, *, host: str, pid: int | None = None, name: str | None = None, reason: str
    ) -> tuple[list[str], list[str]]:
        """Take back the jobs a dead worker held, with ``reason`` on their timeline.

        The worker is ``pid`` on ``host``, or (``pid`` None) the Celery node ``name``.
        Its ``running`` jobs go back to ``queued`` (``requeued``): compare-and-set, so a
        job another worker claimed since is not touched; the attempt stays counted
        (``max_attempts`` still ends a poison series); not ``pending``, which the sweeper
        would send too (two messages, two workers on one job). Its ``scored`` jobs with
        a delivery pending (``redelivered``) need their delivery task again: it died with
        the worker, or was never sent. If it was under way elsewhere after all, the same
        objects (same UIDs) go twice, never a second result. They lose the dead worker's
        name in the same transaction, so that a second watch that notices the same death
        (the supervisor, the pid check, the Celery events) finds nothing left to take; the
        delivery worker that takes the new task names itself (:meth:`hold_for_delivery`),
        and :meth:`hold_again` gives a job back to the dead worker if the task could not
        be sent, for the next watch to try again.

        Returns
        -------
        tuple of list of str
            The ids to score again (the caller sends them, :meth:`mark_unsent` if it
            cannot) and the ids to deliver again.
        """
        now = time.time()
        mine: ColumnElement[bool]
        if pid is not None:
            mine = (JobRow.worker_host == host) & (JobRow.worker_pid == pid)
        elif name is not None:
            mine = JobRow.worker_name == name
        else:
            raise ValueError("requeue_jobs_of needs the worker's pid or name")
        with self.session() as s:
            rows = list(s.scalars(select(JobRow).where(self._HELD, mine).with_for_update()))
            score, deliver = [], []
            for row in rows:
                if row.state == "running":
                    row.state, row.enqueued_at = "queued", now
                    score.append(row.id)
                else:
                    row.worker_host = row.worker_pid = row.worker_name = None
                    deliver.append(row.id)
                stage = "requeued" if row.state == "queued" else "redelivered"
                s.add(
                    EventRow(
                        at=now, series_uid=row.series_uid, job_id=row.id, stage=stage, detail=reason
                    )
                )
            return score, deliver

    def job_scored(
        self,
        job_id: str,
        *,
        sr_path: Path,
        seg_path: Path | None,
        sr_uid: str,
        result: dict[str, Any],
        destinations: Sequence[str],
        card_path: Path | None = None,
        output_uids: dict[OutputKind, str] | None = None,
        not_analysed: str | None = None,
    ) -> bool:
        """Record the outputs of a job and its pending deliveries.

        ``not_analysed``: the reason the series could not be scored; the outputs say
        so, and the job ends ``failed`` with it once they are delivered. ``seg_path``
        is ``None`` when there is no SEG (no ROI was found).

        Returns False when the job was superseded meanwhile (its outputs are not sent).
        """
        now = time.time()
        paths = {OutputKind.SR: sr_path, OutputKind.SEG: seg_path, OutputKind.CARD: card_path}
        uids = output_uids or {}
        with self.session() as s:
            row = s.get(JobRow, job_id, with_for_update=True)
            if row is None or row.state != "running":
                return False
            row.state, row.scored_at = "scored", now
            row.sr_path, row.sr_uid = str(sr_path), sr_uid
            row.seg_out_path = str(seg_path) if seg_path is not None else None
            if not_analysed:
                result = {**result, NOT_ANALYSED_KEY: not_analysed}
                row.reason = not_analysed
            row.result_json = json.dumps(result, sort_keys=True)
            for kind, path in paths.items():
                if path is None:
                    continue
                existing = s.get(JobOutputRow, (job_id, kind.value))
                if existing is None:
                    existing = JobOutputRow(job_id=job_id, kind=kind.value)
                    s.add(existing)
                existing.path = str(path)
                existing.sop_instance_uid = uids.get(kind, "")
            for dest in destinations:
                s.add(DeliveryRow(job_id=job_id, destination=dest, updated_at=now))
            stage = "not_analysed" if not_analysed else "scored"
            s.add(
                EventRow(
                    at=now,
                    series_uid=row.series_uid,
                    job_id=job_id,
                    stage=stage,
                    detail=not_analysed or "",
                )
            )
            return True

    def job_outputs(self, job_id: str) -> dict[OutputKind, Path]:
        """The written outputs of a job by kind (SR and SEG of older jobs from the job row)."""
        with self.session() as s:
            rows = s.scalars(select(JobOutputRow).where(JobOutputRow.job_id == job_id))
            out = {OutputKind(r.kind): Path(r.path) for r in rows}
            job = s.get(JobRow, job_id)
            if job is not None:
                if job.sr_path and OutputKind.SR not in out:
                    out[OutputKind.SR] = Path(job.sr_path)
                if job.seg_out_path and OutputKind.SEG not in out:
                    out[OutputKind.SEG] = Path(job.seg_out_path)
            return out

    def fail_job(self, job_id: str, reason: str) -> None:
        """End a job that cannot be scored, with its reason."""
        now = time.time()
        with self.session() as s:
            row = s.get(JobRow, job_id, with_for_update=True)
            if row is None or row.state in FINAL_JOB_STATES:
                return
            _fail(s, row, reason, now)

    def previous_sr(self, job: Job) -> Path | None:
        """The SR of the newest earlier finished job of the same series, if any."""
        with self.session() as s:
            path = s.scalars(
                select(JobRow.sr_path)
                .where(
                    JobRow.series_uid == job.series_uid,
                    JobRow.generation < job.generation,
                    JobRow.sr_path.is_not(None),
                )
                .order_by(JobRow.generation.desc())
                .limit(1)
            ).first()
            return Path(path) if path else None

    # --- deliveries ---------------------------------------------------------------

    def deliveries(self, job_id: str) -> list[Delivery]:
        """A job's deliveries, one per destination, in the order they were recorded."""
        return self.deliveries_of([job_id]).get(job_id, [])

    def deliveries_of(self, job_ids: Iterable[str]) -> dict[str, list[Delivery]]:
        """The deliveries of many jobs in one query (e.g. for a page of studies).

        Jobs without deliveries are missing from the result.
        """
        wanted = list(dict.fromkeys(job_ids))
        found: dict[str, list[Delivery]] = {}
        if not wanted:
            return found
        with self.session() as s:
            rows = s.scalars(
                select(DeliveryRow)
                .where(DeliveryRow.job_id.in_(wanted))
                .order_by(DeliveryRow.job_id, DeliveryRow.id)
            )
            for r in rows:
                found.setdefault(r.job_id, []).append(
                    Delivery(r.job_id, r.destination, r.state, r.attempts, r.last_error)
                )
        return found

    def delivery_attempted(
        self, job_id: str, destination: str, *, ok: bool, error: str = "", final: bool = False
    ) -> None:
        """Record one delivery attempt; ``final`` failures go to the dead-letter state."""
        now = time.time()
        with self.session() as s:
            row = s.scalars(
                select(DeliveryRow).where(
                    DeliveryRow.job_id == job_id, DeliveryRow.destination == destination
                )
            ).first()
            if row is None:
                raise StateDBError(f"job {job_id} has no delivery to {destination}")
            row.attempts += 1
            row.updated_at = now
            row.last_error = error
            if ok:
                row.state = "delivered"
            elif final:
                row.state = "dead_letter"
            job = s.get(JobRow, job_id)
            assert job is not None
            stage = "delivered" if ok else ("dead_letter" if final else "delivery_retry")
            s.add(
                EventRow(
                    at=now,
                    series_uid=job.series_uid,
                    job_id=job_id,
                    stage=stage,
                    detail=f"{destination}: {error}" if error else destination,
                )
            )

    def settle_job(self, job_id: str) -> str:
        """Set a scored job's state from its deliveries: done, dead_letter or still scored.

        A job whose outputs say "could not analyse" ends ``failed`` (with its reason)
        instead of ``done`` once they are all delivered.
        """
        now = time.time()
        with self.session() as s:
            row = s.get(JobRow, job_id, with_for_update=True)
            if row is None:
                raise StateDBError(f"no job {job_id}")
            states = set(s.scalars(select(DeliveryRow.state).where(DeliveryRow.job_id == job_id)))
            if row.state not in ("scored", "dead_letter"):
                return row.state
            not_analysed = json.loads(row.result_json or "{}").get(NOT_ANALYSED_KEY)
            if states <= {"delivered"} and not_analysed:
                _fail(s, row, str(not_analysed), now)
            elif states <= {"delivered"}:
                row.state, row.finished_at = "done", now
                s.add(EventRow(at=now, series_uid=row.series_uid, job_id=job_id, stage="done"))
            elif "pending" not in states:
                row.state = "dead_letter"
                row.reason = "delivery failed after all retries"
            return row.state

    def retry_dead_letter(self, job_id: str) -> bool:
        """Put a dead-lettered job's failed deliveries back to pending (operator action)."""
        now = time.time()
        with self.session() as s:
            row = s.get(JobRow, job_id, with_for_update=True)
            if row is None or row.state != "dead_letter":
                return False
            not_analysed = json.loads(row.result_json or "{}").get(NOT_ANALYSED_KEY)
            row.state, row.reason = "scored", str(not_analysed or "")
            s.execute(
                update(DeliveryRow)
                .where(DeliveryRow.job_id == job_id, DeliveryRow.state == "dead_letter")
                .values(state="pending", attempts=0, updated_at=now)
            )
            s.add(
                EventRow(at=now, series_uid=row.series_uid, job_id=job_id, stage="operator_retry")
            )
            return True

    # --- retention ----------------------------------------------------------------

    def expired_series(self, cutoff: float) -> list[tuple[SeriesRow, list[Job]]]:
        """Closed series, quiet since before ``cutoff``, whose data may be purged.

        A series qualifies when it was skipped, or when every job of it is finished (done,
        failed or superseded): a dead-lettered or unfinished job keeps its data.
        """
        with self.session() as s:
            rows = list(
                s.scalars(
                    select(SeriesRow).where(
                        SeriesRow.state.in_(("admitted", "skipped")),
                        SeriesRow.purged_at.is_(None),
                        SeriesRow.closed_at < cutoff,
                        SeriesRow.last_received < cutoff,
                    )
                )
            )
            out = []
            for row in rows:
                jobs = [
                    Job.from_row(j)
                    for j in s.scalars(select(JobRow).where(JobRow.series_uid == row.series_uid))
                ]
                if all(j.state in FINAL_JOB_STATES for j in jobs):
                    out.append((row, jobs))
            return out

    def mark_purged(self, series_uid: str, detail: str) -> None:
        now = time.time()
        with self.session() as s:
            row = s.get(SeriesRow, series_uid)
            if row is None:
                return
            row.purged_at = now
            s.add(EventRow(at=now, series_uid=series_uid, stage="purged", detail=detail))

    # --- overview -----------------------------------------------------------------

    def job_counts(self) -> dict[str, int]:
        with self.session() as s:
            rows = s.execute(select(JobRow.state, func.count()).group_by(JobRow.state))
            return {state: int(n) for state, n in rows}

    def series_counts(self) -> dict[str, int]:
        with self.session() as s:
            rows = s.execute(select(SeriesRow.state, func.count()).group_by(SeriesRow.state))
            return {state: int(n) for state, n in rows}

    def jobs(self, *, states: Sequence[str] | None = None, limit: int = 50) -> list[Job]:
        with self.session() as s:
            query = select(JobRow).order_by(JobRow.created_at.desc()).limit(limit)
            if states is not None:
                query = query.where(JobRow.state.in_(tuple(states)))
            return [Job.from_row(r) for r in s.scalars(query)]

    def jobs_of_series(self, series_uids: Iterable[str]) -> list[Job]:
        """Every job of the given series."""
        uids = tuple(series_uids)
        if not uids:
            return []
        with self.session() as s:
            rows = s.scalars(select(JobRow).where(JobRow.series_uid.in_(uids)))
            return [Job.from_row(r) for r in rows]

    def recent_series(
        self, *, states: Sequence[str] | None = None, limit: int = 50
    ) -> list[SeriesRow]:
        with self.session() as s:
            query = select(SeriesRow).order_by(SeriesRow.last_received.desc()).limit(limit)
            if states is not None:
                query = query.where(SeriesRow.state.in_(tuple(states)))
            return list(s.scalars(query))

    def events(self, series_uid: str) -> list[EventRow]:
        with self.session() as s:
            return list(
                s.scalars(
                    select(EventRow).where(EventRow.series_uid == series_uid).order_by(EventRow.id)
                )
            )


__all__ = [
    "DELIVERY_STATES",
    "FINAL_JOB_STATES",
    "JOB_STATES",
    "NOT_ANALYSED_KEY",
    "SERIES_STATES",
    "Assessment",
    "AssessmentState",
    "Delivery",
    "EventRow",
    "HipVerdict",
    "Job",
    "JobOutputRow",
    "JobRow",
    "ModelIdentity",
    "RecordedVerdict",
    "SeriesRow",
    "ShadowBundleId",
    "ShadowResult",
    "StateDB",
    "Verdict",
    "close_series",
    "default_database_url",
]
