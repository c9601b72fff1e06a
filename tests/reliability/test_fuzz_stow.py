"""Fuzzing the running listener's STOW-RS endpoint: malformed requests over raw HTTP.

The listener is the real process (``python -m onfh_dlr listener`` with a real Redis and
``ONFH_DICOMWEB_TOKEN`` set). Each case is one malformed request sent over a fresh
socket exactly as drawn (no client library tidies it up): broken or truncated multipart,
wrong or lying boundaries, wrong content types, missing or wrong tokens, declared lengths
over the limit, path-traversal target studies, and well-formed bodies whose parts are
not storable (random bytes, truncated or UID-damaged DICOM, other media types).

Every case must be answered with its 4xx status (never 5xx, never a hang; the server may
close the connection of a request it refuses before reading the body), the process must
stay alive and serve a good request afterwards, and **nothing** may be stored from the
cases: the spool holds only the good instance sent at the end, and nothing outside
``DATA_DIR/spool`` (and the state DB, broker and logs) changed.

Cases are drawn by hypothesis (derandomized): ``scale.fuzz_stow`` requests (300 in CI,
2,000 with ``RELIABILITY_SCALE=full``); the counts per kind go to ``fuzz-stow-summary.json``.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import socket
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from conftest import Scale
from fuzzing import ROOT_UID, Draw, allowed_to_change, log_exceptions, snapshot, stored_instances
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydicom.uid import UID
from service_harness import CohortMaker, PhantomStudy, Service, wait_until

from onfh_dlr.broker import free_port

TOKEN = "fuzz-stow-token"
TIMEOUT = 10.0  # s: longer than this without an answer is a hang
CHECK_EVERY = 100  # cases between two checks that a good request is still served
MAX_REQUEST = 4 * 1024 * 1024  # the listener's dicomweb_max_request in this module

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@dataclass(frozen=True)
class Case:
    """One request: its raw bytes and the statuses it may get (None: connection closed)."""

    kind: str
    raw: bytes
    expected: frozenset[int | None]


@pytest.fixture(scope="module")
def phantom(phantom_cohort: CohortMaker) -> PhantomStudy:
    (study,) = phantom_cohort(1, 17, onfh_fraction=1.0).studies
    return study


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The listener process alone (nothing is scored), STOW-RS on."""
    svc = Service(
        tmp_path_factory.mktemp("fuzz-stow"),
        series_timeout="3600",
        sweep_interval="60",
        log_json="true",
        dicomweb_port=str(free_port()),
        dicomweb_token=TOKEN,
        dicomweb_max_request=str(MAX_REQUEST),
    )
    try:
        svc.redis.start()
        svc.start_process("listener")
        wait_until(lambda: "STOW-RS on" in svc.full_log("listener"), 30, "the STOW-RS endpoint")
        yield svc
    finally:
        svc.stop()


