"""Radiologists' verdicts in the state database (issue 15, IHE AIRA).

Two tables of their own (``create_schema`` creates them in an existing database): one row
per assessment SR received, recorded or not and why; one row per hip it judged. The
queries are a mixin of :class:`~onfh_dlr.state.StateDB` (import the names from
:mod:`onfh_dlr.state`); :mod:`listener.verdicts` parses the SRs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from sqlalchemy import (
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    delete,
    select,
)
from sqlalchemy.orm import Mapped, mapped_column

from onfh_dlr.errors import StateDBError
from onfh_dlr.state_rows import (
    Base,
    EventRow,
    Job,
    JobRow,
    QueryMixin,
)

# --- verdicts (issue 15: radiologists' assessments of our results, IHE AIRA) -----------
# Two tables of their own (``create_schema`` creates them in an existing database): one
# row per assessment SR received, recorded or not and why; one row per hip it judged.


class Verdict(StrEnum):
    """A radiologist's assessment of one AI result (IHE AIRA: accept, reject, modify)."""

    ACCEPT = "accept"
    REJECT = "reject"
    MODIFY = "modify"


class AssessmentState(StrEnum):
    """Whether an assessment SR's verdicts were recorded."""

    RECORDED = "recorded"
    NOT_RECORDED = "not_recorded"


