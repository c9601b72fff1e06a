"""The small HTTP server of each process: metrics, health, and (listener) the status page.

Standard library only (``http.server``), one thread per request, bound to
``ONFH_HTTP_HOST:port``. ``/healthz`` answers 200 while the process runs; ``/readyz`` runs
the process' readiness checks and answers 200 or 503 with what failed, as JSON.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024  # the only POST is a retry form


@dataclass(frozen=True)
class Request:
    """What a route handler sees of a request."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    form: Mapping[str, list[str]]
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Response:
    """What a route handler answers."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def text(cls, status: int, text: str) -> Response:
        return cls(status, text.encode())

    @classmethod
    def html(cls, text: str, status: int = 200) -> Response:
        return cls(status, text.encode(), "text/html; charset=utf-8")

    @classmethod
    def json(cls, value: Any, status: int = 200) -> Response:
        return cls(status, json.dumps(value, indent=2).encode(), "application/json")

    @classmethod
    def redirect(cls, location: str) -> Response:
        return cls(303, b"", headers={"Location": location})


Handler = Callable[[Request], Response]
Check = Callable[[], None]  # raises when not ready; the message says why


def readiness(checks: Mapping[str, Check]) -> Response:
    """Run every check; 200 when all pass, else 503. The body names each outcome."""
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            check()
            results[name] = "ok"
        except Exception as exc:  # a check may fail any way; report, never raise
            results[name] = f"failed: {exc}"
    ready = all(v == "ok" for v in results.values())
    return Response.json({"ready": ready, "checks": results}, 200 if ready else 503)


class HttpServer:
    """Routes (method, path prefix) to handlers, in a background thread.

    Parameters
    ----------
    host, port
        Where to listen.
    registry
        The Prometheus registry served at ``/metrics``.
    checks
        Readiness checks for ``/readyz``.
    routes
        Further routes: ``{("GET", "/"): handler}``; the longest matching prefix wins.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        registry: CollectorRegistry,
        checks: Mapping[str, Check],
        routes: Mapping[tuple[str, str], Handler] | None = None,
    ) -> None:
        self.routes: dict[tuple[str, str], Handler] = {
            ("GET", "/metrics"): lambda _r: Response(
                200, generate_latest(registry), CONTENT_TYPE_LATEST
            ),
            ("GET", "/healthz"): lambda _r: Response.json({"alive": True}),
            ("GET", "/readyz"): lambda _r: readiness(checks),
        }
        self.routes.update(routes or {})
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HttpServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"http:{self.port}", daemon=True
        )
        self._thread.start()
        log.info("HTTP (metrics, health) on port %d", self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def dispatch(self, request: Request) -> Response:
        matches = [
            (prefix, handler)
            for (method, prefix), handler in self.routes.items()
            if method == request.method
            and (request.path == prefix or request.path.startswith(prefix.rstrip("/") + "/"))
        ]
        if not matches:
            return Response.text(404, "not found\n")
        _, handler = max(matches, key=lambda m: len(m[0]))
        try:
            return handler(request)
        except Exception:
            log.exception("HTTP %s %s failed", request.method, request.path)
            return Response.text(500, "internal error\n")

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer("GET", {})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    self._send(Response.text(413, "request too large\n"))
                    return
                body = self.rfile.read(length).decode("utf-8", errors="replace")
                self._answer("POST", parse_qs(body))

            def _answer(self, method: str, form: Mapping[str, list[str]]) -> None:
                url = urlsplit(self.path)
                request = Request(
                    method, unquote(url.path), parse_qs(url.query), form, dict(self.headers)
                )
                self._send(server.dispatch(request))

            def _send(self, response: Response) -> None:
                self.send_response(response.status)
                self.send_header("Content-Type", response.content_type)
                self.send_header("Content-Length", str(len(response.body)))
                self.send_header("Cache-Control", "no-store")
                for key, value in response.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(response.body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http: " + format, *args)

        return _Handler


__all__ = ["Check", "Handler", "HttpServer", "Request", "Response", "readiness"]
