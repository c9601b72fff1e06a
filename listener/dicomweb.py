"""STOW-RS in: DICOMweb ``POST /studies`` and ``POST /studies/{study}`` (PS3.18 10.5).

Served by the listener process on its own port (``dicomweb_port``) with Starlette on
uvicorn, in a thread beside the DICOM server; the body is parsed by python-multipart's
streaming parser. Each ``application/dicom`` part goes through the C-STORE handler's own
:meth:`~listener.scp.StoreHandler.accept` (same checks, same durable write before it is
acknowledged, same intake); the request's end counts as an association release for the
series it stored into.

Answers (PS3.18 Table 10.5.3-1):

=====  ============================================================================
200    every instance stored (``ReferencedSOPSequence``)
202    some stored, some refused (``FailedSOPSequence`` with a PS3.18 failure reason,
       the C-STORE status of :mod:`listener.scp`, per refused instance)
409    none stored (same body)
400    the body is not well-formed multipart (truncated, no closing boundary, no part),
       or the target study in the path is not a valid UID (``../../etc``)
401    no bearer token, or the wrong one
403    the peer address is outside ``allowed_hosts``
413    the declared or the streamed length exceeds ``dicomweb_max_request``
415    not ``multipart/related; type="application/dicom"`` with a boundary
503    more than ``MAX_CONNECTIONS`` connections at once (uvicorn)
=====  ============================================================================

A request answered 400, 401, 403, 413 or 415 stores nothing: the whole body is read and
parsed (in memory, at most ``dicomweb_max_request`` bytes) before any part is stored; a
peer that leaves before its body ends stores nothing either. The endpoint is off without
``dicomweb_token``; with ``tls_cert``/``tls_key`` it speaks only HTTPS, with ``tls_ca`` it
requires client certificates, as the DICOM port does.
"""

from __future__ import annotations

import hmac
import io
import logging
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pydicom
import uvicorn
from pydicom.dataset import Dataset
from pydicom.uid import UID
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from listener.peers import build_ssl_context, host_allowed, parse_allowed_hosts
from listener.scp import CANNOT_UNDERSTAND, SUCCESS, Acceptance, Received, StoreHandler
from listener.uids import is_valid_uid
from onfh_dlr.errors import ConfigurationError
from onfh_dlr.metrics import ASSOCIATIONS, INSTANCES
from onfh_dlr.settings import Settings, Transport

log = logging.getLogger(__name__)
# python-multipart logs each syntax error it raises; the refusal is logged once, here.
logging.getLogger("python_multipart").setLevel(logging.ERROR)

DICOM_JSON = "application/dicom+json"
MAX_CONNECTIONS = 32  # concurrent connections; more are answered 503 by uvicorn
MAX_BOUNDARY = 200  # characters of a multipart boundary (python-multipart accepts 256)
_MAX_PARTS = 10_000  # parts per request; a body of empty parts must not cost unbounded work


@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)


class MalformedBodyError(Exception):
    """The request body is not a complete, well-formed multipart body."""


class BodyTooLargeError(Exception):
    """The request body is longer than the configured limit."""


class _MultipartCollector:
    """Collects the parts of a multipart body fed in chunks (python-multipart's parser)."""

    def __init__(self, boundary: bytes, limit: int) -> None:
        self.parts: list[_Part] = []
        self.size = 0
        self.limit = limit
        self.ended = False
        self._field = bytearray()
        self._value = bytearray()
        self.parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._part_begin,
                "on_part_data": self._part_data,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_end": self._end,
            },
        )

    def _part_begin(self) -> None:
        if len(self.parts) >= _MAX_PARTS:
            raise MalformedBodyError(f"more than {_MAX_PARTS} parts")
        self.parts.append(_Part())

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self.parts[-1].body += data[start:end]

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        name = self._field.decode("latin-1").strip().lower()
        self.parts[-1].headers[name] = self._value.decode("latin-1").strip()
        self._field.clear()
        self._value.clear()

    def _end(self) -> None:
        self.ended = True

    def feed(self, chunk: bytes) -> None:
        """Parse the next chunk of the body.

        Raises
        ------
        BodyTooLargeError
            The body so far exceeds the limit.
        MalformedBodyError
            The chunk breaks the multipart syntax, or data follows the closing boundary.
        """
        self.size += len(chunk)
        if self.size > self.limit:
            raise BodyTooLargeError(f"more than {self.limit} bytes")
        if not chunk:
            return
        if self.ended:  # an epilogue after the closing boundary is ignored (RFC 2046)
            return
        try:
            self.parser.write(chunk)
        except MultipartParseError as exc:
            raise MalformedBodyError(str(exc)) from None

    def finish(self) -> list[_Part]:
        """The parts, once the body has ended.

        Raises
        ------
        MalformedBodyError
            The closing boundary never came, or there is no part.
        """
        if not self.ended:
            raise MalformedBodyError("no closing boundary (truncated body?)")
        if not self.parts:
            raise MalformedBodyError("no part")
        return self.parts


