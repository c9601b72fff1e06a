"""The worker process: a Celery worker bound to the state DB and the model bundle."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown
from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.multiprocess import MultiProcessCollector

from model_bundle.bundle import verify_bundle
from onfh_dlr.errors import BundleIntegrityError
from onfh_dlr.queue import make_celery
from onfh_dlr.settings import Settings
from onfh_dlr.state import StateDB
from onfh_dlr.web import HttpServer
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


def worker_metrics_port(settings: Settings) -> int | None:
    """The worker's HTTP port: its own setting, else the listener's + 1, else none."""
    if settings.worker_metrics_port is not None:
        return settings.worker_metrics_port
    return settings.metrics_port + 1 if settings.metrics_port is not None else None


def start_http(
    settings: Settings, broker_url: str, metrics_dir: Path | None, bundle_ok: bool
) -> HttpServer | None:
    """The worker's metrics and health endpoints (aggregated over its pool processes)."""
    port = worker_metrics_port(settings)
    if port is None:
        return None
    registry = CollectorRegistry()
    if metrics_dir is not None:
        MultiProcessCollector(registry, path=str(metrics_dir))  # type: ignore[no-untyped-call]

    def broker() -> None:
        import redis

        client = redis.Redis.from_url(broker_url, socket_timeout=2, socket_connect_timeout=2)
        client.ping()

    def bundle() -> None:
        if not bundle_ok:
            raise RuntimeError("bundle not verified")

    return HttpServer(
        settings.http_host, port, registry=registry, checks={"broker": broker, "bundle": bundle}
    ).start()


def run_worker(
    settings: Settings,
    broker_url: str,
    *,
    loglevel: str = "INFO",
    metrics_dir: Path | None = None,
) -> None:
    """Run a Celery worker in this process until it is stopped (blocking).

    ``metrics_dir`` is the ``PROMETHEUS_MULTIPROC_DIR`` the entry point set before
    prometheus-client was imported; the pool processes write their metrics there.
    """
    app, ctx = build_worker_app(settings, broker_url)
    log.info("worker: bundle %s, %d process(es)", ctx.bundle_dir, settings.worker_concurrency)
    http = start_http(settings, broker_url, metrics_dir, bundle_ok=True)

    def _process_gone(pid: int | None = None, **_: Any) -> None:
        if metrics_dir is not None and pid is not None:
            multiprocess.mark_process_dead(pid, str(metrics_dir))  # type: ignore[no-untyped-call]

    worker_process_shutdown.connect(lambda **kw: _process_gone(os.getpid()), weak=False)
    try:
        _worker_main(app, settings, loglevel)
    finally:
        if http is not None:
            http.stop()


def _worker_main(app: Celery, settings: Settings, loglevel: str) -> None:
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


__all__ = ["build_worker_app", "run_worker", "start_http", "worker_metrics_port"]
