"""Who may read the status page: a real HTTP(S) server over the listener's routes.

The server is the listener's (``HttpServer`` with the ``StatusPage`` routes and the
settings' status token) on a SQLite state DB that has seen one study; requests are real
HTTP from ``urllib``. The full service (listener process, a processed study, /metrics)
is checked in ``test_observability``.
"""

from __future__ import annotations

import http.client
import shutil
import ssl
import subprocess
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from html_checks import ParsedHtml
from prometheus_client import CollectorRegistry

from listener.status_page import StatusPage, status_auth
from onfh_dlr.errors import ConfigurationError
from onfh_dlr.settings import load_settings
from onfh_dlr.state import StateDB, default_database_url
from onfh_dlr.web import SESSION_COOKIE, HttpServer, Request, TokenAuth, server_tls_context

TOKEN = "status-" + "a1b2c3d4e5f6a7b8c9d0"
ADMIN = "admin-" + "0f9e8d7c6b5a49382716"
STUDY_UID = "1.2.826.0.1.3680043.10.1174.42.1"
SERIES_UID = "1.2.826.0.1.3680043.10.1174.42.1.7"
ACCESSION = "ACC7734021"
IDENTIFIERS = (STUDY_UID, SERIES_UID, ACCESSION, SERIES_UID[-12:])
PAGES = ("/", f"/series/{SERIES_UID}", "/dead-letters", "/verdicts", "/drift")


@dataclass
class Answer:
    status: int
    body: str
    headers: http.client.HTTPMessage


@dataclass
class Site:
    server: HttpServer
    db: StateDB
    context: ssl.SSLContext | None = None  # the client's, when the server speaks HTTPS

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        form: Mapping[str, str] | None = None,
    ) -> Answer:
        """One request, redirects not followed (the tests check where they point)."""
        if self.context is not None:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                "localhost", self.server.port, context=self.context, timeout=10
            )
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        body = urllib.parse.urlencode(form).encode() if form is not None else None
        sent = dict(headers or {})
        if body is not None:
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            return Answer(response.status, response.read().decode(), response.headers)
        finally:
            conn.close()


def seen_study(db: StateDB) -> None:
    """The state DB after one study was received and dead-lettered."""
    db.series_received(
        series_uid=SERIES_UID,
        study_uid=STUDY_UID,
        instances=24,
        at=time.time() - 60,
        accession_number=ACCESSION,
        modality="MR",
        description="COR T2 FS HIPS",
        calling_ae="MODALITY",
    )
    db.admit_series(SERIES_UID, Path("/nonexistent"))


def serve(
    tmp_path: Path, token: str | None, context: ssl.SSLContext | None = None
) -> Iterator[Site]:
    db = StateDB(default_database_url(tmp_path))
    db.create_schema()
    seen_study(db)
    page = StatusPage(db, ADMIN, lambda _job: None)
    server = HttpServer(
        "127.0.0.1",
        0,
        registry=CollectorRegistry(),
        checks={"database": db.ping},
        routes=page.routes,
        auth=TokenAuth(token, secure_cookie=context is not None),
        ssl_context=context,
    ).start()
    try:
        yield Site(server, db)
    finally:
        server.stop()
        db.dispose()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    yield from serve(tmp_path, TOKEN)


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_no_identifiers(text: str) -> None:
    for identifier in IDENTIFIERS:
        assert identifier not in text


@pytest.mark.parametrize("path", [*PAGES, "/no-such-page", "/series/"])
@pytest.mark.parametrize("accept", ["text/html", "*/*"])
def test_every_status_page_route_answers_401_without_credentials_and_shows_no_identifier(
    site: Site, path: str, accept: str
) -> None:
    answer = site.request("GET", path, headers={"Accept": accept})
    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert_no_identifiers(answer.body)
    assert "Jobs:" not in answer.body  # not even the counts by state
    if accept == "text/html":  # a browser gets the sign-in form
        parsed = ParsedHtml()
        parsed.feed(answer.body)
        assert parsed.errors == []
        assert ("input", "name", "token") in parsed.attrs


