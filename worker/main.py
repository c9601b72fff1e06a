"""The worker process: a Celery worker bound to the state DB and the model bundle.

Two roles (:class:`WorkerRole`): a scoring worker (prefork, the bundle loaded in every
pool process before the worker takes any message) consumes both queues, delivery
first; a delivery worker (threads, no bundle) consumes only the delivery queue, so a
finished study's results go out while every scoring slot is busy.
"""

from __future__ import annotations

import enum
import logging
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

from celery import Celery, bootsteps
from celery.signals import worker_process_init, worker_process_shutdown
from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.multiprocess import MultiProcessCollector

from model_bundle.bundle import verify_bundle
from onfh_dlr.errors import BundleIntegrityError
from onfh_dlr.liveness import WorkerIdentity
from onfh_dlr.queue import DELIVERY_QUEUE, WORKER_QUEUES, make_celery
from onfh_dlr.settings import Settings
from onfh_dlr.state import StateDB
from onfh_dlr.web import HttpServer
from worker.jobs import WorkerContext, warm_up
from worker.tasks import register_tasks

log = logging.getLogger(__name__)

#: Seconds a pool process may take to load the bundle before Celery replaces it.
BUNDLE_LOAD_TIMEOUT = 120.0
#: Threads of a delivery worker: deliveries wait on the network, not on a core.
DELIVERY_THREADS = 2


class WorkerRole(enum.Enum):
    """What a worker process consumes."""

    SCORING = "worker"  # both queues, delivery first; the bundle in every pool process
    DELIVERY = "delivery"  # the delivery queue only; no bundle, a few threads

    @property
    def queues(self) -> tuple[str, ...]:
        return WORKER_QUEUES if self is WorkerRole.SCORING else (DELIVERY_QUEUE,)


def build_worker_app(
    settings: Settings, broker_url: str, role: WorkerRole = WorkerRole.SCORING
) -> tuple[Celery, WorkerContext]:
    """The Celery app with the tasks registered, and the context they use.

    The bundle is verified here (sha256 of every file) so that a worker with a damaged
    bundle refuses to start instead of failing every job; it is *loaded* (torch) in each
    pool process as it starts, never in the parent: forking a process that has started
    torch's thread pools hangs the children. The worker consumes nothing until every
    pool process has loaded it, so the first study is no slower than the next.

    Jobs are claimed under this process' :class:`WorkerIdentity` (also its Celery node
    name), recorded on the job row: when this process dies, its jobs are requeued.
    """
    ctx = WorkerContext(settings, StateDB.for_settings(settings.database_url, settings.data_dir))
    ctx.db.claimant = WorkerIdentity.of_this_process(role.value)
    app = make_celery(broker_url, visibility_timeout=settings.visibility_timeout)
    register_tasks(app, ctx)
    if role is WorkerRole.DELIVERY:
        return app, ctx
    report = verify_bundle(ctx.bundle_dir)
    if not report.ok:
        problems = "; ".join(str(p) for p in report.problems)
        raise BundleIntegrityError(f"bundle {ctx.bundle_dir} failed verification: {problems}")
    # The pool process loads the bundle at start-up (below); give it time to.
    app.conf.worker_proc_alive_timeout = BUNDLE_LOAD_TIMEOUT
    # Shared memory, inherited by the forked pool processes: how many have loaded it.
    loaded = multiprocessing.get_context("fork").Value("i", 0)

    def _after_fork(**_: Any) -> None:
        # Connections opened by the parent must not be shared with the pool processes.
        ctx.db.engine.dispose(close=False)
        # Load the bundle now, not on the first study: it takes seconds (torch, weights).
        warm_up(ctx)
        with loaded.get_lock():
            loaded.value += 1

    class WaitForBundle(bootsteps.StartStopStep):  # type: ignore[misc]
        """Start consuming only once every pool process has loaded the bundle."""

        requires = ("celery.worker.components:Pool",)

        def start(self, worker: Any) -> None:
            wanted = worker.concurrency
            deadline = time.monotonic() + BUNDLE_LOAD_TIMEOUT
            while loaded.value < wanted and time.monotonic() < deadline:
                time.sleep(0.05)
            log.info("bundle loaded in %d of %d pool process(es)", loaded.value, wanted)

    app.steps["worker"].add(WaitForBundle)
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
    role: WorkerRole = WorkerRole.SCORING,
) -> None:
    """Run a Celery worker in this process until it is stopped (blocking).

    ``metrics_dir`` is the ``PROMETHEUS_MULTIPROC_DIR`` the entry point set before
    prometheus-client was imported; the pool processes write their metrics there. A
    delivery worker serves its metrics on the scoring worker's port + 1.
    """
    app, ctx = build_worker_app(settings, broker_url, role)
    assert ctx.db.claimant is not None
    if role is WorkerRole.DELIVERY:
        log.info("delivery worker %s: %d thread(s)", ctx.db.claimant.name, DELIVERY_THREADS)
        port = worker_metrics_port(settings)
        settings = settings.model_copy(
            update={"worker_metrics_port": port + 1 if port is not None else None}
        )
    else:
        log.info(
            "worker %s: bundle %s, %d process(es)",
            ctx.db.claimant.name,
            ctx.bundle_dir,
            settings.worker_concurrency,
        )
    http = start_http(settings, broker_url, metrics_dir, bundle_ok=True)

    def _process_gone(pid: int | None = None, **_: Any) -> None:
        if metrics_dir is not None and pid is not None:
            multiprocess.mark_process_dead(pid, str(metrics_dir))  # type: ignore[no-untyped-call]

    worker_process_shutdown.connect(lambda **kw: _process_gone(os.getpid()), weak=False)
    try:
        _worker_main(app, settings, loglevel, role, ctx.db.claimant)
    finally:
        if http is not None:
            http.stop()


def _worker_main(
    app: Celery, settings: Settings, loglevel: str, role: WorkerRole, identity: WorkerIdentity
) -> None:
    if role is WorkerRole.DELIVERY:
        pool = ["--pool=threads", f"--concurrency={DELIVERY_THREADS}"]
    else:
        pool = ["--pool=prefork", f"--concurrency={settings.worker_concurrency}"]
    app.worker_main(
        [
            "worker",
            f"--loglevel={loglevel}",
            *pool,
            f"--queues={','.join(role.queues)}",
            "--without-gossip",
            "--without-mingle",
            f"--hostname={identity.name}",
        ]
    )


__all__ = ["WorkerRole", "build_worker_app", "run_worker", "start_http", "worker_metrics_port"]
