"""The worker process: a Celery worker bound to the state DB and the model bundle."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import worker_process_init

from model_bundle.bundle import verify_bundle
from onfh_dlr.errors import BundleIntegrityError
from onfh_dlr.queue import make_celery
from onfh_dlr.settings import Settings
from onfh_dlr.state import StateDB
from worker.jobs import WorkerContext
from worker.tasks import register_tasks

log = logging.getLogger(__name__)


def build_worker_app(settings: Settings, broker_url: str) -> tuple[Celery, WorkerContext]:
    """The Celery app with the tasks registered, and the context they use.

    The bundle is verified here (sha256 of every file) so that a worker with a damaged
    bundle refuses to start instead of failing every job; it is *loaded* (torch) in each
    pool process on its first job, never in the parent: forking a process that has
    started torch's thread pools hangs the children.
    """
    ctx = WorkerContext(settings, StateDB.for_settings(settings.database_url, settings.data_dir))
    report = verify_bundle(ctx.bundle_dir)
    if not report.ok:
        problems = "; ".join(str(p) for p in report.problems)
        raise BundleIntegrityError(f"bundle {ctx.bundle_dir} failed verification: {problems}")
    app = make_celery(broker_url, visibility_timeout=settings.visibility_timeout)
    # The pool process loads the bundle at start-up (below); give it time to.
    app.conf.worker_proc_alive_timeout = 120
    register_tasks(app, ctx)

    def _after_fork(**_: Any) -> None:
        # Connections opened by the parent must not be shared with the pool processes.
        ctx.db.engine.dispose(close=False)
        # Load the bundle now, not on the first study: it takes seconds (torch, weights).
        ctx.model()

    worker_process_init.connect(_after_fork, weak=False)
    return app, ctx


def run_worker(settings: Settings, broker_url: str, *, loglevel: str = "INFO") -> None:
    """Run a Celery worker in this process until it is stopped (blocking)."""
    app, ctx = build_worker_app(settings, broker_url)
    log.info("worker: bundle %s, %d process(es)", ctx.bundle_dir, settings.worker_concurrency)
    app.worker_main(
        [
            "worker",
            f"--loglevel={loglevel}",
            "--pool=prefork",
            f"--concurrency={settings.worker_concurrency}",
            "--without-gossip",
            "--without-mingle",
            f"--hostname=onfh-worker-%h-{id(app):x}",
        ]
    )


__all__ = ["build_worker_app", "run_worker"]
