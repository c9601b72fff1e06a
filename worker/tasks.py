"""The Celery tasks: thin shells around :mod:`worker.jobs`.

The worker process builds its :class:`~worker.jobs.WorkerContext` once
(:func:`register_tasks`) and every task call uses it.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

from onfh_dlr.errors import TransientError
from onfh_dlr.queue import DELIVER_TASK, SCORE_TASK, send
from worker.jobs import WorkerContext, deliver_job, score_job

log = logging.getLogger(__name__)


def register_tasks(app: Celery, ctx: WorkerContext) -> None:
    """Register the scoring and delivery tasks on ``app``, bound to ``ctx``."""

    @app.task(name=SCORE_TASK, bind=True, max_retries=None)  # type: ignore[untyped-decorator]
    def score(self: Any, job_id: str) -> str:
        try:
            outcome = score_job(ctx, job_id)
        except TransientError as exc:
            delay = min(60, 2 ** min(self.request.retries, 6))
            log.warning("job %s: transient error (%s), retrying in %s s", job_id, exc, delay)
            raise self.retry(exc=exc, countdown=delay) from exc
        if outcome == "scored":
            send(app, DELIVER_TASK, job_id)
        return outcome

    @app.task(name=DELIVER_TASK, bind=True, max_retries=None)  # type: ignore[untyped-decorator]
    def deliver(self: Any, job_id: str) -> str:
        try:
            # Named on the job while it delivers: if this worker dies, the delivery is
            # sent again at once (onfh_dlr.liveness).
            ctx.db.hold_for_delivery(job_id)
            result = deliver_job(ctx, job_id)
        except TransientError as exc:
            raise self.retry(exc=exc, countdown=5) from exc
        if result.retry_in is not None:
            # A new message with a countdown, not a sleep: the worker stays free for
            # other studies while a destination is down.
            raise self.retry(countdown=result.retry_in)
        return result.state


__all__ = ["register_tasks"]
