"""The rows of the state database: its tables (SQLAlchemy ORM), the columns added to
them since they first shipped (:data:`ADDED_COLUMNS`, which
:meth:`onfh_dlr.state.StateDB.create_schema` adds to an existing database), and the
detached records read from them (:class:`Job`, :class:`Delivery`).

Kernel module: :mod:`onfh_dlr.state` is its user and re-exports all of it; other code
imports from there, except the drift tables (``ScoredHipRow``, ``DriftSnapshotRow``),
whose one user is :mod:`onfh_dlr.drift_store`.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Enum, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from onfh_dlr.liveness import WorkerIdentity
from onfh_dlr.settings import Transport


def _enum_values(enum: type[Transport]) -> list[str]:
    # Store the enum's value ("stow-rs"), not its name, so the column reads plainly.
    return [member.value for member in enum]


#: Columns added to a table after it first shipped, with the DDL that adds each to an
#: existing table (``create_all`` creates missing tables, never columns).
ADDED_COLUMNS: Final = {
    "series": {
        "transport": "VARCHAR(16) NOT NULL DEFAULT 'dimse'",
        "peer_address": "VARCHAR(64) NOT NULL DEFAULT ''",
    },
    "jobs": {"worker_host": "VARCHAR(255)", "worker_pid": "INTEGER", "worker_name": "VARCHAR(255)"},
    "assessments": {"purged_at": "FLOAT"},
}


JOB_STATES: Final = (
    "pending",
    "queued",
    "running",
    "scored",
    "done",
    "failed",
    "dead_letter",
    "superseded",
)
FINAL_JOB_STATES: Final = frozenset({"done", "failed", "superseded"})
SERIES_STATES: Final = ("receiving", "admitted", "skipped")
DELIVERY_STATES: Final = ("pending", "delivered", "dead_letter")


class Base(DeclarativeBase):
    pass


class SeriesRow(Base):
    """One received series (identified by its Series Instance UID)."""

    __tablename__ = "series"

    series_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), index=True)
    accession_number: Mapped[str] = mapped_column(String(16), default="")
    modality: Mapped[str] = mapped_column(String(16), default="")
    description: Mapped[str] = mapped_column(String(64), default="")
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    # How the series arrived and from which address (an IPv6 address is up to 45
    # characters; C-STORE series name their peer by ``calling_ae``).
    transport: Mapped[Transport] = mapped_column(
        Enum(Transport, native_enum=False, length=16, values_callable=_enum_values),
        default=Transport.DIMSE,
        server_default=Transport.DIMSE.value,
    )
    peer_address: Mapped[str] = mapped_column(String(64), default="", server_default="")
    state: Mapped[str] = mapped_column(String(16), default="receiving", index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    instances: Mapped[int] = mapped_column(Integer, default=0)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    seg_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    first_received: Mapped[float] = mapped_column(Float)
    last_received: Mapped[float] = mapped_column(Float)
    closed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    purged_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class JobRow(Base):
    """One scoring job: a series generation to score and deliver."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    series_uid: Mapped[str] = mapped_column(ForeignKey("series.series_uid"), index=True)
    study_uid: Mapped[str] = mapped_column(String(64))
    generation: Mapped[int] = mapped_column(Integer)
    series_dir: Mapped[str] = mapped_column(Text)
    seg_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    enqueued_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    scored_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    sr_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    seg_out_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    sr_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    result_json: Mapped[str] = mapped_column(Text, default="{}")
    supersedes: Mapped[str | None] = mapped_column(String(36), nullable=True)
    # The worker that claimed the job last (onfh_dlr.liveness.WorkerIdentity): when it
    # dies, its running jobs are requeued at once.
    worker_host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    worker_pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    worker_name: Mapped[str | None] = mapped_column(String(255), nullable=True)


