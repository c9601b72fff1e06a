"""The drift check's records in the state DB, and the Prometheus gauges read from them.

The worker records each hip it scores (:func:`record_scored_hips`: the deployed model's
inputs, its series' acquisition parameters, probability, call, the bundle's Device UID,
the time), reads back the rolling
window (:func:`recent_hips`), and records the window's drift after each job
(:func:`record_snapshot`; the numbers are :mod:`model_bundle.monitoring`'s). The
listener's ``/metrics`` exports the latest snapshot at scrape time
(:class:`DriftCollector`) and its status page plots the snapshots over time
(:func:`snapshots`). Nothing here identifies a patient: hips are keyed by job id.

Kernel module (standard library, SQLAlchemy, prometheus-client): used by the worker, the
listener and tests. The tables are :mod:`onfh_dlr.state_rows`' ``ScoredHipRow`` and
``DriftSnapshotRow``.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import select

from onfh_dlr.errors import StateDBError
from onfh_dlr.metrics import (
    DRIFT_INPUT_PSI,
    DRIFT_SCORE,
    DRIFT_WINDOW_HIPS,
    POSITIVE_RATE_EXPECTED,
    POSITIVE_RATE_PVALUE,
    POSITIVE_RATE_WINDOW,
)
from onfh_dlr.state import StateDB
from onfh_dlr.state_rows import DriftSnapshotRow, ScoredHipRow


class DriftLevel(enum.StrEnum):
    """What a window's drift score says (the values of
    :class:`model_bundle.monitoring.DriftState`, which the kernel may not import)."""

    NOT_ENOUGH_DATA = "not_enough_data"
    NO_DRIFT = "no_drift"
    WATCH = "watch"
    DRIFT = "drift"


@dataclass(frozen=True)
class ScoredHip:
    """One scored hip as the drift window reads it."""

    job_id: str
    side: str
    device_uid: str
    scored_at: float
    probability: float
    call: int
    inputs: Mapping[str, float]
    # The series' numeric acquisition parameters (AcquisitionField values as names).
    acquisition: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class InputStats:
    """One input's drift statistics in a snapshot (a model input or an acquisition
    parameter; ``shifted`` as :class:`model_bundle.monitoring.InputDrift` defines it)."""

    psi: float
    ks: float
    ks_p: float
    shifted: bool


@dataclass(frozen=True)
class DriftSnapshot:
    """The rolling window's drift after one scored job.

    ``score`` is ``None`` when the window had too few hips (``level`` NOT_ENOUGH_DATA).
    """

    at: float
    device_uid: str
    hips: int
    level: DriftLevel
    score: float | None
    positive_rate: float | None
    expected_rate: float | None
    rate_pvalue: float | None
    inputs: Mapping[str, InputStats] = field(default_factory=dict)


def _finite(values: Mapping[str, float]) -> dict[str, float]:
    # JSON has no NaN: a feature that could not be computed is left out of the window.
    return {k: float(v) for k, v in values.items() if math.isfinite(v)}


def record_scored_hips(db: StateDB, hips: Sequence[ScoredHip]) -> None:
    """Record scored hips; a hip already recorded (a redelivered job) is left as it is."""
    with db.session() as s:
        for hip in hips:
            exists = s.scalar(
                select(ScoredHipRow.id).where(
                    ScoredHipRow.job_id == hip.job_id,
                    ScoredHipRow.side == hip.side,
                    ScoredHipRow.device_uid == hip.device_uid,
                )
            )
            if exists is not None:
                continue
            s.add(
                ScoredHipRow(
                    job_id=hip.job_id,
                    side=hip.side,
                    device_uid=hip.device_uid,
                    scored_at=hip.scored_at,
                    probability=hip.probability,
                    call=hip.call,
                    inputs_json=json.dumps(_finite(hip.inputs), sort_keys=True),
                    acquisition_json=json.dumps(_finite(hip.acquisition), sort_keys=True),
                )
            )


def recent_hips(db: StateDB, device_uid: str, limit: int) -> list[ScoredHip]:
    """The last ``limit`` hips the bundle ``device_uid`` scored, oldest first."""
    with db.session() as s:
        rows = s.scalars(
            select(ScoredHipRow)
            .where(ScoredHipRow.device_uid == device_uid)
            .order_by(ScoredHipRow.scored_at.desc(), ScoredHipRow.id.desc())
            .limit(limit)
        ).all()
        hips = [
            ScoredHip(
                r.job_id,
                r.side,
                r.device_uid,
                r.scored_at,
                r.probability,
                r.call,
                json.loads(r.inputs_json or "{}"),
                json.loads(r.acquisition_json or "{}"),
            )
            for r in rows
        ]
    return hips[::-1]


def record_snapshot(db: StateDB, snapshot: DriftSnapshot) -> None:
    """Record the window's drift after a job."""
    inputs = {
        name: {"psi": i.psi, "ks": i.ks, "ks_p": i.ks_p, "shifted": i.shifted}
        for name, i in snapshot.inputs.items()
    }
    with db.session() as s:
        s.add(
            DriftSnapshotRow(
                at=snapshot.at,
                device_uid=snapshot.device_uid,
                hips=snapshot.hips,
                state=snapshot.level.value,
                score=snapshot.score,
                positive_rate=snapshot.positive_rate,
                expected_rate=snapshot.expected_rate,
                rate_pvalue=snapshot.rate_pvalue,
                inputs_json=json.dumps(inputs, sort_keys=True),
            )
        )


