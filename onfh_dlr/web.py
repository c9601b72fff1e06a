"""The small HTTP server of each process: metrics, health, and (listener) the status page.

Standard library only (``http.server``), one thread per request, bound to
``ONFH_HTTP_HOST:port``. ``/healthz`` answers 200 while the process runs; ``/readyz`` runs
the process' readiness checks and answers 200 or 503 with what failed, as JSON. These and
``/metrics`` are open to scrapers and probes and carry no identifiers of a study.

Every further route (the status page) requires a :class:`TokenAuth`: a bearer token, or a
session cookie set by signing in with that token. The cookie is an expiry time signed
with HMAC-SHA256 under a key derived from the token, so no session store is needed,
several listener replicas accept each other's sessions, and changing the token signs
everyone out. With an ``ssl_context`` the port speaks only HTTPS.

Imported by the listener and the worker (their HTTP servers); imports nothing of theirs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from html import escape
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from onfh_dlr.errors import ConfigurationError

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024  # the only POSTs are the sign-in and retry forms
HANDSHAKE_TIMEOUT: Final = 10.0  # seconds a client has to finish the TLS handshake
REQUEST_TIMEOUT: Final = 30.0  # seconds a client may take between two reads
SESSION_COOKIE: Final = "onfh_status_session"
#: Routes every process serves to anyone: probes and scrapers hold no credentials.
OPEN_ROUTES: Final = frozenset({("GET", "/metrics"), ("GET", "/healthz"), ("GET", "/readyz")})
# Sent with every answer: no framing (clickjacking of the retry form), no inline script,
# no referrer (a series URL names a UID), and no guessing of content types.
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True)
class Request:
    """What a route handler sees of a request."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    form: Mapping[str, list[str]]
    headers: Mapping[str, str]  # names lower-cased

    def header(self, name: str) -> str:
        """The value of header ``name`` (any case), or ``""``."""
        return self.headers.get(name.lower(), "")

    def wants_html(self) -> bool:
        """Whether the client is a browser (it asks for HTML)."""
        return "text/html" in self.header("accept")


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

_SIGN_IN_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:3rem auto;max-width:28rem;color:#1d2530}"
    "h1{font-size:1.2rem}input{width:100%;padding:.4rem;margin:.4rem 0;box-sizing:border-box}"
    ".note{background:#fff4e5;border:1px solid #f0c36d;padding:.5rem}"
)


def _sign_in_page(status: int, message: str, next_path: str, *, enabled: bool) -> Response:
    """The small page a browser gets instead of the status page: a form, nothing else."""
    form = (
        "<form method='post' action='/sign-in'>"
        f"<input type='hidden' name='next' value='{escape(next_path)}'>"
        "<label>Status token<input type='password' name='token' autocomplete='current-password'"
        " required autofocus></label><button type='submit'>Sign in</button></form>"
        if enabled
        else ""
    )
    note = f"<p class='note'>{escape(message)}</p>" if message else ""
    return Response.html(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>Sign in · onfh-dlr</title><style>{_SIGN_IN_STYLE}</style></head><body>"
        f"<h1>onfh-dlr status page</h1>{note}{form}</body></html>",
        status,
    )


DISABLED: Final = (
    "The status page is off: no status token is configured. Set ONFH_STATUS_TOKEN "
    "(or ONFH_STATUS_TOKEN_FILE, a file holding it) and restart the listener."
)


def _local_path(value: str) -> str:
    """``value`` if it is a path on this server, else ``/``: sign-in never redirects away."""
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