def _media_type(value: str) -> tuple[str, dict[str, str]]:
    kind, params = parse_options_header(value)
    return (
        kind.decode("latin-1").lower(),
        {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in params.items()},
    )


def _received_part(
    part: _Part, *, session: object, source: str, study: str | None
) -> Received | None:
    """A part as the C-STORE handler's :class:`~listener.scp.Received`, or None when it is
    not a PS3.10 file (no preamble, ``DICM`` prefix or readable file meta).

    The part's file meta declares the instance (as a C-STORE request does); the bytes
    stored are the part exactly as received.
    """
    data = bytes(part.body)
    try:
        meta = pydicom.dcmread(io.BytesIO(data), force=False, specific_tags=[]).file_meta
        declared_instance = str(meta.get("MediaStorageSOPInstanceUID", "") or "")
        declared_class = str(meta.get("MediaStorageSOPClassUID", "") or "")
        syntax = UID(str(meta.get("TransferSyntaxUID", "") or ""))
    except Exception as exc:
        log.warning("STOW-RS from %s: a part is not a DICOM file (%s)", source, type(exc).__name__)
        return None

    def decode() -> Dataset:
        return pydicom.dcmread(io.BytesIO(data), force=False)

    return Received(
        session=session,
        source=source,
        transport=Transport.STOW_RS,
        declared_instance=declared_instance,
        declared_class=declared_class,
        transfer_syntax=syntax,
        decode=decode,
        encode=lambda: [data],
        study=study,
    )


def _response_body(outcomes: Sequence[Acceptance]) -> dict[str, Any]:
    """The STOW-RS response dataset (DICOM JSON, PS3.18 F.2)."""
    stored: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for outcome in outcomes:
        item: dict[str, Any] = {}
        if outcome.sop_class_uid:
            item["00081150"] = {"vr": "UI", "Value": [outcome.sop_class_uid]}
        if outcome.sop_instance_uid:
            item["00081155"] = {"vr": "UI", "Value": [outcome.sop_instance_uid]}
        if outcome.status == SUCCESS:
            stored.append(item)
        else:
            item["00081197"] = {"vr": "US", "Value": [outcome.status]}
            failed.append(item)
    body: dict[str, Any] = {}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": stored}
    return body


class StowApp:
    """The Starlette application serving STOW-RS into a :class:`~listener.scp.StoreHandler`.

    Parameters
    ----------
    handler
        The C-STORE handler whose :meth:`~listener.scp.StoreHandler.accept` stores parts.
    token
        The bearer token every request must carry.
    max_request
        The largest request body accepted, in bytes.
    allowed_hosts
        Peer networks allowed (empty: any), as for the DICOM port.
    """

    def __init__(
        self,
        handler: StoreHandler,
        token: str,
        *,
        max_request: int,
        allowed_hosts: Sequence[str] = (),
    ) -> None:
        self.handler = handler
        self.token = token.encode()
        self.max_request = max_request
        self.networks = parse_allowed_hosts(allowed_hosts)
        self.app = Starlette(
            routes=[
                Route("/studies", self.stow, methods=["POST"]),
                Route("/studies/{study:path}", self.stow, methods=["POST"]),
            ]
        )

    def _authorised(self, request: Request) -> bool:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(credentials.strip().encode(), self.token)

    async def stow(self, request: Request) -> Response:
        """``POST /studies[/{study}]``."""
        peer = request.client.host if request.client else "?"
        if not host_allowed(peer, self.networks):
            log.warning("STOW-RS from %s refused: not in allowed_hosts", peer)
            ASSOCIATIONS.labels(Transport.STOW_RS.value, "rejected").inc()
            return _problem(403, "peer address not allowed")
        if not self._authorised(request):
            log.warning("STOW-RS from %s refused: missing or wrong bearer token", peer)
            ASSOCIATIONS.labels(Transport.STOW_RS.value, "rejected").inc()
            return _problem(401, "bearer token required", {"WWW-Authenticate": "Bearer"})
        # A request that passed address and token is what an accepted association is.
        ASSOCIATIONS.labels(Transport.STOW_RS.value, "accepted").inc()
        study: str | None = request.path_params.get("study")
        if study is not None and (study != study.strip("\x00 ") or not is_valid_uid(study)):
            log.warning("STOW-RS from %s refused: target study %r is not a UID", peer, study[:72])
            return _problem(400, "the target study is not a valid DICOM UID")
        kind, params = _media_type(request.headers.get("content-type", ""))
        boundary = params.get("boundary", "")
        if (
            kind != "multipart/related"
            or params.get("type", "").lower() != "application/dicom"
            or not boundary
            # RFC 2046 says 70 characters; Orthanc sends two UUIDs (73).
            or len(boundary) > MAX_BOUNDARY
        ):
            log.warning(
                "STOW-RS from %s refused: content type %r",
                peer,
                request.headers.get("content-type", "")[:200],
            )
            return _problem(415, 'multipart/related; type="application/dicom" expected')
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                return _problem(400, "invalid Content-Length")
            if int(declared) > self.max_request:
                log.warning("STOW-RS from %s refused: %s bytes declared", peer, declared)
                return _problem(413, f"at most {self.max_request} bytes per request")

        collector = _MultipartCollector(boundary.encode("latin-1"), self.max_request)
        try:
            async for chunk in request.stream():
                collector.feed(chunk)
            parts = collector.finish()
        except BodyTooLargeError:
            log.warning("STOW-RS from %s refused: body over %d bytes", peer, self.max_request)
            return _problem(413, f"at most {self.max_request} bytes per request")
        except MalformedBodyError as exc:
            log.warning("STOW-RS from %s refused: malformed multipart body (%s)", peer, exc)
            return _problem(400, "malformed multipart body")
        except ClientDisconnect:
            log.warning(
                "STOW-RS from %s: the peer left before the body ended; nothing stored", peer
            )
            return _problem(400, "incomplete body")
        outcomes = await run_in_threadpool(self._store, parts, peer, study)
        body = _response_body(outcomes)
        stored = sum(1 for o in outcomes if o.status == SUCCESS)
        status = 200 if stored == len(outcomes) else 202 if stored else 409
        log.info(
            "STOW-RS from %s: %d of %d instances stored%s",
            peer,
            stored,
            len(outcomes),
            f" into study {study}" if study else "",
        )
        return JSONResponse(body, status_code=status, media_type=DICOM_JSON)

    def _store(self, parts: Sequence[_Part], peer: str, study: str | None) -> list[Acceptance]:
        session = object()  # this request, as an association for the series tracker
        outcomes = []
        try:
            for part in parts:
                kind, _ = _media_type(part.headers.get("content-type", "application/dicom"))
                received = None
                if kind == "application/dicom":
                    received = _received_part(part, session=session, source=peer, study=study)
                else:
                    log.warning("STOW-RS from %s: a part of type %r refused", peer, kind[:64])
                if received is None:
                    INSTANCES.labels(Transport.STOW_RS.value, "refused_bad_dataset").inc()
                    outcomes.append(Acceptance(CANNOT_UNDERSTAND))
                    continue
                outcomes.append(self.handler.accept(received))
        finally:
            self.handler.session_ended(session)
        return outcomes


