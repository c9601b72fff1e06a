"""What a worker does with a job, as plain functions (the Celery tasks are thin shells).

``score_job`` claims a job in the state DB, scores its series with the bundle, writes the
SR, SEG and result card under ``<data_dir>/outputs`` and records them; ``deliver_job``
sends each destination the kinds of object it is configured for
(``ONFH_DESTINATION_OBJECTS``) until every destination has them.

A series that cannot be scored for a permanent reason (no femoral head, unusable SEG)
still gets a "could not analyse" SR and card, delivered like a result; the job then
ends ``failed`` with the reason. Only a series that cannot even be loaded (nothing to
write into its study) or an unexpected error fails the job with nothing sent.

A job written for a series the admission rules refused (``ONFH_REPORT_SKIPPED``,
:mod:`onfh_dlr.refusals`) is never scored: its SR and card say "could not analyse:
<the rule's reason>", and it ends ``done`` once they are delivered (the series stays
``skipped``; a refusal is not a failure).

Both functions are idempotent: a redelivered message
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
from onfh_dlr.extra_outputs import record_output
from onfh_dlr.metrics import BUNDLE, DELIVERIES, JOBS_FINISHED, STAGE_SECONDS
from onfh_dlr.refusals import REFUSED_KEY, refused_reason
from onfh_dlr.settings import OutputKind, Settings
from onfh_dlr.state import Job, StateDB
from worker.delivery import backoff_delay, send_files
from worker.drift import record_drift

if TYPE_CHECKING:
    from model_bundle.serving import BundleModel
    from worker.pipeline import ScoredStudy

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
    _shadows: list[BundleModel] | None = None  # ONFH_SHADOW_BUNDLES, see worker.shadow

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

                # Only the deployed model: its call is what the outputs report.
                self._model = BundleModel.load(
                    self.bundle_dir,
                    threads=1,
                    hip_workers=self.settings.hip_workers,
                    deployed_only=True,
                )
                manifest = self._model.bundle.manifest
                BUNDLE.labels(manifest.name, manifest.version, manifest.device_uid).set(1)
                log.info("bundle %s %s loaded", manifest.name, manifest.version)
            return self._model

    def shadows(self) -> list[BundleModel]:
        """The shadow bundles that loaded, once per process (:mod:`worker.shadow`)."""
        from worker.shadow import load_shadow_bundles

        with self._lock:
            if self._shadows is None:
                self._shadows = load_shadow_bundles(self.settings.shadow_bundles)
            return self._shadows


def warm_up(ctx: WorkerContext) -> None:
    """Load what the first study would otherwise load: the bundle and the pipeline's
    modules (highdicom, PyRadiomics), so that it is no slower than the next."""
    import worker.pipeline  # noqa: F401 - the import is the warm-up

    ctx.model()
    ctx.shadows()


def score_job(ctx: WorkerContext, job_id: str) -> ScoreOutcome:
    """Score one job's series and record its SR, SEG and card.

    Permanent problems (no femoral head, bad geometry, unreadable SEG) give "could not
    analyse" outputs, delivered like a result, after which the job ends ``failed`` with
    the reason; transient ones (database, disk) propagate for a retry.
    """
    from model_bundle.imaging import Side
    from worker.pipeline import not_analysed_series, score_series

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
    refused = refused_reason(job)
    if refused is not None:
        # The admission rules refused the series: say why in the study, never score it.
        log.info("job %s: reporting the refusal of series %s", job_id, job.series_uid)
        try:
            scored = not_analysed_series(
                job.series_dir,
                ctx.model(),
                dict.fromkeys((Side.RIGHT, Side.LEFT), refused),
                roi_source="auto" if job.seg_path is None else "seg",
                uid_seed=job.id,
                previous_sr=ctx.db.previous_sr(job),
                content_time=job.created_at,
            )
        except OnfhError as exc:
            if not isinstance(exc, PermanentError):
                raise
            # e.g. a localizer refused as "not coronal" that does not load as a volume.
            log.warning("job %s: refusal not reported, series unusable: %s", job_id, exc)
            ctx.db.fail_job(
                job_id, f"refused ({refused}); report not written: {type(exc).__name__}: {exc}"
            )
            JOBS_FINISHED.labels("failed").inc()
            return "failed"
        except Exception as bug:
            log.exception("job %s: unexpected error writing the refusal report", job_id)
            ctx.db.fail_job(
                job_id, f"refused ({refused}); internal error: {type(bug).__name__}: {bug}"
            )
            JOBS_FINISHED.labels("failed").inc()
            return "failed"
        return _record(ctx, job, scored, refused=refused)
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
        log.warning("job %s: could not analyse: %s", job_id, reason)
        try:
            scored = not_analysed_series(
                job.series_dir,
                ctx.model(),
                dict.fromkeys((Side.RIGHT, Side.LEFT), reason),
                roi_source="auto" if job.seg_path is None else "seg",
                uid_seed=job.id,
                previous_sr=ctx.db.previous_sr(job),
                content_time=job.created_at,
            )
        except PermanentError as again:
            # Not even the series loads: there is no study to write into.
            log.warning("job %s failed, nothing sent: %s", job_id, again)
            ctx.db.fail_job(job_id, reason)
            JOBS_FINISHED.labels("failed").inc()
            return "failed"
        except OnfhError:
            raise
        except Exception as bug:
            log.exception("job %s: unexpected error writing the not-analysed report", job_id)
            ctx.db.fail_job(job_id, f"{reason}; and internal error: {type(bug).__name__}: {bug}")
            JOBS_FINISHED.labels("failed").inc()
            return "failed"
        return _record(ctx, job, scored, not_analysed=reason)
    except OnfhError:
        raise
    except Exception as exc:
        # A bug or an input no check caught: fail the job with the reason instead of
        # letting the broker redeliver it forever.
        log.exception("job %s: unexpected error", job_id)
        ctx.db.fail_job(job_id, f"internal error: {type(exc).__name__}: {exc}")
        JOBS_FINISHED.labels("failed").inc()
        return "failed"
    outcome = _record(ctx, job, scored)
    if outcome == "scored" and ctx.settings.shadow_bundles:
        from worker.shadow import score_shadows

        score_shadows(ctx.db, job, scored, ctx.shadows())  # never raises, sends nothing
    return outcome


def _record(
    ctx: WorkerContext,
    job: Job,
    scored: ScoredStudy,
    not_analysed: str | None = None,
    refused: str | None = None,
) -> ScoreOutcome:
    """Write a job's outputs and record them with one pending delivery per destination.

    ``not_analysed``: the job ends ``failed`` with it once delivered; ``refused``: kept
    in the job's result, the job ends ``done``.
    """
    from worker.pipeline import write_outputs

    out_dir = ctx.outputs_dir / job.study_uid / job.id
    written = write_outputs(scored, out_dir)
    if written.pdf is not None and scored.pdf_uid is not None:
        # Before job_scored: a scored job always has its PDF (see onfh_dlr.extra_outputs).
        record_output(ctx.db, job.id, OutputKind.PDF, written.pdf, scored.pdf_uid)
    uids = {OutputKind.SR: scored.sr_uid, OutputKind.CARD: scored.card_uid}
    if scored.seg_uid is not None:
        uids[OutputKind.SEG] = scored.seg_uid
    recorded = ctx.db.job_scored(
        job.id,
        sr_path=written.sr,
        seg_path=written.seg,
        card_path=written.card,
        sr_uid=scored.sr_uid,
        output_uids=uids,
        result=_summary(scored) if refused is None else {**_summary(scored), REFUSED_KEY: refused},
        destinations=[str(d) for d in ctx.settings.destinations],
        not_analysed=not_analysed,
    )
    if recorded and job.started_at is not None:
        STAGE_SECONDS.labels("score").observe(max(0.0, time.time() - job.started_at))
    # --- drift (issue 15): the scored hips and the rolling window's drift ---
    if recorded and scored.predictions and not_analysed is None and refused is None:
        try:
            record_drift(
                ctx.settings, ctx.db, ctx.model(), job.id, job.series_dir, dict(scored.predictions)
            )
        except Exception:  # monitoring never fails a job whose results are written
            log.exception("job %s: drift not recorded", job.id)
    # --- end of drift ---
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
            "reference": p.reference_status.value,
            "out_of_range": [o.describe() for o in p.out_of_range],
        }
        for side, p in scored.predictions.items()
    }
    return {
        "hips": hips,
        "sr_uid": scored.sr_uid,
        "seg_uid": scored.seg_uid,
        "card_uid": scored.card_uid,
        "pdf_uid": scored.pdf_uid,
        "notes": list(scored.notes),
    }


# The SEG before the SR that references it; the card and its PDF last.
_SEND_ORDER = (OutputKind.SEG, OutputKind.SR, OutputKind.CARD, OutputKind.PDF)


@dataclass(frozen=True)
class DeliveryRound:
    """The outcome of one delivery round of a job."""

    state: str  # the job's state afterwards: scored (retry later), done, dead_letter
    pending: tuple[str, ...]  # destinations still to try
    retry_in: float | None  # seconds until the next round, when any are pending


def deliver_job(ctx: WorkerContext, job_id: str) -> DeliveryRound:
    """Try every destination of a scored job that does not have its results yet.

    Each destination gets the kinds of object configured for it (SEG before the SR
    that cites it, then the card); kinds the job does not have (no SEG when no hip was
    scored, no card for a job scored before cards existed) are left out. A destination
    none of whose kinds exist is marked delivered, with a warning in the log.

    A destination that fails is retried with exponential backoff
    (:func:`~worker.delivery.backoff_delay`) up to ``delivery_retries`` times, then put in
    the dead-letter state, which an operator can retry (``onfh-dlr retry``).
    """
    job = ctx.db.job(job_id)
    if job is None or job.state not in ("scored",):
        return DeliveryRound(job.state if job else "unknown", (), None)
    outputs = ctx.db.job_outputs(job_id)
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
        wanted = ctx.settings.objects_for(dest)
        files = [outputs[kind] for kind in _SEND_ORDER if kind in wanted and kind in outputs]
        if not files:
            log.warning("job %s: nothing of %s to send to %s", job_id, sorted(wanted), dest)
            ctx.db.delivery_attempted(job_id, delivery.destination, ok=True)
            continue
        try:
            send_files(
                dest,
                files,
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
    if state in ("done", "dead_letter", "failed"):  # failed: a not-analysed report delivered
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
    "warm_up",
]