@dataclass(frozen=True)
class TokenAuth:
    """Who may use the routes beyond metrics and health: holders of one token.

    Parameters
    ----------
    token
        The status token; ``None`` (not configured) refuses every request, saying how to
        configure one.
    secure_cookie
        Mark the session cookie ``Secure`` (the server speaks HTTPS).
    session_seconds
        How long a sign-in lasts.
    clock
        Seconds since the epoch (tests move it).
    """

    token: str | None
    secure_cookie: bool = False
    session_seconds: float = 12 * 3600.0
    clock: Callable[[], float] = time.time

    @property
    def routes(self) -> dict[tuple[str, str], Handler]:
        """The sign-in and sign-out routes (open: they are how one gets in)."""
        return {
            ("GET", "/sign-in"): self.sign_in_page,
            ("POST", "/sign-in"): self.sign_in,
            ("POST", "/sign-out"): self.sign_out,
        }

    def allows(self, request: Request) -> bool:
        """Whether ``request`` carries the token (bearer) or a valid session cookie."""
        if not self.token:
            return False
        scheme, _, credentials = request.header("authorization").partition(" ")
        if scheme.lower() == "bearer":
            return self._is_token(credentials.strip())
        return self._valid_session(self._cookie(request))

    def challenge(self, request: Request, message: str = "") -> Response:
        """The 401 a request without valid credentials gets: it shows nothing else."""
        if not self.token:
            message = DISABLED
        headers = {"WWW-Authenticate": 'Bearer realm="onfh-dlr status page"'}
        if request.wants_html():
            # Back to a top-level page after sign-in; a deeper path (/series/<UID>) is
            # not echoed: the answer holds nothing that names a study.
            back = _local_path(request.path) if request.path.count("/") <= 1 else "/"
            page = _sign_in_page(401, message, back, enabled=bool(self.token))
            return Response(page.status, page.body, page.content_type, headers)
        text = message or "authentication required: Authorization: Bearer <status token>"
        return Response(401, f"{text}\n".encode(), headers=headers)

    def sign_in_page(self, request: Request) -> Response:
        next_path = _local_path(request.query.get("next", ["/"])[0])
        if self.allows(request):
            return Response.redirect(next_path)
        if not self.token:
            return _sign_in_page(401, DISABLED, next_path, enabled=False)
        return _sign_in_page(200, "", next_path, enabled=True)

    def sign_in(self, request: Request) -> Response:
        """Check the form's token; right: a session cookie and back to where one was going."""
        next_path = _local_path(request.form.get("next", ["/"])[0])
        token = request.form.get("token", [""])[0]
        if not self.token:
            return _sign_in_page(401, DISABLED, next_path, enabled=False)
        if not self._is_token(token):
            return _sign_in_page(401, "Wrong token.", next_path, enabled=True)
        expires = int(self.clock() + self.session_seconds)
        cookie = (
            f"{SESSION_COOKIE}={self._session_value(expires)}; Path=/; "
            f"Max-Age={int(self.session_seconds)}; HttpOnly; SameSite=Strict"
            + ("; Secure" if self.secure_cookie else "")
        )
        return Response(303, b"", headers={"Location": next_path, "Set-Cookie": cookie})

    def sign_out(self, request: Request) -> Response:
        """Drop the browser's cookie (a stateless session cannot be revoked server-side:
        change the token to sign everyone out)."""
        cookie = f"{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict" + (
            "; Secure" if self.secure_cookie else ""
        )
        return Response(303, b"", headers={"Location": "/sign-in", "Set-Cookie": cookie})

    def _is_token(self, candidate: str) -> bool:
        assert self.token is not None
        return hmac.compare_digest(candidate.encode(), self.token.encode())

    def _key(self) -> bytes:
        # A key of its own, so that a cookie never is, nor reveals, the token itself.
        assert self.token is not None
        return hmac.new(self.token.encode(), b"onfh-dlr status session v1", hashlib.sha256).digest()

    def _session_value(self, expires: int) -> str:
        payload = f"v1.{expires}"
        signature = hmac.new(self._key(), payload.encode(), hashlib.sha256).hexdigest()
        return f"{payload}.{signature}"

    def _valid_session(self, value: str) -> bool:
        version, _, rest = value.partition(".")
        expires = rest.partition(".")[0]
        if version != "v1" or not expires.isdigit() or len(expires) > 12:
            return False
        if not hmac.compare_digest(value.encode(), self._session_value(int(expires)).encode()):
            return False
        return int(expires) > self.clock()

    @staticmethod
    def _cookie(request: Request) -> str:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(request.header("cookie"))
        except CookieError:
            return ""
        morsel = jar.get(SESSION_COOKIE)
        return morsel.value if morsel is not None else ""