def _snapshot(row: DriftSnapshotRow) -> DriftSnapshot:
    raw = json.loads(row.inputs_json or "{}")
    return DriftSnapshot(
        at=row.at,
        device_uid=row.device_uid,
        hips=row.hips,
        level=DriftLevel(row.state),
        score=row.score,
        positive_rate=row.positive_rate,
        expected_rate=row.expected_rate,
        rate_pvalue=row.rate_pvalue,
        inputs={
            name: InputStats(float(v["psi"]), float(v["ks"]), float(v["ks_p"]), bool(v["shifted"]))
            for name, v in raw.items()
        },
    )


def snapshots(db: StateDB, *, limit: int = 200) -> list[DriftSnapshot]:
    """The latest ``limit`` snapshots (every bundle's), oldest first."""
    with db.session() as s:
        rows = s.scalars(
            select(DriftSnapshotRow)
            .order_by(DriftSnapshotRow.at.desc(), DriftSnapshotRow.id.desc())
            .limit(limit)
        ).all()
        out = [_snapshot(r) for r in rows]
    return out[::-1]


def latest_snapshot(db: StateDB) -> DriftSnapshot | None:
    """The newest snapshot, or ``None`` before any job was scored."""
    latest = snapshots(db, limit=1)
    return latest[0] if latest else None


class DriftCollector(Collector):
    """The latest drift snapshot as gauges, read from the state DB at each scrape.

    Read at scrape time like the job counts: every worker writes snapshots to the one
    database, so any listener reports the newest window whichever worker scored last,
    and NumPy/SciPy stay out of the listener. Without enough data the score and
    per-input gauges are absent (not zero: "no number" is not "no drift"); the window's
    size and rates are still exported. A database that cannot be read leaves them out.
    """

    def __init__(self, db: StateDB) -> None:
        self.db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            snap = latest_snapshot(self.db)
        except StateDBError:
            return
        if snap is None:
            return
        yield GaugeMetricFamily(
            DRIFT_WINDOW_HIPS, "Scored hips in the drift window.", value=snap.hips
        )
        if snap.positive_rate is not None:
            yield GaugeMetricFamily(
                POSITIVE_RATE_WINDOW,
                "Share of positive calls in the drift window.",
                value=snap.positive_rate,
            )
        if snap.expected_rate is not None:
            yield GaugeMetricFamily(
                POSITIVE_RATE_EXPECTED,
                "The bundle's reference positive-call rate.",
                value=snap.expected_rate,
            )
        if snap.score is None:
            return
        yield GaugeMetricFamily(
            DRIFT_SCORE,
            "Combined drift score of the window (0-1; >= 0.25 watch, >= 0.5 drift).",
            value=snap.score,
        )
        if snap.rate_pvalue is not None:
            yield GaugeMetricFamily(
                POSITIVE_RATE_PVALUE,
                "Binomial p-value of the window's positive calls against the expected rate.",
                value=snap.rate_pvalue,
            )
        per_input = GaugeMetricFamily(
            DRIFT_INPUT_PSI,
            "Population stability index of each model input and acquisition parameter "
            "in the window.",
            labels=["input"],
        )
        for name, stats in sorted(snap.inputs.items()):
            per_input.add_metric([name], stats.psi)
        yield per_input


__all__ = [
    "DriftCollector",
    "DriftLevel",
    "DriftSnapshot",
    "InputStats",
    "ScoredHip",
    "latest_snapshot",
    "recent_hips",
    "record_scored_hips",
    "record_snapshot",
    "snapshots",
]
