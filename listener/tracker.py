"""Series tracking: from stored instances to closed series and jobs.

The SCP hands every durable instance to :class:`SeriesTracker`. A series closes when it
looks complete at the release of the association that sent it, or after
``series_timeout`` seconds without a new instance. A closed series is admitted (a job row
is written, *then* the job is sent to the broker) or skipped with the rule that refused it;
with ``report_skipped`` a skipped series also gets a job, flagged as refused, that sends
a "could not analyse: <reason>" report to its study (:mod:`onfh_dlr.refusals`).
An instance arriving after close re-opens the series; it closes again and a new job,
superseding the old, scores it again.

The spool is the record of what was received: on start-up the tracker rebuilds its open
series from spool files newer than their series' last close, so a crash of the listener
loses no series.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import SegmentationStorage

from listener.completeness import assess
from listener.rules import AdmissionRules
from listener.spool import StoredInstance
from listener.verdicts import SR_SOP_CLASSES, record_stored
from onfh_dlr.errors import BrokerError, StateDBError
from onfh_dlr.metrics import (
    SERIES_ADMITTED,
    SERIES_CLOSED,
    SERIES_SKIPPED,
    STAGE_SECONDS,
    skip_reason_label,
)
from onfh_dlr.refusals import refuse_series
from onfh_dlr.settings import Transport
from onfh_dlr.state import StateDB

log = logging.getLogger(__name__)


@dataclass
class _OpenSeries:
    study_uid: str
    series_uid: str
    directory: Path
    headers: dict[str, Dataset] = field(default_factory=dict)
    first_received: float = float("inf")
    last_received: float = 0.0
    calling_ae: str = ""
    transport: Transport = Transport.DIMSE
    peer_address: str = ""
    recorded: bool = False  # the DB row is up to date with "receiving"


def _referenced_series(header: Dataset) -> list[str]:
    return [
        str(item.SeriesInstanceUID)
        for item in header.get("ReferencedSeriesSequence", [])
        if "SeriesInstanceUID" in item
    ]


class SeriesTracker:
    """Tracks open series and turns closed ones into jobs (the SCP's Intake).

    Parameters
    ----------
    db
        The state database.
    rules
        Admission rules for closed series.
    enqueue
        Sends a job id to the broker; raises :class:`BrokerError` when it cannot.
    series_timeout
        Seconds of quiet after which an open series closes.
    requeue_after
        See :meth:`StateDB.jobs_to_enqueue`.
    sweep_interval
        Seconds between two sweeps for jobs that did not reach the broker.
    report_skipped
        Also write a job for a series the rules refuse, which reports the refusal to its
        study; the series stays ``skipped``.
    """

    def __init__(
        self,
        db: StateDB,
        rules: AdmissionRules,
        enqueue: Callable[[str], None],
        *,
        series_timeout: float,
        requeue_after: float = 900.0,
        sweep_interval: float = 10.0,
        clock: Callable[[], float] = time.time,
        report_skipped: bool = False,
    ) -> None:
        self.db = db
        self.rules = rules
        self.enqueue = enqueue
        self.series_timeout = series_timeout
        self.requeue_after = requeue_after
        self.sweep_interval = sweep_interval
        self._last_sweep = float("-inf")
        self.clock = clock
        self.report_skipped = report_skipped
        self._open: dict[str, _OpenSeries] = {}
        self._pending_segs: dict[str, Path] = {}  # series uid -> SEG that arrived first
        self._lock = threading.RLock()

    # --- Intake -------------------------------------------------------------------

    def instance_stored(self, instance: StoredInstance) -> None:
        """Record a durable instance (called by the SCP before it answers Success)."""
        if instance.sop_class_uid == SegmentationStorage:
            self._seg_stored(instance.path, instance.header, instance.received_at)
            return
        if instance.sop_class_uid in SR_SOP_CLASSES:  # a verdict: recorded, never scored
            record_stored(
                self.db,
                instance.path,
                instance.header,
                calling_ae=instance.calling_ae,
                at=instance.received_at,
            )
            return
        with self._lock:
            series = self._open.get(instance.series_uid)
            if series is None and instance.duplicate and not instance.replaced:
                # A re-sent instance with the same bytes changes nothing: re-sending a
                # whole study must not score it again.
                return
            if series is None:
                series = _OpenSeries(instance.study_uid, instance.series_uid, instance.path.parent)
                self._open[instance.series_uid] = series
            series.headers[instance.sop_instance_uid] = instance.header
            series.first_received = min(series.first_received, instance.received_at)
            series.last_received = max(series.last_received, instance.received_at)
            series.calling_ae = instance.calling_ae
            series.transport = instance.transport
            series.peer_address = instance.peer_address
            if not series.recorded:
                try:
                    self._record(series)
                except StateDBError as exc:
                    # The instance is durable in the spool; the next instance or the
                    # close records the series once the database is back.
                    log.warning(
                        "series %s not recorded yet, state DB unavailable: %s",
                        series.series_uid,
                        exc,
                    )

    def association_released(self, calling_ae: str, series_uids: frozenset[str]) -> None:
        """Close each series the association sent that now looks complete."""
        for uid in series_uids:
            with self._lock:
                series = self._open.get(uid)
                if series is None:
                    continue
                verdict = assess(list(series.headers.values()))
                if verdict.complete:
                    self._try_close(series, f"complete at release ({verdict.reason})", "release")
                else:
                    log.info("series %s still open at release: %s", uid, verdict.reason)

    # --- timers -------------------------------------------------------------------

    def tick(self) -> None:
        """Close quiet series and (re-)send jobs that have not reached the broker."""
        now = self.clock()
        with self._lock:
            quiet = [s for s in self._open.values() if now - s.last_received >= self.series_timeout]
            for series in quiet:
                verdict = assess(list(series.headers.values()))
                note = "quiet for %.0f s" % (now - series.last_received)
                if not verdict.complete:
                    note += f"; looks incomplete: {verdict.reason}"
                self._try_close(series, note, "timeout")
        if now - self._last_sweep >= self.sweep_interval:
            self._last_sweep = now
            self.sweep()

    def sweep(self) -> int:
        """Send pending jobs to the broker; returns how many were sent."""
        try:
            job_ids = self.db.jobs_to_enqueue(requeue_after=self.requeue_after)
        except StateDBError as exc:
            log.warning("sweeper: state database unavailable: %s", exc)
            return 0
        sent = 0
        for job_id in job_ids:
            if not self._send(job_id):
                break  # broker down: try again at the next sweep
            sent += 1
        return sent

    def run(self, stop: threading.Event, interval: float = 1.0) -> None:
        """Call :meth:`tick` every ``interval`` seconds until ``stop`` is set."""
        while not stop.wait(interval):
            try:
                self.tick()
            except Exception:  # the timer thread must survive anything
                log.exception("tracker tick failed")

    @property
    def open_series(self) -> list[str]:
        with self._lock:
            return list(self._open)

    # --- recovery -----------------------------------------------------------------

    def recover(self, spool_root: Path) -> int:
        """Rebuild open series from spool files received after their series' last close.

        Returns the number of series re-opened.
        """
        reopened = 0
        for series_dir in sorted(p for p in spool_root.glob("*/*") if p.is_dir()):
            if series_dir.parent.name.startswith("."):
                continue
            files = sorted(series_dir.glob("*.dcm"))
            if not files:
                continue
            row = self.db.series(series_dir.name)
            closed_at = row.closed_at if row is not None and row.state != "receiving" else None
            newest = max(f.stat().st_mtime for f in files)
            if closed_at is not None and newest <= closed_at:
                continue
            for path in files:
                header = _read_header(path)
                if header is None:
                    continue
                stored = StoredInstance.from_header(
                    path, header, calling_ae="", received_at=self.clock()
                )
                self.instance_stored(stored)
            reopened += 1
        if reopened:
            log.info("recovered %d open series from the spool", reopened)
        return reopened

    # --- internals ------------------------------------------------------------------

    def _record(self, series: _OpenSeries) -> None:
        first = next(iter(series.headers.values()))
        reopened = self.db.series_received(
            series_uid=series.series_uid,
            study_uid=series.study_uid,
            instances=len(series.headers),
            at=series.last_received,
            accession_number=str(first.get("AccessionNumber", "") or ""),
            modality=str(first.get("Modality", "") or ""),
            description=str(first.get("SeriesDescription", "") or ""),
            calling_ae=series.calling_ae,
            transport=series.transport,
            peer_address=series.peer_address,
        )
        if reopened:
            # Late instances join the files already in the spool: the new job scores all.
            for header in _headers_in(series.directory, exclude=series.headers):
                series.headers[str(header.SOPInstanceUID)] = header
            log.info("series %s re-opened by a late instance", series.series_uid)
        series.recorded = True
        pending_seg = self._pending_segs.pop(series.series_uid, None)
        if pending_seg is not None:
            self.db.link_seg(series.series_uid, pending_seg)

    def _seg_stored(self, path: Path, header: Dataset, at: float) -> None:
        try:
            self._link_seg(path, header, at)
        except StateDBError as exc:
            # Kept in the spool; linked when the listener recovers the spool at start-up
            # or when the SEG is sent again.
            log.warning("SEG %s not linked, state DB unavailable: %s", path.name, exc)

    def _link_seg(self, path: Path, header: Dataset, at: float) -> None:
        for uid in _referenced_series(header):
            with self._lock:
                series = self._open.get(uid)
                if series is not None and series.recorded:
                    self.db.link_seg(uid, path)
                    series.last_received = max(series.last_received, at)
                    continue
                row = self.db.series(uid)
                if row is None:
                    self._pending_segs[uid] = path  # the series may follow
                    continue
                if row.seg_path == str(path):
                    continue  # already linked (a re-sent SEG, or the spool read at start-up)
                # A new SEG for a series that is already closed: link it and score again.
                self.db.link_seg(uid, path)
                if row.state != "receiving":
                    reopened = _OpenSeries(
                        row.study_uid, uid, self._series_dir(path, row.study_uid, uid)
                    )
                    for h in _headers_in(reopened.directory, exclude={}):
                        reopened.headers[str(h.SOPInstanceUID)] = h
                    reopened.last_received = at
                    self._open[uid] = reopened
                    self._record(reopened)

    @staticmethod
    def _series_dir(seg_path: Path, study_uid: str, series_uid: str) -> Path:
        spool_root = seg_path.parent.parent.parent
        return spool_root / study_uid / series_uid

    def _try_close(self, series: _OpenSeries, note: str, trigger: str) -> None:
        # A state DB that is down (restarting) leaves the series open: the next tick
        # closes it once the database answers again; nothing is lost meanwhile.
        try:
            self._close(series, note, trigger)
        except StateDBError as exc:
            log.warning("series %s stays open, state DB unavailable: %s", series.series_uid, exc)

    def _close(self, series: _OpenSeries, note: str, trigger: str) -> None:
        if not series.recorded:
            self._record(series)
        headers = list(series.headers.values())
        decision = self.rules.evaluate(headers)
        refusal_job: str | None = None
        if not decision.admitted and self.report_skipped:
            refusal_job = refuse_series(
                self.db,
                series.series_uid,
                series.directory,
                decision.reason,
                instances=len(headers),
            )
            job_id = None
        elif not decision.admitted:
            self.db.skip_series(series.series_uid, decision.reason, instances=len(headers))
            job_id = None
        else:
            job_id = self.db.admit_series(
                series.series_uid, series.directory, note, instances=len(headers)
            )
        # Only now, with the outcome durable, does the series stop being open.
        del self._open[series.series_uid]
        SERIES_CLOSED.labels(trigger).inc()
        if series.first_received <= series.last_received:
            STAGE_SECONDS.labels("receive").observe(self.clock() - series.first_received)
        if job_id is None:
            SERIES_SKIPPED.labels(skip_reason_label(decision.reason)).inc()
            log.info("series %s skipped: %s", series.series_uid, decision.reason)
            if refusal_job is not None:
                log.info("series %s: job %s reports the refusal", series.series_uid, refusal_job)
                self._send(refusal_job)
            return
        SERIES_ADMITTED.inc()
        log.info("series %s closed (%s): job %s", series.series_uid, note, job_id)
        self._send(job_id)

    def _send(self, job_id: str) -> bool:
        try:
            self.enqueue(job_id)
        except BrokerError as exc:
            log.warning("job %s stays pending: %s", job_id, exc)
            return False
        try:
            self.db.mark_enqueued(job_id)
        except StateDBError as exc:
            # Sent but still "pending" in the DB: the sweeper sends it again, and the
            # worker's start_job makes the duplicate harmless.
            log.warning("job %s sent, but not marked queued: %s", job_id, exc)
        return True


def _read_header(path: Path) -> Dataset | None:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (OSError, InvalidDicomError, ValueError) as exc:
        log.warning("cannot read spooled file %s: %s", path, exc)
        return None


def _headers_in(directory: Path, exclude: dict[str, Dataset] | Iterable[str]) -> list[Dataset]:
    skip = set(exclude)
    out = []
    for path in sorted(directory.glob("*.dcm")):
        if path.stem in skip:
            continue
        header = _read_header(path)
        if header is not None:
            out.append(header)
    return out


__all__ = ["SeriesTracker"]