def test_with_the_bearer_token_every_page_answers_200_with_its_identifiers(site: Site) -> None:
    home = site.request("GET", "/", headers=bearer())
    assert home.status == 200
    assert ACCESSION in home.body and SERIES_UID in home.body
    series = site.request("GET", f"/series/{SERIES_UID}", headers=bearer())
    assert series.status == 200 and STUDY_UID in series.body and ACCESSION in series.body
    assert site.request("GET", "/dead-letters", headers=bearer()).status == 200


@pytest.mark.parametrize(
    "authorization",
    [
        f"Bearer {TOKEN[:-1]}",
        f"Bearer {TOKEN}x",
        f"Basic {TOKEN}",
        TOKEN,
        "Bearer ",
        f"Bearer {TOKEN.upper()}",
    ],
)
def test_a_wrong_token_answers_401(site: Site, authorization: str) -> None:
    answer = site.request("GET", "/", headers={"Authorization": authorization})
    assert answer.status == 401
    assert_no_identifiers(answer.body)


def test_the_retry_action_needs_the_status_token_and_then_its_own_admin_token(
    site: Site,
) -> None:
    path = "/jobs/no-such-job/retry"
    assert site.request("POST", path, form={"token": ADMIN}).status == 401
    assert site.request("POST", path, headers=bearer(), form={"token": TOKEN}).status == 403
    answer = site.request("POST", path, headers=bearer(), form={"token": ADMIN})
    assert answer.status == 303 and "not+dead-lettered" in answer.headers["Location"]


def session_cookie(answer: Answer) -> str:
    cookie = answer.headers["Set-Cookie"]
    name_value = cookie.split(";")[0]
    assert name_value.startswith(f"{SESSION_COOKIE}=")
    return name_value


def test_signing_in_sets_a_signed_http_only_strict_cookie_that_opens_the_page(
    site: Site,
) -> None:
    form = site.request("GET", "/sign-in?next=/dead-letters", headers={"Accept": "text/html"})
    assert form.status == 200 and "name='token'" in form.body
    assert_no_identifiers(form.body)
    wrong = site.request("POST", "/sign-in", form={"token": TOKEN[::-1], "next": "/"})
    assert wrong.status == 401 and "Set-Cookie" not in wrong.headers
    answer = site.request("POST", "/sign-in", form={"token": TOKEN, "next": "/dead-letters"})
    assert answer.status == 303 and answer.headers["Location"] == "/dead-letters"
    attributes = [part.strip() for part in answer.headers["Set-Cookie"].split(";")]
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= set(attributes)
    assert "Secure" not in attributes  # plain HTTP: a Secure cookie would never come back
    cookie = session_cookie(answer)
    assert TOKEN not in cookie
    home = site.request("GET", "/", headers={"Cookie": cookie})
    assert home.status == 200 and ACCESSION in home.body
    out = site.request("POST", "/sign-out", headers={"Cookie": cookie})
    assert out.status == 303 and "Max-Age=0" in out.headers["Set-Cookie"]


def test_a_forged_tampered_or_expired_cookie_answers_401(site: Site, tmp_path: Path) -> None:
    signed_in = site.request("POST", "/sign-in", form={"token": TOKEN})
    name, _, value = session_cookie(signed_in).partition("=")
    version, expires, signature = value.split(".")
    later = str(int(expires) + 10**6)
    for forged in (
        f"{version}.{later}.{signature}",  # a longer session, old signature
        f"{version}.{expires}.{signature[:-1]}{'0' if signature[-1] != '0' else '1'}",
        f"{version}.{expires}",
        "v1.9999999999.00",
        "",
    ):
        answer = site.request("GET", "/", headers={"Cookie": f"{name}={forged}"})
        assert answer.status == 401, forged
    # A cookie signed under another token is no good either.
    other = TokenAuth("another-token-of-20ch").routes[("POST", "/sign-in")]

    foreign = other(Request("POST", "/sign-in", {}, {"token": ["another-token-of-20ch"]}, {}))
    cookie = foreign.headers["Set-Cookie"].split(";")[0]
    assert site.request("GET", "/", headers={"Cookie": cookie}).status == 401
    # Expiry: the same signing, a clock past the session's end.
    auth = TokenAuth(TOKEN, session_seconds=60, clock=lambda: 1_000_000.0)
    issued = auth.sign_in(Request("POST", "/sign-in", {}, {"token": [TOKEN]}, {}))
    expired_cookie = issued.headers["Set-Cookie"].split(";")[0]
    fresh = Request("GET", "/", {}, {}, {"cookie": expired_cookie})
    assert auth.allows(fresh)
    assert not TokenAuth(TOKEN, session_seconds=60, clock=lambda: 1_000_061.0).allows(fresh)


