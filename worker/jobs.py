"""What a worker does with a job, as plain functions (the Celery tasks are thin shells).

``score_job`` claims a job in the state DB, scores its series with the bundle, writes the
SR and SEG under ``<data_dir>/outputs`` and records them; ``deliver_job`` sends them to
every destination that does not have them yet. Both are idempotent: a redelivered message
finds the job's state in the database and either does nothing or finishes what is left,
and the outputs' UIDs and contents are derived from the job, so a re-run after a crash
writes the same SR, never a second, different one.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from onfh_dlr.errors import DeliveryError, OnfhError, PermanentError
from onfh_dlr.metrics import BUNDLE, DELIVERIES, JOBS_FINISHED, STAGE_SECONDS
from onfh_dlr.settings import Settings
from onfh_dlr.state import StateDB
from worker.delivery import backoff_delay, send_files

if TYPE_CHECKING:
    from model_bundle.serving import BundleModel

log = logging.getLogger(__name__)

ScoreOutcome = Literal["nothing_to_do", "failed", "scored", "superseded"]


def default_bundle_dir() -> Path:
    """The shipped demo bundle (synthetic; its outputs say "not for clinical use")."""
    import model_bundle

    return Path(model_bundle.__file__).parent / "demo"


@dataclass
class WorkerContext:
    """What the worker's functions need: settings, state DB and the (lazily) loaded bundle."""

    settings: Settings
    db: StateDB
    _model: BundleModel | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def outputs_dir(self) -> Path:
        return self.settings.data_dir / "outputs"

    @property
    def bundle_dir(self) -> Path:
        return self.settings.bundle or default_bundle_dir()

    def model(self) -> BundleModel:
        """The bundle, verified and loaded once per process."""
        with self._lock:
            if self._model is None:
                from model_bundle.serving import BundleModel

                self._model = BundleModel.load(self.bundle_dir, threads=1)
                manifest = self._model.bundle.manifest
                BUNDLE.labels(manifest.name, manifest.version, manifest.device_uid).set(1)
                log.info("bundle %s %s loaded", manifest.name, manifest.version)
            return self._model


def score_job(ctx: WorkerContext, job_id: str) -> ScoreOutcome:
    """Score one job's series and record its SR and SEG.

    Permanent problems (no femoral head, bad geometry, unreadable SEG) end the job as
    ``failed`` with the reason; transient ones (database, disk) propagate for a retry.
    """
    from worker.pipeline import score_series, write_outputs

    job = ctx.db.start_job(job_id, max_attempts=ctx.settings.max_attempts)
    if job is None:
        log.info("job %s: nothing to do (finished, superseded or unknown)", job_id)
        return "nothing_to_do"
    if job.state == "failed":  # its earlier attempts all died with their worker
        log.warning("job %s failed: %s", job_id, job.reason)
        JOBS_FINISHED.labels("failed").inc()
        return "failed"
    if job.state == "scored":  # a crash between scoring and sending the delivery task
        return "scored"
    if job.started_at is not None:
        STAGE_SECONDS.labels("queue").observe(max(0.0, job.started_at - job.created_at))
    try:
        scored = score_series(
            job.series_dir,
            ctx.model(),
            seg=job.seg_path,
            uid_seed=job.id,
            previous_sr=ctx.db.previous_sr(job),
            content_time=job.created_at,
        )
    except PermanentError as exc:
        reason = f"{type(exc).__name__}: {exc}"
        log.warning("job %s failed: %s", job_id, reason)
        ctx.db.fail_job(job_id, reason)
        JOBS_FINISHED.labels("failed").inc()
        return "failed"
    except OnfhError:
        raise
    except Exception as exc:
        # A bug or an input no check caught: fail the job with the reason instead of
        # letting the broker redeliver it forever.
        log.exception("job %s: unexpected error", job_id)
        ctx.db.fail_job(job_id, f"internal error: {type(exc).__name__}: {exc}")
        JOBS_FINISHED.labels("failed").inc()
        return "failed"
    out_dir = ctx.outputs_dir / job.study_uid / job.id
    sr_path, seg_path = write_outputs(scored, out_dir)
    recorded = ctx.db.job_scored(
        job_id,
        sr_path=sr_path,
        seg_path=seg_path,
        sr_uid=str(scored.sr_dataset.SOPInstanceUID),
        result=_summary(scored),
        destinations=[str(d) for d in ctx.settings.destinations],
    )
    if recorded and job.started_at is not None:
        STAGE_SECONDS.labels("score").observe(max(0.0, time.time() - job.started_at))
    return "scored" if recorded else "superseded"


