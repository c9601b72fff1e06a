"""Who holds a running job, and whether it is still alive.

A worker claims a job under a :class:`WorkerIdentity` (host, pid of the worker process,
Celery node name), recorded on the job row when it starts scoring it and when it starts
delivering it. When that worker is gone — its supervisor reaped it, its pid no longer
runs on this host, or its Celery heartbeats stopped — the jobs it held go back to the
queue at once (:func:`requeue_jobs`: scored again, or delivered again), instead of
waiting for the broker's visibility timeout or ``ONFH_REQUEUE_AFTER``. Tasks are
idempotent, so the rare duplicate costs time, never a second result.

Kernel module: imported by ``worker`` (to name itself), ``listener`` and
``onfh_dlr.cli`` (to requeue); it imports only the kernel.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onfh_dlr.errors import BrokerError, OnfhError, StateDBError
from onfh_dlr.queue import DELIVER_TASK, SCORE_TASK

if TYPE_CHECKING:
    from celery import Celery

    from onfh_dlr.state import StateDB

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerIdentity:
    """The worker process that claimed a job.

    Attributes
    ----------
    host
        The worker's machine (or container) as :func:`this_host` names it.
    pid
        The worker's main process (the Celery parent of the pool processes): the unit
        that lives or dies; a dead pool process alone is requeued by Celery itself.
    name
        The Celery node name, unique per start (a random part: a restarted container may
        reuse host name and pid), as in its heartbeat events.
    """

    host: str
    pid: int
    name: str

    @classmethod
    def of_this_process(cls, role: str) -> WorkerIdentity:
        """This process, named ``onfh-<role>-<pid>-<random>@<host name>``."""
        pid = os.getpid()
        name = f"onfh-{role}-{pid}-{secrets.token_hex(3)}@{socket.gethostname()}"
        return cls(this_host(), pid, name)


def this_host() -> str:
    """Where a pid means one process: the host name, and the pid namespace when there is
    one (two containers may share a host name, never a pid namespace)."""
    name = socket.gethostname()
    try:
        namespace = os.readlink("/proc/self/ns/pid")  # e.g. "pid:[4026531836]"
    except OSError:  # no procfs (not Linux)
        return name
    return f"{name}/{namespace}"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a zombie, dead but unreaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    try:
        # /proc/<pid>/stat: "pid (comm) state ..."; comm may hold spaces and parentheses.
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no procfs (not Linux), or it died just now
        return Path(f"/proc/{pid}").exists() or not Path("/proc").is_dir()
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


#: Sends a task (by name) for a job id to the broker; raises BrokerError when it cannot.
Sender = Callable[[str, str], None]


@dataclass(frozen=True)
class Requeued:
    """What was taken back from a dead worker."""

    scoring: tuple[str, ...] = ()  # running jobs, sent to be scored again
    delivery: tuple[str, ...] = ()  # scored jobs, their delivery sent again

    def __add__(self, other: Requeued) -> Requeued:
        return Requeued(self.scoring + other.scoring, self.delivery + other.delivery)

    def __bool__(self) -> bool:
        return bool(self.scoring or self.delivery)


def requeue_jobs(
    db: StateDB,
    send: Sender,
    *,
    host: str,
    pid: int | None = None,
    name: str | None = None,
    reason: str,
) -> Requeued:
    """Take back the jobs of a dead worker and send them again at once.

    The worker is the one on ``host`` with main process ``pid``, or (``pid`` None) the
    Celery node ``name``. Its running jobs are scored again, its scored jobs delivered
    again (:meth:`StateDB.requeue_jobs_of`), each with a timeline entry giving
    ``reason``. A job the broker cannot take now goes ``pending``: the listener's
    sweeper sends it.
    """
    score, deliver = db.requeue_jobs_of(host=host, pid=pid, name=name, reason=reason)
    for job_id in score:
        try:
            send(SCORE_TASK, job_id)
        except BrokerError as exc:
            log.warning("job %s requeued but not sent yet (the sweeper will): %s", job_id, exc)
            try:
                db.mark_unsent(job_id)
            except StateDBError as again:  # still queued: re-sent after requeue_after
                log.warning("job %s: cannot mark it unsent: %s", job_id, again)
    for job_id in deliver:
        try:
            send(DELIVER_TASK, job_id)
        except BrokerError as exc:  # the next watch tries again
            log.warning("job %s: delivery not sent again yet: %s", job_id, exc)
            try:
                db.hold_again(job_id, host=host, pid=pid, name=name)
            except StateDBError as again:  # the broker's own redelivery, or `onfh-dlr retry`
                log.warning("job %s: cannot give it back to its worker: %s", job_id, again)
    return Requeued(tuple(score), tuple(deliver))


def requeue_dead_local_workers(db: StateDB, send: Sender) -> Requeued:
    """Take back the jobs of workers on this host whose process no longer runs."""
    host = this_host()
    requeued = Requeued()
    for pid in db.holding_worker_pids(host):
        if not process_alive(pid):
            requeued += requeue_jobs(
                db,
                send,
                host=host,
                pid=pid,
                reason=f"worker process {pid} on {host} is gone; requeued at once",
            )
    return requeued


#: Seconds without an event from a worker after which it counts as gone. Celery workers
#: send a heartbeat every 2 s; the margin covers a busy machine.
HEARTBEAT_EXPIRY = 15.0


class WorkerWatch:
    """Requeues the jobs of workers that are gone, wherever they run.

    It listens to the workers' Celery events: a ``worker-offline`` event, or no event at
    all from a worker for :data:`HEARTBEAT_EXPIRY` seconds, means the worker is gone;
    so does a recorded pid that no longer runs on this host. Silence counts only once
    this watch has been connected to the broker for that long without a break. A worker
    wrongly taken for dead (cut off from the broker, not dead) costs a second run, never
    a second result: its own result is refused, as the job is no longer its to record.

    Parameters
    ----------
    app
        The Celery app whose broker carries the events.
    db
        The state database.
    send
        Sends a task for a job id (see :data:`Sender`).
    expiry
        See :data:`HEARTBEAT_EXPIRY`.
    clock
        Monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        app: Celery,
        db: StateDB,
        send: Sender,
        *,
        expiry: float = HEARTBEAT_EXPIRY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app, self.db, self.send = app, db, send
        self.expiry = expiry
        self.clock = clock
        self.last_seen: dict[str, float] = {}  # Celery node name -> last event
        self.listening_since: float | None = None  # receiving events since
        self._lock = threading.Lock()

    def on_event(self, event: dict[str, Any]) -> None:
        """Record one Celery event (``worker-offline`` requeues that worker's jobs)."""
        name = event.get("hostname")
        if not isinstance(name, str):
            return
        with self._lock:
            if event.get("type") == "worker-offline":
                self.last_seen.pop(name, None)
            else:
                self.last_seen[name] = self.clock()
                return
        requeue_jobs(
            self.db,
            self.send,
            host="",
            name=name,
            reason=f"worker {name} went offline; requeued at once",
        )

    def check(self) -> Requeued:
        """Take back the jobs of workers gone silent, or gone from this host."""
        requeued = requeue_dead_local_workers(self.db, self.send)
        now = self.clock()
        with self._lock:
            since = self.listening_since
            if since is None or now - since < self.expiry:
                return requeued  # not listening long enough to call anyone silent
            silent = {
                name
                for name in self.db.holding_worker_names()
                if now - self.last_seen.get(name, since) > self.expiry
            }
        for name in sorted(silent):
            requeued += requeue_jobs(
                self.db,
                self.send,
                host="",
                name=name,
                reason=f"no heartbeat from worker {name} for {self.expiry:.0f} s; requeued",
            )
        return requeued

    def run(self, stop: threading.Event, interval: float = 2.0) -> None:
        """Receive events and :meth:`check` every ``interval`` seconds until ``stop``."""
        checker = threading.Thread(
            target=self._check_loop, args=(stop, interval), name="worker-watch-check", daemon=True
        )
        checker.start()
        while not stop.is_set():
            try:
                with self.app.connection_for_read() as connection:
                    receiver = self.app.events.Receiver(connection, handlers={"*": self.on_event})
                    self.listening_since = self.clock()
                    for _ in receiver.itercapture(limit=None, timeout=None, wakeup=True):
                        if stop.is_set():
                            return
            except Exception as exc:  # broker down: nothing is judged until it is back
                if self.listening_since is not None:  # once per outage, not every retry
                    log.warning("worker watch: no events from the broker: %s", exc)
                self.listening_since = None
                stop.wait(2.0)

    def _check_loop(self, stop: threading.Event, interval: float) -> None:
        while not stop.wait(interval):
            try:
                self.check()
            except OnfhError as exc:
                log.warning("worker watch: check failed: %s", exc)
            except Exception:  # the watch must survive anything
                log.exception("worker watch: check failed")


__all__ = [
    "HEARTBEAT_EXPIRY",
    "Requeued",
    "Sender",
    "WorkerIdentity",
    "WorkerWatch",
    "process_alive",
    "requeue_dead_local_workers",
    "requeue_jobs",
    "this_host",
]
