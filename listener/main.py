"""The listener process: DICOM server, series tracker and job sweeper, wired together.

Imports stay light (no torch, SimpleITK or bundle): the listener talks to workers only
through task names and job ids on the broker.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from listener.rules import AdmissionRules
from listener.scp import Listener
from listener.spool import Spool
from listener.tracker import SeriesTracker
from onfh_dlr.queue import SCORE_TASK, make_celery, send
from onfh_dlr.settings import Settings
from onfh_dlr.state import StateDB

log = logging.getLogger(__name__)


def build_listener(settings: Settings, broker_url: str) -> tuple[Listener, SeriesTracker]:
    """The DICOM server and the tracker it feeds, with series recovered from the spool."""
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
    )
    spool = Spool(settings.data_dir / "spool")
    tracker.recover(spool.root)
    return Listener(settings, tracker, spool=spool), tracker


def run_listener(settings: Settings, broker_url: str) -> None:
    """Serve until SIGTERM or SIGINT (blocking)."""
    listener, tracker = build_listener(settings, broker_url)
    stop = threading.Event()
    ticker = threading.Thread(
        target=tracker.run,
        args=(stop,),
        kwargs={"interval": 0.5},
        name="tracker",
        daemon=True,
    )
    ticker.start()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping the listener", signum)
        # shutdown() blocks until serve_forever returns, so not from the serving thread.
        threading.Thread(target=listener.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    tracker.sweep()  # jobs left pending by a previous run (broker was down)
    try:
        listener.serve_forever()
    finally:
        stop.set()
        ticker.join(5)


__all__ = ["build_listener", "run_listener"]