def _summary(scored: Any) -> dict[str, Any]:
    hips = {
        side: {
            "probability": p.probability,
            "score": p.score,
            "threshold": p.threshold,
            "call": p.call,
            "model": p.deployed_model,
            "roi_source": p.roi_source,
            "roi": p.roi_description,
        }
        for side, p in scored.predictions.items()
    }
    return {
        "hips": hips,
        "sr_uid": str(scored.sr_dataset.SOPInstanceUID),
        "seg_uid": str(scored.seg_dataset.SOPInstanceUID),
    }


@dataclass(frozen=True)
class DeliveryRound:
    """The outcome of one delivery round of a job."""

    state: str  # the job's state afterwards: scored (retry later), done, dead_letter
    pending: tuple[str, ...]  # destinations still to try
    retry_in: float | None  # seconds until the next round, when any are pending


def deliver_job(ctx: WorkerContext, job_id: str) -> DeliveryRound:
    """Try every destination of a scored job that does not have its results yet.

    A destination that fails is retried with exponential backoff
    (:func:`~worker.delivery.backoff_delay`) up to ``delivery_retries`` times, then put in
    the dead-letter state, which an operator can retry (``onfh-dlr retry``).
    """
    job = ctx.db.job(job_id)
    if job is None or job.state not in ("scored",):
        return DeliveryRound(job.state if job else "unknown", (), None)
    assert job.sr_path is not None and job.seg_out_path is not None
    by_name = {str(d): d for d in ctx.settings.destinations}
    pending: list[str] = []
    attempts: list[int] = []
    for delivery in ctx.db.deliveries(job_id):
        if delivery.state != "pending":
            continue
        dest = by_name.get(delivery.destination)
        if dest is None:
            ctx.db.delivery_attempted(
                job_id, delivery.destination, ok=False, error="no longer configured", final=True
            )
            continue
        try:
            send_files(
                dest,
                [job.seg_out_path, job.sr_path],
                calling_ae=ctx.settings.ae_title,
                token=ctx.settings.dicomweb_destination_token,
            )
        except (DeliveryError, PermanentError) as exc:
            final = delivery.attempts + 1 > ctx.settings.delivery_retries or isinstance(
                exc, PermanentError
            )
            ctx.db.delivery_attempted(
                job_id, delivery.destination, ok=False, error=str(exc), final=final
            )
            DELIVERIES.labels(delivery.destination, "dead_letter" if final else "retry").inc()
            log.warning(
                "job %s: delivery to %s failed (%s)%s",
                job_id,
                dest,
                exc,
                " - dead letter" if final else "",
            )
            if not final:
                pending.append(delivery.destination)
                attempts.append(delivery.attempts + 1)
        else:
            ctx.db.delivery_attempted(job_id, delivery.destination, ok=True)
            DELIVERIES.labels(delivery.destination, "delivered").inc()
    state = ctx.db.settle_job(job_id)
    if state in ("done", "dead_letter"):
        JOBS_FINISHED.labels(state).inc()
    if state == "done":
        now = time.time()
        if job.scored_at is not None:
            STAGE_SECONDS.labels("deliver").observe(max(0.0, now - job.scored_at))
        STAGE_SECONDS.labels("total").observe(max(0.0, now - job.created_at))
    retry_in = (
        backoff_delay(
            min(attempts), base=ctx.settings.delivery_backoff, cap=ctx.settings.delivery_backoff_max
        )
        if pending
        else None
    )
    return DeliveryRound(state, tuple(pending), retry_in)


__all__ = [
    "DeliveryRound",
    "ScoreOutcome",
    "WorkerContext",
    "default_bundle_dir",
    "deliver_job",
    "score_job",
]
