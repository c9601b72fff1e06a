"""Shadow bundles and re-scoring: other bundles scoring the same hips, delivering nothing.

Shadow mode (``ONFH_SHADOW_BUNDLES``)
    The worker loads each candidate bundle at start (:func:`load_shadow_bundles`, beside
    the deployed one). After a study is scored and its outputs recorded,
    :func:`score_shadows` scores the *same* ROIs with each shadow's
    :meth:`~model_bundle.serving.BundleModel.predict` (no second ROI search) and records
    per hip the shadow's probability and call beside the deployed ones
    (:meth:`~onfh_dlr.state.StateDB.record_shadow`), counts agreement in the metrics and
    sends nothing anywhere. A shadow that fails is logged and recorded as failed for the
    study's hips; it never fails the job.

Re-scoring (``onfh-dlr rescore``)
    :func:`score_hips` scores a spooled series' hips with any bundle (the ROI search as
    the deployed path does it), and :func:`compare_text` says old against new for the
    job's timeline.

Imported by :mod:`worker.jobs` and :mod:`onfh_dlr.cli.rescore` only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from onfh_dlr.metrics import SHADOW_AGREEMENT, SHADOW_HIPS, SHADOW_WINDOW
from onfh_dlr.state import Job, ShadowBundleId, ShadowResult, StateDB

if TYPE_CHECKING:
    from model_bundle.imaging import Side
    from model_bundle.serving import BundleModel, HipPrediction
    from worker.pipeline import ScoredStudy

log = logging.getLogger(__name__)


def bundle_id(model: BundleModel) -> ShadowBundleId:
    """The bundle's name, version and Device UID."""
    manifest = model.bundle.manifest
    return ShadowBundleId(manifest.name, manifest.version, manifest.device_uid)


def load_shadow_bundles(directories: Sequence[Path], *, threads: int = 1) -> list[BundleModel]:
    """Load and verify each shadow bundle; one that does not load is logged and left out.

    A broken candidate must not stop the worker serving the deployed bundle.
    """
    from model_bundle.serving import BundleModel

    loaded = []
    for directory in directories:
        try:
            model = BundleModel.load(directory, threads=threads, deployed_only=True)
        except Exception:  # any failure to load leaves this candidate out, loudly
            log.exception("shadow bundle %s not loaded; the worker runs without it", directory)
            continue
        ident = bundle_id(model)
        log.info("shadow bundle %s %s loaded (%s)", ident.name, ident.version, directory)
        loaded.append(model)
    return loaded


def score_shadows(
    db: StateDB, job: Job, scored: ScoredStudy, shadows: Sequence[BundleModel]
) -> list[ShadowResult]:
    """Score a scored study's ROIs with each shadow bundle and record the results.

    Nothing is delivered. Any failure (a shadow's prediction, the database) is logged
    and, where the database allows, recorded; it is never raised.
    """
    if not shadows or scored.series is None or not scored.rois:
        return []
    out: list[ShadowResult] = []
    for model in shadows:
        ident = bundle_id(model)
        now = time.time()
        try:
            predictions = model.predict(scored.series, dict(scored.rois))
            error = ""
        except Exception as exc:  # a shadow's failure must never fail the job
            log.exception("job %s: shadow bundle %s %s failed", job.id, ident.name, ident.version)
            predictions, error = {}, f"{type(exc).__name__}: {exc}"
        results = [
            _result(job, side, ident, predictions.get(side), scored.predictions.get(side), now)
            if not error
            else _failed(job, side, ident, scored.predictions.get(side), now, error)
            for side in sorted(scored.rois)
        ]
        try:
            db.record_shadow(results, event=_event_text(ident, results))
        except Exception:  # the job's own result is recorded already: keep it
            log.exception("job %s: shadow results of %s not recorded", job.id, ident.name)
            continue
        _count(db, ident, results)
        out.extend(results)
    return out