def _problem(status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    return Response(text + "\n", status_code=status, media_type="text/plain", headers=headers)


class DicomWebServer:
    """The STOW-RS endpoint of the listener process, served by uvicorn in a thread.

    Parameters
    ----------
    settings
        ``dicomweb_token`` (required), ``dicomweb_port``, ``dicomweb_max_request``,
        ``host``, ``allowed_hosts`` and the ``tls_*`` files are used.
    handler
        The DICOM server's handler: parts are stored exactly as C-STORE instances are.

    Raises
    ------
    ConfigurationError
        Without a token, or when the TLS files or ``allowed_hosts`` are invalid.
    """

    def __init__(self, settings: Settings, handler: StoreHandler) -> None:
        if not settings.dicomweb_token:
            raise ConfigurationError("the STOW-RS endpoint needs dicomweb_token")
        build_ssl_context(settings)  # the same checks and errors as the DICOM port
        self.settings = settings
        self.stow = StowApp(
            handler,
            settings.dicomweb_token,
            max_request=settings.dicomweb_max_request,
            allowed_hosts=settings.allowed_hosts,
        )
        tls: dict[str, Any] = {}
        if settings.tls_cert is not None and settings.tls_key is not None:
            tls = {"ssl_certfile": str(settings.tls_cert), "ssl_keyfile": str(settings.tls_key)}
            if settings.tls_ca is not None:
                tls |= {"ssl_ca_certs": str(settings.tls_ca), "ssl_cert_reqs": ssl.CERT_REQUIRED}
        self.tls = bool(tls)
        config = uvicorn.Config(
            self.stow.app,
            host=settings.host,
            port=settings.dicomweb_port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_keep_alive=5,
            # Bodies are held in memory until parsed whole: bound how many at once.
            limit_concurrency=MAX_CONNECTIONS,
            **tls,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def serving(self) -> bool:
        """Whether the port is bound and accepting requests."""
        return bool(self._server.started) and not self._server.should_exit

    def start(self, timeout: float = 10.0) -> None:
        """Serve in a background thread; return once the port is bound.

        Raises
        ------
        ConfigurationError
            If the port cannot be bound within ``timeout``.
        """
        self._thread = threading.Thread(target=self._run, name="dicomweb", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigurationError(
                    f"cannot serve STOW-RS on {self.settings.host}:{self.settings.dicomweb_port}"
                )
            time.sleep(0.02)
        log.info(
            "STOW-RS on %s:%d/studies, %s, bearer token required",
            self.settings.host,
            self.settings.dicomweb_port,
            "HTTPS" if self.tls else "plain HTTP",
        )

    def _run(self) -> None:
        try:
            self._server.run()
        except SystemExit:  # uvicorn exits when it cannot bind; start() reports it
            log.error("the STOW-RS server stopped at start-up")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting requests; wait up to ``timeout`` s for running ones."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


__all__ = ["DICOM_JSON", "DicomWebServer", "StowApp"]
