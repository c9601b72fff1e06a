"""The worker's part of the drift check: record each scored hip, recompute the window.

After a job is scored (:func:`worker.jobs.score_job`), :func:`record_drift` stores its
hips and their series' acquisition parameters
(:func:`onfh_dlr.drift_store.record_scored_hips`), reads the deployed bundle's last
``ONFH_DRIFT_WINDOW`` hips back, computes their drift against the bundle's reference
statistics (:func:`model_bundle.monitoring.window_drift`) and stores it as a snapshot,
which the listener exports and plots. Here because NumPy and SciPy may be imported by
the worker, not by the listener; after every job because it costs milliseconds and keeps
the exported score as fresh as the last result.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from onfh_dlr.drift_store import (
    DriftLevel,
    DriftSnapshot,
    InputStats,
    ScoredHip,
    recent_hips,
    record_scored_hips,
    record_snapshot,
)
from onfh_dlr.settings import Settings
from onfh_dlr.state import StateDB

if TYPE_CHECKING:
    from model_bundle.imaging import Side
    from model_bundle.serving import BundleModel, HipPrediction

log = logging.getLogger(__name__)


def series_acquisition(series_dir: Path) -> dict[str, float]:
    """The numeric acquisition parameters of the series in ``series_dir`` (first file's
    header, as :func:`model_bundle.imaging.acquisition_of` reads a loaded series)."""
    import pydicom

    from model_bundle.imaging import acquisition_from_dataset

    first = min(series_dir.glob("*.dcm"), default=None)
    if first is None:
        return {}
    dataset = pydicom.dcmread(first, stop_before_pixels=True)
    numeric = acquisition_from_dataset(dataset).numeric()
    return {f.value: float(v) for f, v in numeric.items() if v is not None}


def record_drift(
    settings: Settings,
    db: StateDB,
    model: BundleModel,
    job_id: str,
    series_dir: Path,
    predictions: dict[Side, HipPrediction],
) -> DriftSnapshot | None:
    """Record a scored job's hips and the window's drift afterwards.

    Returns the snapshot, or ``None`` when the bundle has no reference statistics (its
    hips are still recorded: a later bundle cannot use them, but they show what was seen).
    """
    from model_bundle.monitoring import window_drift

    device_uid = model.bundle.manifest.device_uid
    now = time.time()
    acquisition = series_acquisition(series_dir)
    record_scored_hips(
        db,
        [
            ScoredHip(
                job_id, side.value, device_uid, now, p.probability, p.call, p.inputs, acquisition
            )
            for side, p in predictions.items()
        ],
    )
    if model.reference is None:
        return None
    window = recent_hips(db, device_uid, settings.drift_window)
    result = window_drift(
        model.reference,
        [hip.inputs for hip in window],
        [hip.call for hip in window],
        min_hips=settings.drift_min_hips,
        # One row per series: the reference counts series, and both hips share one.
        acquisitions=list({hip.job_id: hip.acquisition for hip in window}.values()),
    )
    snapshot = DriftSnapshot(
        at=now,
        device_uid=device_uid,
        hips=result.hips,
        level=DriftLevel(result.state.value),
        score=result.score,
        positive_rate=result.positive_rate,
        expected_rate=result.expected_rate,
        rate_pvalue=result.rate_pvalue,
        inputs={
            i.name: InputStats(i.psi, i.ks_statistic, i.ks_pvalue, i.shifted) for i in result.inputs
        },
    )
    record_snapshot(db, snapshot)
    log.info(
        "drift after job %s: %s hips, %s (score %s)",
        job_id,
        result.hips,
        result.state.value,
        "-" if result.score is None else f"{result.score:.3f}",
    )
    return snapshot


__all__ = ["record_drift"]