def read_token(value: str | None, file: Path | None, what: str) -> str | None:
    """A secret given as a value or as a file holding it (surrounding whitespace dropped).

    Raises
    ------
    ConfigurationError
        If both are given, the file cannot be read or is empty, or the token is shorter
        than 16 characters (a short token is guessed by trying).
    """
    if value is not None and file is not None:
        raise ConfigurationError(f"set {what} or {what}_FILE, not both")
    if file is not None:
        try:
            value = file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"cannot read {what}_FILE {file}: {exc}") from exc
        if not value:
            raise ConfigurationError(f"{what}_FILE {file} is empty")
    if value is not None and len(value.strip()) < 16:
        raise ConfigurationError(f"{what} is shorter than 16 characters")
    return value.strip() if value is not None else None


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """An HTTPS server context (TLS >= 1.2) with ``cert``/``key``; no client certificates
    are asked for: browsers, Prometheus and probes have none.

    Raises
    ------
    ConfigurationError
        If the certificate or key cannot be loaded.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile=cert, keyfile=key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"cannot load TLS certificate or key: {exc}") from exc
    return context


class _Server(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` that, with a context, does the TLS handshake in the request's
    own thread: a client that connects and stalls holds up only itself."""

    daemon_threads = True
    ssl_context: ssl.SSLContext | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.ssl_context is None:
            super().finish_request(request, client_address)
            return
        assert isinstance(request, socket.socket)
        request.settimeout(HANDSHAKE_TIMEOUT)
        tls = self.ssl_context.wrap_socket(request, server_side=True)
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Plain HTTP to an HTTPS port, a scanner, a dropped connection: not our error.
        log.debug("HTTP connection from %s failed", client_address, exc_info=True)


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
        Each requires ``auth``.
    auth
        Who may use ``routes``; required when there are any (no route is open by
        omission). Its sign-in routes are added.
    ssl_context
        Serve HTTPS only (see :func:`server_tls_context`); ``None``: plain HTTP.

    Raises
    ------
    ValueError
        If ``routes`` are given without ``auth``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        registry: CollectorRegistry,
        checks: Mapping[str, Check],
        routes: Mapping[tuple[str, str], Handler] | None = None,
        auth: TokenAuth | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if routes and auth is None:
            raise ValueError("routes beyond metrics and health need an auth")
        self.auth = auth
        self.routes: dict[tuple[str, str], Handler] = {
            ("GET", "/metrics"): lambda _r: Response(
                200, generate_latest(registry), CONTENT_TYPE_LATEST
            ),
            ("GET", "/healthz"): lambda _r: Response.json({"alive": True}),
            ("GET", "/readyz"): lambda _r: readiness(checks),
        }
        self.open_routes = set(OPEN_ROUTES)
        if auth is not None:
            self.routes.update(auth.routes)
            self.open_routes |= set(auth.routes)
        for route, handler in (routes or {}).items():
            if route in self.open_routes:
                raise ValueError(f"route {route} is reserved")
            self.routes[route] = handler
        self.tls = ssl_context is not None
        self._server = _Server((host, port), self._handler_class())
        self._server.ssl_context = ssl_context
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HttpServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"http:{self.port}", daemon=True
        )
        self._thread.start()
        log.info(
            "%s (metrics, health%s) on port %d",
            "HTTPS" if self.tls else "HTTP",
            ", status page" if self.auth is not None else "",
            self.port,
        )
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
            if self.auth is not None and not self.auth.allows(request):
                return self.auth.challenge(request)  # not even which paths exist
            return Response.text(404, "not found\n")
        prefix, handler = max(matches, key=lambda m: len(m[0]))
        if (request.method, prefix) not in self.open_routes:
            assert self.auth is not None  # __init__: no protected route without auth
            if not self.auth.allows(request):
                return self.auth.challenge(request)
        try:
            return handler(request)
        except Exception:
            log.exception("HTTP %s %s failed", request.method, request.path)
            return Response.text(500, "internal error\n")

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class _Handler(BaseHTTPRequestHandler):
            timeout = REQUEST_TIMEOUT

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
                headers = {name.lower(): value for name, value in self.headers.items()}
                request = Request(method, unquote(url.path), parse_qs(url.query), form, headers)
                self._send(server.dispatch(request))

            def _send(self, response: Response) -> None:
                self.send_response(response.status)
                self.send_header("Content-Type", response.content_type)
                self.send_header("Content-Length", str(len(response.body)))
                self.send_header("Cache-Control", "no-store")
                for key, value in SECURITY_HEADERS.items():
                    self.send_header(key, value)
                for key, value in response.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(response.body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http: " + format, *args)

        return _Handler


__all__ = [
    "OPEN_ROUTES",
    "SESSION_COOKIE",
    "Check",
    "Handler",
    "HttpServer",
    "Request",
    "Response",
    "TokenAuth",
    "read_token",
    "readiness",
    "server_tls_context",
]
