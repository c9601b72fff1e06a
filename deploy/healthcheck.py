"""Container health check of onfh-dlr: exit 0 when the process in this container answers.

The same image runs the listener (HTTP on ``ONFH_METRICS_PORT``), a worker
(``ONFH_WORKER_METRICS_PORT``) or ``serve`` (both), so the check asks each configured port
and is healthy when any of them answers 200. Standard library only: the image has no curl.

Usage: ``python healthcheck.py [PATH]`` (default ``/healthz``; ``/readyz`` for readiness).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

PORT_VARIABLES = ("ONFH_METRICS_PORT", "ONFH_WORKER_METRICS_PORT")


def answers(port: str, path: str, timeout: float = 3.0) -> bool:
    """Whether ``http://127.0.0.1:PORT/PATH`` answers 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as reply:
            return int(reply.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else "/healthz"
    ports = [os.environ[name] for name in PORT_VARIABLES if os.environ.get(name)]
    return 0 if any(answers(port, path) for port in ports) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
