"""Scoring a labelled cohort with a bundle (`onfh-dlr evaluate`): the deployed path.

Each series is loaded, its hips' ROIs come from the cohort's Mask (a DICOM-SEG) or, when
the Mask is absent or empty, from auto-segmentation, and the bundle scores them with
its fixed thresholds. Nothing is refitted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from model_bundle.evaluation import evaluate_split
from model_bundle.features import SeriesJob, series_rois
from model_bundle.series import load_series
from model_bundle.serving import BundleModel
from model_bundle.training import MODEL_KEYS
from onfh_dlr.errors import OnfhError
from onfh_dlr.pools import process_pool

_MODEL: BundleModel | None = None


def _init(bundle_dir: Path, threads: int | None) -> None:
    global _MODEL
    _MODEL = BundleModel.load(bundle_dir, threads=threads)


def score_job(model: BundleModel, job: SeriesJob) -> list[dict[str, str]]:
    """One predictions row per hip of a series; a hip that cannot be scored keeps a reason."""
    base = [
        {
            "PatientID": h.get("PatientID", ""),
            "Side": h.get("Side", ""),
            "Label": h.get("Label", ""),
        }
        for h in job.hips
    ]
    try:
        series = load_series(job.image)
        rois = series_rois(series, job.mask)
    except OnfhError as exc:
        return [row | {"reason": f"{type(exc).__name__}: {exc}"} for row in base]
    out = []
    for row in base:
        roi = next((r for s, r in rois.items() if s == row["Side"]), None)
        if roi is None:
            out.append(row | {"reason": f"no ROI for side {row['Side']!r}"})
            continue
        try:
            pred = model.predict_hip(series, roi)
        except OnfhError as exc:
            out.append(row | {"reason": f"{type(exc).__name__}: {exc}"})
            continue
        out.append(
            row
            | {f"prob_{k}": f"{v:.6f}" for k, v in pred.probabilities.items()}
            | {"call": str(pred.call), "roi_source": pred.roi_source, "reason": ""}
        )
    return out


def _score(job: SeriesJob) -> list[dict[str, str]]:
    assert _MODEL is not None
    return score_job(_MODEL, job)


def score_cohort(
    bundle_dir: Path,
    jobs: Sequence[SeriesJob],
    *,
    workers: int = 1,
    on_job: Callable[[list[dict[str, str]]], None] | None = None,
) -> list[dict[str, str]]:
    """Score every hip of every job with the bundle, ``workers`` processes."""
    rows: list[dict[str, str]] = []
    if workers <= 1:
        _init(bundle_dir, None)
        for job in jobs:
            done = _score(job)
            rows += done
            if on_job is not None:
                on_job(done)
        return rows
    # One torch thread per process: two OpenMP pools on two cores slow each other down.
    with process_pool(workers, _init, (bundle_dir, 1)) as pool:
        for done in pool.map(_score, jobs):
            rows += done
            if on_job is not None:
                on_job(done)
    return rows


def cohort_metrics(rows: Sequence[dict[str, str]], thresholds: dict[str, float]) -> dict[str, Any]:
    """The paper's metrics on the scored hips (labelled rows with probabilities only)."""
    scored = [r for r in rows if r.get("prob_dlr") and r.get("Label") in ("0", "1")]
    not_scored = [
        {"PatientID": r["PatientID"], "Side": r["Side"], "reason": r.get("reason", "")}
        for r in rows
        if not r.get("prob_dlr")
    ]
    if not scored:  # nothing to measure; say so rather than fail
        return {
            "n": 0,
            "n_positive": 0,
            "models": {},
            "delong": [],
            "hips_total": len(rows),
            "hips_not_scored": not_scored,
        }
    y = np.array([int(r["Label"]) for r in scored], dtype=np.int64)
    probs: dict[str, NDArray[np.float64]] = {
        k: np.array([float(r[f"prob_{k}"]) for r in scored], dtype=np.float64)
        for k in MODEL_KEYS
        if k in thresholds
    }
    out = evaluate_split(y, probs, thresholds, external=True)
    out["hips_total"] = len(rows)
    out["hips_not_scored"] = not_scored
    return out


__all__ = ["cohort_metrics", "score_cohort", "score_job"]