def part_file(phantom: PhantomStudy, n: int, **changes: str) -> bytes:
    """A phantom slice as a PS3.10 file with fresh UIDs under the fuzz root (and changes)."""
    ds = pydicom.dcmread(phantom.slices[n % len(phantom.slices)])
    ds.StudyInstanceUID = f"{ROOT_UID}.20.1"
    ds.SeriesInstanceUID = f"{ROOT_UID}.30.1"
    ds.SOPInstanceUID = f"{ROOT_UID}.40.{n}"
    ds.file_meta.MediaStorageSOPInstanceUID = UID(ds.SOPInstanceUID)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def request(
    body: bytes,
    *,
    content_type: str | None,
    token: str | None = TOKEN,
    path: str = "/studies",
    length: int | None = None,
) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: listener", "Connection: close"]
    if token is not None:
        head.append(f"Authorization: Bearer {token}")
    if content_type is not None:
        head.append(f"Content-Type: {content_type}")
    head.append(f"Content-Length: {len(body) if length is None else length}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def related(boundary: str) -> str:
    return f'multipart/related; type="application/dicom"; boundary={boundary}'


def multipart(boundary: str, parts: list[tuple[str, bytes]]) -> bytes:
    body = b""
    for media_type, data in parts:
        body += f"--{boundary}\r\nContent-Type: {media_type}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


BAD_STUDIES = (
    "..",
    "..%2F..%2Fetc",
    "1.2.3%2F..%2F..",
    "%2e%2e",
    "1.2.3%00",
    "abc",
    "1..2",
    "01.2",
)
BAD_TYPES = (
    "application/dicom",
    "multipart/related",
    'multipart/related; type="application/dicom+json"; boundary=B',
    'multipart/related; type="application/octet-stream"; boundary=B',
    "multipart/form-data; boundary=B",
    "text/plain",
    "",
    'multipart/related; type="application/dicom"; boundary=' + "x" * 300,
)


def draw_case(draw: Draw[Any], phantom: PhantomStudy, n: int) -> Case:
    boundary = str(draw(st.from_regex(r"[A-Za-z0-9'()+_,\-.]{1,60}", fullmatch=True)))
    good = multipart(boundary, [("application/dicom", part_file(phantom, n))])
    kind = str(
        draw(
            st.sampled_from(
                [
                    "truncated",
                    "no_closing_boundary",
                    "wrong_boundary",
                    "garbage_body",
                    "bad_content_type",
                    "no_token",
                    "wrong_token",
                    "declared_too_long",
                    "bad_study",
                    "unstorable_parts",
                ]
            )
        )
    )
    closed_or = frozenset[int | None]
    if kind == "truncated":
        # a fraction, not an offset: the strategy must not depend on the case's length
        cut = (len(good) - 3) * int(draw(st.integers(0, 9999))) // 10_000
        return Case(kind, request(good[:cut], content_type=related(boundary)), closed_or({400}))
    if kind == "no_closing_boundary":
        body = good[: -len(f"--{boundary}--\r\n")]
        return Case(kind, request(body, content_type=related(boundary)), closed_or({400}))
    if kind == "wrong_boundary":
        return Case(kind, request(good, content_type=related(boundary + "x")), closed_or({400}))
    if kind == "garbage_body":
        body = bytes(draw(st.binary(min_size=0, max_size=4096)))
        return Case(kind, request(body, content_type=related(boundary)), closed_or({400}))
    if kind == "bad_content_type":
        content_type = draw(st.sampled_from((*BAD_TYPES, None)))
        return Case(
            kind,
            request(good, content_type=content_type if content_type is None else str(content_type)),
            closed_or({415}),
        )
    if kind in ("no_token", "wrong_token"):
        token = None if kind == "no_token" else str(draw(st.text("abcdef0123456789", max_size=40)))
        return Case(
            kind, request(good, content_type=related(boundary), token=token), closed_or({401})
        )
    if kind == "declared_too_long":
        length = int(draw(st.integers(MAX_REQUEST + 1, 2**40)))
        raw = request(good, content_type=related(boundary), length=length)
        return Case(kind, raw, closed_or({413, None}))
    if kind == "bad_study":
        study = str(draw(st.sampled_from(BAD_STUDIES)))
        raw = request(good, content_type=related(boundary), path=f"/studies/{study}")
        return Case(kind, raw, closed_or({400, 404}))
    # well-formed multipart whose every part is refused: 409, nothing stored
    parts: list[tuple[str, bytes]] = []
    for i in range(int(draw(st.integers(1, 4)))):
        which = draw(st.sampled_from(["random", "truncated", "bad_uid", "media_type", "study"]))
        data = part_file(phantom, n * 10 + i)
        if which == "random":
            parts.append(("application/dicom", bytes(draw(st.binary(max_size=2048)))))
        elif which == "truncated":
            # cut inside the header or the pixel data, never at the very end
            cut = (len(data) - 64) * int(draw(st.integers(0, 9999))) // 10_000
            parts.append(("application/dicom", data[:cut]))
        elif which == "bad_uid":
            keyword = str(draw(st.sampled_from(["StudyInstanceUID", "SeriesInstanceUID"])))
            damaged = part_file(phantom, n * 10 + i, **{keyword: "../../etc/passwd"})
            parts.append(("application/dicom", damaged))
        elif which == "media_type":
            parts.append(("application/octet-stream", data))
        else:  # another study than the target (below)
            parts.append(("application/dicom", data))
    raw = request(
        multipart(boundary, parts),
        content_type=related(boundary),
        path="/studies/1.2.826.0.1.3680043.8.498.77.99",
    )
    return Case(kind, raw, closed_or({409}))


def send(port: int, raw: bytes) -> int | str | None:
    """Send one raw request; its status, None if the server closed without one, or
    ``"hang"``."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        # The server may refuse at the header and close before the whole body is sent.
        # No half-close after it: uvicorn takes EOF from the client as the end of the
        # connection and would drop the answer of a request still being stored.
        with contextlib.suppress(OSError):
            sock.sendall(raw)
        answer = b""
        deadline = time.monotonic() + TIMEOUT
        try:
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
                if b"\r\n\r\n" in answer:
                    break
        except TimeoutError:
            return "hang"
        except OSError:
            pass  # reset by the server after refusing
    if not answer:
        return None
    status_line = answer.split(b"\r\n", 1)[0].split()
    return int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else -1


def good_request(phantom: PhantomStudy, port: int, n: int) -> int | str | None:
    data = pydicom.dcmread(phantom.slices[0])
    buffer = io.BytesIO()
    data.save_as(buffer, enforce_file_format=True)
    body = multipart("good", [("application/dicom", buffer.getvalue())])
    return send(port, request(body, content_type=related("good")))


def test_malformed_stow_requests_never_crash_the_listener_nor_store_anything(
    service: Service, phantom: PhantomStudy, scale: Scale, tmp_path: Path
) -> None:
    port = int(service.env["ONFH_DICOMWEB_PORT"])
    listener = service.processes["listener"]
    before = snapshot(service.root)
    tallies: dict[str, Counter[str]] = defaultdict(Counter)
    problems: list[str] = []
    counter = itertools.count()

    @settings(
        max_examples=scale.fuzz_stow,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        n = next(counter)
        case = draw_case(data.draw, phantom, n)
        outcome = send(port, case.raw)
        tallies[case.kind][str(outcome)] += 1
        if outcome not in case.expected and len(problems) < 20:
            problems.append(f"case {n} ({case.kind}): {outcome}, expected {set(case.expected)}")
        assert listener.poll() is None, f"listener died at case {n}: {service.log('listener')}"
        if n % CHECK_EVERY == CHECK_EVERY - 1:
            stored = stored_instances(service.data_dir / "spool")
            assert not stored, f"stored from malformed requests: {sorted(stored)[:5]}"

    fuzz()
    cases = next(counter)
    (tmp_path / "fuzz-stow-summary.json").write_text(
        json.dumps({k: dict(v) for k, v in tallies.items()}, indent=2)
    )
    print(f"\nSTOW-RS fuzz: {cases} requests", json.dumps(tallies, indent=1))
    assert cases >= scale.fuzz_stow
    assert not problems, "\n".join(problems)
    assert stored_instances(service.data_dir / "spool") == {}

    # Still serving: a good request is stored, and only it.
    assert good_request(phantom, port, 0) == 200
    assert len(stored_instances(service.data_dir / "spool")) == 1
    changed = {
        path
        for path, stat in snapshot(service.root).items()
        if before.get(path) != stat and not allowed_to_change(path, service.data_dir.name)
    }
    assert not changed, f"files written outside the spool: {sorted(changed)[:10]}"
    unhandled, own, _ = log_exceptions(service.root / "listener.log")
    assert not unhandled, unhandled[:2]
    assert not own, own[:2]
