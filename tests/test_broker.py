"""The embedded Redis: AUTH, private files, and URLs that never show their password."""

from __future__ import annotations

import logging
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from onfh_dlr.broker import EmbeddedRedis
from onfh_dlr.logs import redacted_url
from onfh_dlr.queue import queue_depth

PASSWORD = 'pw with spaces/and"quotes'  # nothing a URL or redis.conf passes through as is


@pytest.fixture
def broker(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[EmbeddedRedis]:
    caplog.set_level(logging.INFO, logger="onfh_dlr.broker")
    server = EmbeddedRedis(tmp_path / "broker dir", password=PASSWORD).start()
    try:
        yield server
    finally:
        server.stop()


def test_the_embedded_broker_requires_its_password(broker: EmbeddedRedis) -> None:
    assert broker.ping()
    assert redis.Redis.from_url(broker.url).set("k", "v")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=broker.port or 0).set("k", "v")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=broker.port or 0, password="guess").set("k", "v")
    assert queue_depth(broker.url) == 0


def test_the_password_is_in_no_command_line_log_or_readable_file(
    broker: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    assert broker.process is not None
    cmdline = Path(f"/proc/{broker.process.pid}/cmdline").read_bytes()
    assert PASSWORD.encode() not in cmdline and b"requirepass" not in cmdline
    started = "\n".join(r.getMessage() for r in caplog.get_records("setup"))
    assert "embedded redis at redis://:***@127.0.0.1:" in started
    assert PASSWORD not in started
    for name in ("url", "redis.conf"):  # what `onfh-dlr status` reads; the server's config
        mode = (broker.directory / name).stat().st_mode
        assert stat.S_IMODE(mode) == 0o600, name
    assert (broker.directory / "url").read_text(encoding="utf-8").strip() == broker.url


def test_a_broker_restarted_with_its_password_keeps_its_queue(broker: EmbeddedRedis) -> None:
    redis.Redis.from_url(broker.url).rpush("onfh", "job-1")
    broker.stop()
    broker.start()
    assert queue_depth(broker.url) == 1  # the append-only file, read back


def test_without_a_password_the_broker_is_open_as_before(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as server:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        assert redis.Redis(host="127.0.0.1", port=server.port or 0).ping()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("rediss://user:s3cret@redis.example:6380/1", "rediss://user:***@redis.example:6380/1"),
        (
            "postgresql+psycopg://onfh:s3cret@db:5432/onfh",
            "postgresql+psycopg://onfh:***@db:5432/onfh",
        ),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("sqlite:////var/lib/onfh/state.db", "sqlite:////var/lib/onfh/state.db"),
        ("redis://:s3cret@[::1/0", "<unparsable URL>"),
    ],
)
def test_urls_are_shown_without_their_password(url: str, shown: str) -> None:
    assert redacted_url(url) == shown