class AssessmentRow(Base):
    """One assessment SR received (kept in the spool whether or not it was recorded)."""

    __tablename__ = "assessments"

    sop_instance_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), default="")
    path: Mapped[str] = mapped_column(Text, default="")
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    referenced_sr_uid: Mapped[str] = mapped_column(String(64), default="")
    job_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    observer: Mapped[str] = mapped_column(String(64), default="")
    received_at: Mapped[float] = mapped_column(Float, index=True)
    # When retention removed the SR's file (its verdicts stay recorded); None: still kept.
    purged_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class VerdictRow(Base):
    """One hip's verdict in an assessment, with the model's call and identity it judged."""

    __tablename__ = "verdicts"
    __table_args__ = (UniqueConstraint("assessment_uid", "side"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    assessment_uid: Mapped[str] = mapped_column(
        ForeignKey("assessments.sop_instance_uid"), index=True
    )
    job_id: Mapped[str] = mapped_column(String(36), index=True)
    sr_uid: Mapped[str] = mapped_column(String(64))
    side: Mapped[str] = mapped_column(String(1))  # "L" | "R", as Job.result["hips"]
    verdict: Mapped[str] = mapped_column(String(8))
    radiologist_call: Mapped[int] = mapped_column(Integer)  # 1: ONFH present
    model_call: Mapped[int] = mapped_column(Integer)
    model_name: Mapped[str] = mapped_column(String(64), default="")
    model_version: Mapped[str] = mapped_column(String(64), default="")
    device_uid: Mapped[str] = mapped_column(String(64), default="")
    assessed_at: Mapped[float] = mapped_column(Float)


@dataclass(frozen=True)
class ModelIdentity:
    """The bundle that produced a result: name, version and Device UID."""

    name: str
    version: str
    device_uid: str


@dataclass(frozen=True)
class HipVerdict:
    """A radiologist's verdict on one hip's result, with what the model had said.

    ``radiologist_call`` is the radiologist's call (True: early ONFH present), explicit
    or implied by the verdict (accept: the model's call; reject: its opposite).
    """

    side: str  # "L" | "R"
    verdict: Verdict
    radiologist_call: bool
    model_call: bool

    @property
    def agrees(self) -> bool:
        return self.radiologist_call == self.model_call


@dataclass(frozen=True)
class RecordedVerdict:
    """A stored verdict, as read back (for the status page and ``feedback export``)."""

    assessment_uid: str
    job_id: str
    sr_uid: str
    hip: HipVerdict
    model: ModelIdentity
    observer: str
    assessed_at: float


@dataclass(frozen=True)
class Assessment:
    """A received assessment SR as recorded: its state and, when not recorded, why."""

    sop_instance_uid: str
    study_uid: str
    path: Path
    calling_ae: str
    referenced_sr_uid: str
    job_id: str | None
    state: AssessmentState
    reason: str
    observer: str
    received_at: float


def _assessment(row: AssessmentRow) -> Assessment:
    return Assessment(
        sop_instance_uid=row.sop_instance_uid,
        study_uid=row.study_uid,
        path=Path(row.path),
        calling_ae=row.calling_ae,
        referenced_sr_uid=row.referenced_sr_uid,
        job_id=row.job_id,
        state=AssessmentState(row.state),
        reason=row.reason,
        observer=row.observer,
        received_at=row.received_at,
    )


# --- end of verdicts (rows) -------------------------------------------------------------


class VerdictQueries(QueryMixin):
    """The verdict queries of :class:`~onfh_dlr.state.StateDB`."""

    # --- verdicts (issue 15: radiologists' assessments, IHE AIRA) ---------------------

    def job_for_sr(self, sr_uid: str) -> Job | None:
        """The job whose SR has SOP Instance UID ``sr_uid`` (ours), or None."""
        with self.session() as s:
            row = s.scalars(select(JobRow).where(JobRow.sr_uid == sr_uid).limit(1)).first()
            return Job.from_row(row) if row is not None else None

    def assessment(self, sop_instance_uid: str) -> Assessment | None:
        with self.session() as s:
            row = s.get(AssessmentRow, sop_instance_uid)
            return _assessment(row) if row is not None else None

    def record_assessment(
        self,
        assessment: Assessment,
        verdicts: Sequence[HipVerdict] = (),
        *,
        model: ModelIdentity | None = None,
        sr_uid: str = "",
        assessed_at: float | None = None,
    ) -> None:
        """Store an assessment SR and its hips' verdicts (replacing a re-sent one's).

        Verdicts never change a job's state: they are recorded beside it, and an event on
        the job's series timeline says so.
        """
        if verdicts and (assessment.job_id is None or model is None):
            raise StateDBError("verdicts need the job and the model they judge")
        with self.session() as s:
            s.execute(
                delete(VerdictRow).where(VerdictRow.assessment_uid == assessment.sop_instance_uid)
            )
            row = s.get(AssessmentRow, assessment.sop_instance_uid)
            if row is None:
                row = AssessmentRow(sop_instance_uid=assessment.sop_instance_uid)
                s.add(row)
            row.study_uid = assessment.study_uid
            row.path = str(assessment.path)
            row.calling_ae = assessment.calling_ae
            row.referenced_sr_uid = assessment.referenced_sr_uid
            row.job_id = assessment.job_id
            row.state = assessment.state.value
            row.reason = assessment.reason
            row.observer = assessment.observer
            row.received_at = assessment.received_at
            row.purged_at = None  # (re-)received: its file is in the spool again
            s.flush()
            for v in verdicts:
                assert assessment.job_id is not None and model is not None
                s.add(
                    VerdictRow(
                        assessment_uid=assessment.sop_instance_uid,
                        job_id=assessment.job_id,
                        sr_uid=sr_uid,
                        side=v.side,
                        verdict=v.verdict.value,
                        radiologist_call=int(v.radiologist_call),
                        model_call=int(v.model_call),
                        model_name=model.name,
                        model_version=model.version,
                        device_uid=model.device_uid,
                        assessed_at=assessment.received_at if assessed_at is None else assessed_at,
                    )
                )
            job = s.get(JobRow, assessment.job_id) if assessment.job_id else None
            if job is not None:
                detail = ", ".join(f"{v.side}: {v.verdict.value}" for v in verdicts)
                s.add(
                    EventRow(
                        at=assessment.received_at,
                        series_uid=job.series_uid,
                        job_id=job.id,
                        stage="verdict" if verdicts else "verdict_not_recorded",
                        detail=detail or assessment.reason,
                    )
                )

    def assessments(self, *, limit: int = 50) -> list[Assessment]:
        """The newest assessment SRs received, recorded or not."""
        with self.session() as s:
            rows = s.scalars(
                select(AssessmentRow).order_by(AssessmentRow.received_at.desc()).limit(limit)
            )
            return [_assessment(r) for r in rows]

    def expired_assessments(self, cutoff: float) -> list[Assessment]:
        """Assessment SRs received before ``cutoff`` whose files are still kept."""
        with self.session() as s:
            rows = s.scalars(
                select(AssessmentRow).where(
                    AssessmentRow.received_at < cutoff, AssessmentRow.purged_at.is_(None)
                )
            )
            return [_assessment(r) for r in rows]

    def mark_assessment_purged(self, sop_instance_uid: str, at: float) -> None:
        """Record that retention removed an assessment SR's file at ``at`` (verdicts stay)."""
        with self.session() as s:
            row = s.get(AssessmentRow, sop_instance_uid)
            if row is not None:
                row.purged_at = at

    def verdicts(self) -> list[RecordedVerdict]:
        """Every recorded verdict, oldest first."""
        with self.session() as s:
            rows = s.execute(
                select(VerdictRow, AssessmentRow.observer)
                .join(AssessmentRow, AssessmentRow.sop_instance_uid == VerdictRow.assessment_uid)
                .order_by(VerdictRow.assessed_at, VerdictRow.id)
            )
            return [
                RecordedVerdict(
                    assessment_uid=v.assessment_uid,
                    job_id=v.job_id,
                    sr_uid=v.sr_uid,
                    hip=HipVerdict(
                        side=v.side,
                        verdict=Verdict(v.verdict),
                        radiologist_call=bool(v.radiologist_call),
                        model_call=bool(v.model_call),
                    ),
                    model=ModelIdentity(v.model_name, v.model_version, v.device_uid),
                    observer=observer,
                    assessed_at=v.assessed_at,
                )
                for v, observer in rows
            ]

    # --- end of verdicts ----------------------------------------------------------------
