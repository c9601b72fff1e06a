"""The listener process: DICOM server, STOW-RS server, series tracker, job sweeper and HTTP
server.

Imports stay light (no torch, SimpleITK or bundle): the listener talks to workers only
through task names and job ids on the broker.
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from types import FrameType

from prometheus_client import REGISTRY

from listener.dicomweb import DicomWebServer
from listener.retention import purge_expired
from listener.rules import AdmissionRules
from listener.scp import Listener
from listener.spool import Spool
from listener.status_page import StatusPage, status_auth
from listener.telemetry import StateCollector, check_writable
from listener.tracker import SeriesTracker
from onfh_dlr.drift_store import DriftCollector
from onfh_dlr.errors import StateDBError
from onfh_dlr.liveness import WorkerWatch
from onfh_dlr.queue import DELIVER_TASK, SCORE_TASK, make_celery, send
from onfh_dlr.settings import Settings
from onfh_dlr.state import StateDB
from onfh_dlr.web import HttpServer, server_tls_context

log = logging.getLogger(__name__)

RETENTION_INTERVAL = 3600.0  # seconds between two retention purges


@dataclass
class ListenerProcess:
    """Everything the listener process runs."""

    listener: Listener
    tracker: SeriesTracker
    http: HttpServer | None
    db: StateDB
    dicomweb: DicomWebServer | None = None  # STOW-RS, when dicomweb_token is set
    watch: WorkerWatch | None = None  # requeues the jobs of dead workers at once


def build_listener(settings: Settings, broker_url: str) -> ListenerProcess:
    """The DICOM server, the tracker it feeds (series recovered from the spool) and,
    when ``metrics_port`` is set, the HTTP server with metrics, health and status page
    (HTTPS with ``tls_cert``/``tls_key``; the page needs the status token)."""
    db = StateDB.for_settings(settings.database_url, settings.data_dir)
    rules = AdmissionRules.load(settings.admission_rules)
    app = make_celery(broker_url, visibility_timeout=settings.visibility_timeout)
    tracker = SeriesTracker(
        db,
        rules,
        lambda job_id: send(app, SCORE_TASK, job_id),
        series_timeout=settings.series_timeout,
        requeue_after=settings.requeue_after,
        sweep_interval=settings.sweep_interval,
        report_skipped=settings.report_skipped,
    )
    spool = Spool(settings.data_dir / "spool")
    tracker.recover(spool.root)
    listener = Listener(settings, tracker, spool=spool)
    dicomweb = DicomWebServer(settings, listener.handler) if settings.dicomweb_token else None
    if dicomweb is None:
        log.info("STOW-RS is off (set ONFH_DICOMWEB_TOKEN to serve it)")
    http = None
    if settings.metrics_port is not None:
        REGISTRY.register(StateCollector(db, broker_url))
        REGISTRY.register(DriftCollector(db))  # issue 15: the latest drift window
        page = StatusPage(db, settings.admin_token, lambda job_id: send(app, DELIVER_TASK, job_id))

        def dicom_port() -> None:
            if not listener.serving:
                raise RuntimeError(f"DICOM port {settings.port} is not bound")

        checks = {
            "dicom_port": dicom_port,
            "spool_writable": lambda: check_writable(spool.tmp_dir),
            "database": db.ping,
        }
        if dicomweb is not None:
            server = dicomweb

            def dicomweb_port() -> None:
                if not server.serving:
                    raise RuntimeError(f"STOW-RS port {settings.dicomweb_port} is not bound")

            checks["dicomweb_port"] = dicomweb_port
        # The DICOM port's certificate serves HTTPS too; tls_ca is not applied here:
        # browsers, Prometheus and probes carry no client certificate.
        tls = (
            server_tls_context(settings.tls_cert, settings.tls_key)
            if settings.tls_cert is not None and settings.tls_key is not None
            else None
        )
        auth = status_auth(settings, tls=tls is not None)
        if not auth.token:
            log.warning("the status page is off: set ONFH_STATUS_TOKEN or ONFH_STATUS_TOKEN_FILE")
        http = HttpServer(
            settings.http_host,
            settings.metrics_port,
            registry=REGISTRY,
            checks=checks,
            routes=page.routes,
            auth=auth,
            ssl_context=tls,
        )
    watch = WorkerWatch(app, db, lambda task, job_id: send(app, task, job_id))
    return ListenerProcess(listener, tracker, http, db, dicomweb, watch)


def _retention_loop(stop: threading.Event, settings: Settings, db: StateDB) -> None:
    assert settings.retention_days is not None
    max_age = settings.retention_days * 86400
    while True:
        try:
            purge_expired(db, settings.data_dir, max_age=max_age)
        except Exception:  # retention must never take the listener down
            log.exception("retention purge failed")
        if stop.wait(RETENTION_INTERVAL):
            return


def run_listener(settings: Settings, broker_url: str) -> None:
    """Serve until SIGTERM or SIGINT (blocking)."""
    process = build_listener(settings, broker_url)
    stop = threading.Event()
    ticker = threading.Thread(
        target=process.tracker.run,
        args=(stop,),
        kwargs={"interval": 0.5},
        name="tracker",
        daemon=True,
    )
    ticker.start()
    if settings.retention_days is not None:
        threading.Thread(
            target=_retention_loop,
            args=(stop, settings, process.db),
            name="retention",
            daemon=True,
        ).start()
    if process.watch is not None:
        threading.Thread(
            target=process.watch.run, args=(stop,), name="worker-watch", daemon=True
        ).start()
    if process.http is not None:
        process.http.start()
    if process.dicomweb is not None:
        process.dicomweb.start()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping the listener", signum)
        # shutdown() blocks until serve_forever returns, so not from the serving thread.
        threading.Thread(target=process.listener.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        process.tracker.sweep()  # jobs left pending by a previous run (broker was down)
    except StateDBError as exc:
        log.warning("initial sweep failed: %s", exc)
    try:
        process.listener.serve_forever()
    finally:
        stop.set()
        if process.dicomweb is not None:
            process.dicomweb.stop()
        ticker.join(5)
        if process.http is not None:
            process.http.stop()


__all__ = ["ListenerProcess", "build_listener", "run_listener"]