class DeliveryRow(Base):
    """The delivery of one job's SR and SEG to one destination."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    destination: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[float] = mapped_column(Float)


class EventRow(Base):
    """One timeline entry of a series or job (for the status page and the metrics)."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    series_uid: Mapped[str] = mapped_column(String(64), index=True)
    job_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    stage: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")


class JobOutputRow(Base):
    """One written output object of a job (SR, SEG, card).

    A table of its own rather than a column per kind: ``create_schema`` only creates
    missing tables, so a new table reaches an existing database with no migration,
    where a new column of ``jobs`` would not. The SR and SEG paths stay on the job row
    too (older rows have no entries here).
    """

    __tablename__ = "job_outputs"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), default="")


# --- shadow results (issue 15 item 5: candidate bundles scored beside the deployed one) ---


class ShadowResultRow(Base):
    """One hip of one job as a shadow bundle scored it, beside the deployed call.

    A table of its own (``create_schema`` creates it in an existing database). A shadow
    that failed on a hip has no probability and says why in ``error``.
    """

    __tablename__ = "shadow_results"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    device_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    side: Mapped[str] = mapped_column(String(1), primary_key=True)
    series_uid: Mapped[str] = mapped_column(String(64), index=True)
    bundle_name: Mapped[str] = mapped_column(String(128))
    bundle_version: Mapped[str] = mapped_column(String(64))
    probability: Mapped[float | None] = mapped_column(Float, nullable=True)
    call: Mapped[int | None] = mapped_column(Integer, nullable=True)
    deployed_probability: Mapped[float | None] = mapped_column(Float, nullable=True)
    deployed_call: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")
    scored_at: Mapped[float] = mapped_column(Float, index=True)


@dataclass(frozen=True, order=True)
class ShadowBundleId:
    """Which shadow bundle: what the metrics label and the status page group by."""

    name: str
    version: str
    device_uid: str


@dataclass(frozen=True)
class ShadowResult:
    """One hip scored by a shadow bundle, with the deployed bundle's result beside it.

    ``side`` is ``"R"`` or ``"L"``. ``probability``/``call`` are ``None`` when the shadow
    failed on the hip (``error`` says why); ``deployed_*`` are ``None`` when the deployed
    bundle did not score it.
    """

    job_id: str
    series_uid: str
    side: str
    bundle: ShadowBundleId
    probability: float | None
    call: int | None
    deployed_probability: float | None
    deployed_call: int | None
    error: str = ""
    scored_at: float = 0.0

    @property
    def agrees(self) -> bool | None:
        """Whether the shadow's call is the deployed one's (``None``: one is missing)."""
        if self.call is None or self.deployed_call is None:
            return None
        return self.call == self.deployed_call

    @classmethod
    def from_row(cls, row: ShadowResultRow) -> ShadowResult:
        return cls(
            job_id=row.job_id,
            series_uid=row.series_uid,
            side=row.side,
            bundle=ShadowBundleId(row.bundle_name, row.bundle_version, row.device_uid),
            probability=row.probability,
            call=row.call,
            deployed_probability=row.deployed_probability,
            deployed_call=row.deployed_call,
            error=row.error,
            scored_at=row.scored_at,
        )


# --- end of shadow results ---------------------------------------------------------------
# --- drift (issue 15: what the rolling-window drift check reads and writes) -------------
# Tables of their own, so ``create_schema`` adds them to an existing database. Queries:
# :mod:`onfh_dlr.drift_store`.


