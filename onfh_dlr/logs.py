"""Logging set-up of the service processes: plain text or one JSON object per line.

Records carry UIDs and job ids, never patient names or IDs: the service's own messages
are written that way, and nothing logs a whole dataset.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from urllib.parse import urlsplit, urlunsplit


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, process role, message."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "role": self.role,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(role: str, *, level: str = "INFO", as_json: bool = False) -> None:
    """Send the root logger to stderr in the chosen format (once per process)."""
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(JsonFormatter(role))
    else:
        handler.setFormatter(
            logging.Formatter(
                f"%(asctime)s {role}[%(process)d] %(levelname)s %(name)s: %(message)s"
            )
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # pynetdicom logs every PDU and highdicom every copied module at INFO: noise in a
    # service log. pykwalify logs each PyRadiomics parameter-file validation.
    for noisy in ("pynetdicom", "highdicom", "pykwalify"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def redacted_url(url: str) -> str:
    """``url`` with its password masked (``***``), for messages and logs.

    Works for database and broker URLs alike (``postgresql+psycopg://user:pw@host/db``,
    ``redis://:pw@host:6379/0``); a URL that cannot be parsed is not echoed at all.
    """
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    except ValueError:
        return "<unparsable URL>"


__all__ = ["JsonFormatter", "configure_logging", "redacted_url"]