def test_sign_in_only_redirects_to_paths_on_this_server(site: Site) -> None:
    for target in ("https://evil.example/", "//evil.example/x", "javascript:alert(1)"):
        answer = site.request("POST", "/sign-in", form={"token": TOKEN, "next": target})
        assert answer.status == 303 and answer.headers["Location"] == "/"


def test_metrics_and_probes_stay_open_and_name_no_study(site: Site) -> None:
    for path in ("/metrics", "/healthz", "/readyz"):
        answer = site.request("GET", path)
        assert answer.status == 200, path
        assert_no_identifiers(answer.body)


def test_without_a_configured_token_the_page_is_off_and_says_how_to_turn_it_on(
    tmp_path: Path,
) -> None:
    for site in serve(tmp_path, None):
        for path in PAGES:
            for accept in ("text/html", "*/*"):
                answer = site.request("GET", path, headers={"Accept": accept})
                assert answer.status == 401
                assert "ONFH_STATUS_TOKEN" in answer.body
                assert_no_identifiers(answer.body)
        # Not even an empty bearer or an empty form gets in.
        assert site.request("GET", "/", headers={"Authorization": "Bearer "}).status == 401
        assert site.request("POST", "/sign-in", form={"token": ""}).status == 401
        assert site.request("GET", "/healthz").status == 200


def test_routes_beyond_metrics_and_health_cannot_be_served_without_an_auth(
    tmp_path: Path,
) -> None:
    db = StateDB(default_database_url(tmp_path))
    page = StatusPage(db, None, lambda _job: None)
    with pytest.raises(ValueError, match="auth"):
        HttpServer("127.0.0.1", 0, registry=CollectorRegistry(), checks={}, routes=page.routes)


# --- the token from the settings ----------------------------------------------------------


def test_the_status_token_comes_from_the_environment_or_a_secret_file(tmp_path: Path) -> None:
    from_env = load_settings(environ={"ONFH_STATUS_TOKEN": TOKEN})
    assert status_auth(from_env, tls=False).token == TOKEN
    secret = tmp_path / "status-token"
    secret.write_text(TOKEN + "\n")  # as `kubectl create secret --from-file` leaves it
    from_file = load_settings(environ={"ONFH_STATUS_TOKEN_FILE": str(secret)})
    auth = status_auth(from_file, tls=True)
    assert auth.token == TOKEN and auth.secure_cookie
    assert status_auth(load_settings(environ={}), tls=False).token is None


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"ONFH_STATUS_TOKEN": "short"}, "shorter than 16"),
        ({"ONFH_STATUS_TOKEN_FILE": "/nonexistent/token"}, "cannot read"),
        ({"ONFH_STATUS_TOKEN": TOKEN, "ONFH_STATUS_TOKEN_FILE": "/x"}, "not both"),
    ],
)
def test_a_bad_status_token_setting_is_refused_at_start_up(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        status_auth(load_settings(environ=environ), tls=False)


# --- HTTPS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl CLI is required (Debian package openssl)")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"),
            *("-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return d / "cert.pem", d / "key.pem"


def test_with_tls_the_page_is_served_over_https_only_with_a_secure_cookie(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    client = ssl.create_default_context(cafile=str(cert))
    for site in serve(tmp_path, TOKEN, server_tls_context(cert, key)):
        site.context = client
        assert site.request("GET", "/", headers=bearer()).status == 200
        assert site.request("GET", "/metrics").status == 200
        signed_in = site.request("POST", "/sign-in", form={"token": TOKEN})
        assert "Secure" in [p.strip() for p in signed_in.headers["Set-Cookie"].split(";")]
        # Plain HTTP to the HTTPS port gets no page (the handshake fails), and the
        # server goes on serving.
        site.context = None
        with pytest.raises((http.client.HTTPException, OSError)):
            site.request("GET", "/", headers=bearer())
        site.context = client
        assert site.request("GET", "/healthz").status == 200


def test_a_missing_certificate_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="TLS"):
        server_tls_context(tmp_path / "cert.pem", tmp_path / "key.pem")