class ScoredHipRow(Base):
    """One hip a bundle scored: what the drift window needs, and nothing that identifies.

    ``inputs_json`` holds the deployed model's selected inputs by feature name and
    ``acquisition_json`` its series' numeric acquisition parameters (the values the
    bundle's reference statistics describe); no UID or name of the patient.
    """

    __tablename__ = "scored_hips"
    __table_args__ = (UniqueConstraint("job_id", "side", "device_uid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(36), index=True)
    side: Mapped[str] = mapped_column(String(8))
    device_uid: Mapped[str] = mapped_column(String(64), index=True)
    scored_at: Mapped[float] = mapped_column(Float, index=True)
    probability: Mapped[float] = mapped_column(Float)
    call: Mapped[int] = mapped_column(Integer)
    inputs_json: Mapped[str] = mapped_column(Text, default="{}")
    # The series' numeric acquisition parameters (field strength, TE, TR, ...), by name.
    acquisition_json: Mapped[str] = mapped_column(Text, default="{}")


class DriftSnapshotRow(Base):
    """The drift of the rolling window after one scored job (a point of the plots)."""

    __tablename__ = "drift_snapshots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    device_uid: Mapped[str] = mapped_column(String(64), index=True)
    hips: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    positive_rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    expected_rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    rate_pvalue: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Per input: {"psi": ..., "ks": ..., "ks_p": ..., "shifted": ...}.
    inputs_json: Mapped[str] = mapped_column(Text, default="{}")


# --- end of drift (rows) ----------------------------------------------------------------


#: The key of ``Job.result`` that marks a job whose outputs say "could not analyse".
NOT_ANALYSED_KEY: Final = "not_analysed"


@dataclass(frozen=True)
class Job:
    """A job as read from the database (detached from any session)."""

    id: str
    series_uid: str
    study_uid: str
    generation: int
    series_dir: Path
    seg_path: Path | None
    state: str
    reason: str
    attempts: int
    created_at: float  # when the series closed and the job was written
    started_at: float | None
    scored_at: float | None
    finished_at: float | None
    sr_path: Path | None
    seg_out_path: Path | None
    sr_uid: str | None
    result: dict[str, Any]
    supersedes: str | None
    worker: WorkerIdentity | None = None  # who claimed it last

    @classmethod
    def from_row(cls, row: JobRow) -> Job:
        return cls(
            id=row.id,
            series_uid=row.series_uid,
            study_uid=row.study_uid,
            generation=row.generation,
            series_dir=Path(row.series_dir),
            seg_path=Path(row.seg_path) if row.seg_path else None,
            state=row.state,
            reason=row.reason,
            attempts=row.attempts,
            created_at=row.created_at,
            started_at=row.started_at,
            scored_at=row.scored_at,
            finished_at=row.finished_at,
            sr_path=Path(row.sr_path) if row.sr_path else None,
            seg_out_path=Path(row.seg_out_path) if row.seg_out_path else None,
            sr_uid=row.sr_uid,
            result=json.loads(row.result_json or "{}"),
            supersedes=row.supersedes,
            worker=(
                WorkerIdentity(row.worker_host, row.worker_pid, row.worker_name or "")
                if row.worker_host is not None and row.worker_pid is not None
                else None
            ),
        )

    @property
    def not_analysed(self) -> str | None:
        """The reason, when this job's outputs say "could not analyse"."""
        reason = self.result.get(NOT_ANALYSED_KEY)
        return str(reason) if reason else None


@dataclass(frozen=True)
class Delivery:
    """One destination's delivery state for a job."""

    job_id: str
    destination: str
    state: str
    attempts: int
    last_error: str


class QueryMixin:
    """What the query mixins (verdicts, shadow results) need of
    :class:`~onfh_dlr.state.StateDB`, which provides it."""

    def session(self) -> AbstractContextManager[Session]:
        raise NotImplementedError

    def job(self, job_id: str) -> Job | None:
        raise NotImplementedError


__all__ = [
    "ADDED_COLUMNS",
    "DELIVERY_STATES",
    "FINAL_JOB_STATES",
    "JOB_STATES",
    "NOT_ANALYSED_KEY",
    "SERIES_STATES",
    "Base",
    "Delivery",
    "DeliveryRow",
    "DriftSnapshotRow",
    "EventRow",
    "Job",
    "JobOutputRow",
    "JobRow",
    "QueryMixin",
    "ScoredHipRow",
    "SeriesRow",
    "ShadowBundleId",
    "ShadowResult",
    "ShadowResultRow",
]