def _result(
    job: Job,
    side: Side,
    ident: ShadowBundleId,
    shadow: HipPrediction | None,
    deployed: HipPrediction | None,
    now: float,
) -> ShadowResult:
    if shadow is None:
        return _failed(job, side, ident, deployed, now, "the shadow did not score this hip")
    return ShadowResult(
        job_id=job.id,
        series_uid=job.series_uid,
        side=side.value,
        bundle=ident,
        probability=shadow.probability,
        call=shadow.call,
        deployed_probability=None if deployed is None else deployed.probability,
        deployed_call=None if deployed is None else deployed.call,
        scored_at=now,
    )


def _failed(
    job: Job,
    side: Side,
    ident: ShadowBundleId,
    deployed: HipPrediction | None,
    now: float,
    error: str,
) -> ShadowResult:
    return ShadowResult(
        job_id=job.id,
        series_uid=job.series_uid,
        side=side.value,
        bundle=ident,
        probability=None,
        call=None,
        deployed_probability=None if deployed is None else deployed.probability,
        deployed_call=None if deployed is None else deployed.call,
        error=error,
        scored_at=now,
    )


def _outcome(result: ShadowResult) -> str:
    agrees = result.agrees
    return "failed" if agrees is None else "agree" if agrees else "disagree"


def _count(db: StateDB, ident: ShadowBundleId, results: Sequence[ShadowResult]) -> None:
    labels = (ident.name, ident.version, ident.device_uid)
    for result in results:
        SHADOW_HIPS.labels(*labels, _outcome(result)).inc()
    # From the database, not this process's memory: every worker process sets the same
    # value from the same rows.
    window = [
        r.agrees
        for r in db.shadow_results(device_uid=ident.device_uid, limit=SHADOW_WINDOW * 2)
        if r.agrees is not None
    ][:SHADOW_WINDOW]
    if window:
        SHADOW_AGREEMENT.labels(*labels).set(sum(window) / len(window))


def _call_word(call: int | None) -> str:
    return "-" if call is None else "positive" if call else "negative"


def _event_text(ident: ShadowBundleId, results: Sequence[ShadowResult]) -> str:
    parts = []
    for r in results:
        if r.probability is None:
            parts.append(f"{r.side}: failed ({r.error})")
        else:
            parts.append(f"{r.side}: p={r.probability:.3f} {_call_word(r.call)} ({_outcome(r)})")
    return f"shadow {ident.name} {ident.version}: " + "; ".join(parts)


# --- re-scoring --------------------------------------------------------------------------


def score_hips(
    series_dir: Path, seg_path: Path | None, model: BundleModel
) -> Mapping[Side, HipPrediction]:
    """Score a spooled series' hips with ``model``: ROIs from its SEG, else auto-segmented.

    Raises
    ------
    onfh_dlr.errors.SeriesError, FemoralHeadNotFoundError, SegmentationError
        As :func:`worker.pipeline.score_series`.
    """
    from model_bundle.features import series_rois
    from model_bundle.imaging import load_series
    from onfh_dlr.errors import FemoralHeadNotFoundError

    series = load_series(series_dir)
    found = series_rois(series, seg_path)
    if not found.rois:
        raise next(iter(found.failures.values()), FemoralHeadNotFoundError("no femoral head"))
    return model.predict(series, found.rois)


def compare_text(
    ident: ShadowBundleId,
    old: Mapping[str, Mapping[str, object]],
    new: Mapping[Side, HipPrediction],
) -> str:
    """``rescored with <name> <version>: R p=old→new (call)…`` for the job's timeline.

    ``old`` is the job result's ``hips`` (by side value); a hip it lacks shows ``-``.
    """
    parts = []
    for side, prediction in sorted(new.items()):
        before = old.get(side.value, {})
        p_old = before.get("probability")
        old_text = (
            f"{p_old:.3f} {_call_word(_int(before.get('call')))}"
            if isinstance(p_old, float)
            else "-"
        )
        parts.append(
            f"{side.value}: {old_text} -> {prediction.probability:.3f} "
            f"{_call_word(prediction.call)}"
        )
    return f"rescored with {ident.name} {ident.version}: " + "; ".join(parts)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) else None


__all__ = [
    "bundle_id",
    "compare_text",
    "load_shadow_bundles",
    "score_hips",
    "score_shadows",
]
