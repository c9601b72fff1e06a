"""The drift records in the state DB and the gauges the listener reads from them."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from onfh_dlr.drift_store import (
    DriftCollector,
    DriftLevel,
    DriftSnapshot,
    InputStats,
    ScoredHip,
    latest_snapshot,
    recent_hips,
    record_scored_hips,
    record_snapshot,
    snapshots,
)
from onfh_dlr.state import StateDB, default_database_url


def _db(tmp_path: Path) -> StateDB:
    db = StateDB(default_database_url(tmp_path))
    db.create_schema()
    return db


def _hip(job: str, side: str, at: float, device: str = "2.25.1") -> ScoredHip:
    return ScoredHip(job, side, device, at, 0.7, 1, {"f": at, "bad": float("nan")})


def test_the_window_is_the_bundles_last_hips_oldest_first_and_a_rerun_adds_none(
    tmp_path: Path,
) -> None:
    db = _db(tmp_path)
    record_scored_hips(db, [_hip(f"job{i}", "right", float(i)) for i in range(5)])
    record_scored_hips(db, [_hip("job4", "right", 99.0)])  # a redelivered job
    record_scored_hips(db, [_hip("other", "left", 50.0, device="2.25.2")])
    window = recent_hips(db, "2.25.1", 3)
    assert [h.job_id for h in window] == ["job2", "job3", "job4"]
    assert window[-1].inputs == {"f": 4.0}  # the first record kept; NaN left out
    assert [h.job_id for h in recent_hips(db, "2.25.2", 10)] == ["other"]


def test_the_collector_exports_the_latest_snapshot_and_no_score_without_enough_data(
    tmp_path: Path,
) -> None:
    db = _db(tmp_path)
    registry = CollectorRegistry()
    registry.register(DriftCollector(db))
    assert b"onfh_drift" not in generate_latest(registry)  # nothing scored yet
    record_snapshot(
        db, DriftSnapshot(1.0, "2.25.1", 4, DriftLevel.NOT_ENOUGH_DATA, None, 0.5, 0.3, None)
    )
    text = generate_latest(registry).decode()
    assert "onfh_drift_window_hips 4.0" in text
    assert "onfh_drift_score" not in text
    record_snapshot(
        db,
        DriftSnapshot(
            2.0,
            "2.25.1",
            30,
            DriftLevel.DRIFT,
            0.75,
            1.0,
            0.3,
            1e-9,
            {"original_glcm_Contrast": InputStats(1.2, 0.8, 1e-5, True)},
        ),
    )
    text = generate_latest(registry).decode()
    assert "onfh_drift_score 0.75" in text
    assert 'onfh_drift_input_psi{input="original_glcm_Contrast"} 1.2' in text
    assert "onfh_positive_rate_window 1.0" in text
    assert "onfh_positive_rate_expected 0.3" in text
    assert latest_snapshot(db) == snapshots(db)[-1]
    assert [s.level for s in snapshots(db)] == [DriftLevel.NOT_ENOUGH_DATA, DriftLevel.DRIFT]
