"""Container health check of onfh-dlr: exit 0 when the process in this container answers.

The same image runs the listener (HTTP on ``ONFH_METRICS_PORT``), a worker
(``ONFH_WORKER_METRICS_PORT``) or ``serve`` (both), so the check asks each configured port
and is healthy when any of them answers 200. Standard library only: the image has no curl.
With ``ONFH_TLS_CERT``/``ONFH_TLS_KEY`` the listener's port speaks HTTPS (the worker's stays
plain HTTP); the check does not verify the certificate of its own loopback port, which
names the service, not 127.0.0.1.

Usage: ``python healthcheck.py [PATH]`` (default ``/healthz``; ``/readyz`` for readiness).
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request

PORT_VARIABLES = ("ONFH_METRICS_PORT", "ONFH_WORKER_METRICS_PORT")
TLS_PORT = "ONFH_METRICS_PORT"  # the listener's: HTTPS when the TLS files are set


def answers(port: str, path: str, timeout: float = 3.0, *, tls: bool = False) -> bool:
    """Whether ``http(s)://127.0.0.1:PORT/PATH`` answers 200."""
    context = None
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    scheme = "https" if tls else "http"
    try:
        with urllib.request.urlopen(
            f"{scheme}://127.0.0.1:{port}{path}", timeout=timeout, context=context
        ) as reply:
            return int(reply.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else "/healthz"
    tls = bool(os.environ.get("ONFH_TLS_CERT") and os.environ.get("ONFH_TLS_KEY"))
    ports = [
        (os.environ[name], tls and name == TLS_PORT)
        for name in PORT_VARIABLES
        if os.environ.get(name)
    ]
    return 0 if any(answers(port, path, tls=port_tls) for port, port_tls in ports) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
