"""STOW-RS in and out over real HTTP: the listener's DICOMweb endpoint (requests,
dicomweb-client, raw sockets as senders) and the worker's ``stow+http://`` delivery.

Each test starts the endpoint on a free port over a real spool and the C-STORE handler
(as the listener process does), sends phantom instances and checks the response, what
the spool holds and what the series tracker was told. The delivery tests send to that
same endpoint as their peer.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
import sqlalchemy
import test_scp
from dicomweb_client.api import DICOMwebClient
from prometheus_client import REGISTRY
from service_harness import CohortMaker, PhantomStudy
from test_scp import Certs

from listener.dicomweb import DICOM_JSON, DicomWebServer
from listener.rules import AdmissionRules
from listener.scp import (
    CANNOT_UNDERSTAND,
    INVALID_UID,
    NOT_MR,
    SOP_CLASS_NOT_SUPPORTED,
    UID_MISMATCH,
    StoreHandler,
)
from listener.spool import TMP_DIR, Spool, StoredInstance
from listener.status_page import StatusPage
from listener.tracker import SeriesTracker
from onfh_dlr.errors import ConfigurationError, DeliveryError, PermanentError
from onfh_dlr.settings import Destination, Settings, Transport, load_settings
from onfh_dlr.state import StateDB, default_database_url
from onfh_dlr.web import Request
from worker.delivery import send_files

#: The DICOM TLS tests' PKI (CA, server and client certificates), as a fixture here too.
tls_pki = test_scp.certs
TOKEN = "s3cret-stow-token"
BOUNDARY = "onfh-test-boundary"
# The broken datasets this file sends make pydicom (rightly) warn while decoding them.
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI:UserWarning")
RELATED = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


class RecordingIntake:
    """Records what the handler tells the tracker."""

    def __init__(self) -> None:
        self.stored: list[StoredInstance] = []
        self.released: list[tuple[str, frozenset[str]]] = []
        self._lock = threading.Lock()

    def instance_stored(self, instance: StoredInstance) -> None:
        with self._lock:
            self.stored.append(instance)

    def association_released(self, calling_ae: str, series_uids: frozenset[str]) -> None:
        with self._lock:
            self.released.append((calling_ae, series_uids))


class Endpoint:
    """A running STOW-RS endpoint, its spool and intake."""

    def __init__(self, root: Path, **settings: Any) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        settings.setdefault("dicomweb_token", TOKEN)
        self.settings = Settings(data_dir=root, host="127.0.0.1", dicomweb_port=port, **settings)
        self.spool = Spool(root / "spool")
        self.intake = RecordingIntake()
        self.handler = StoreHandler(self.spool, self.intake)
        self.server = DicomWebServer(self.settings, self.handler)
        self.url = f"http://127.0.0.1:{port}"
        self.port = port

    def stored_files(self) -> list[Path]:
        return sorted(
            p for p in self.spool.root.rglob("*") if p.is_file() and TMP_DIR not in p.parts
        )


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[Callable[..., Endpoint]]:
    started: list[Endpoint] = []

    def start(**settings: Any) -> Endpoint:
        ep = Endpoint(tmp_path / f"data{len(started)}", **settings)
        ep.server.start()
        started.append(ep)
        return ep

    yield start
    for ep in started:
        ep.server.stop()


@pytest.fixture(scope="module")
def phantom(phantom_cohort: CohortMaker) -> PhantomStudy:
    (study,) = phantom_cohort(1, 3, onfh_fraction=1.0).studies
    return study


def multipart(parts: list[bytes], part_type: str = "application/dicom") -> bytes:
    body = b""
    for part in parts:
        body += f"--{BOUNDARY}\r\nContent-Type: {part_type}\r\n\r\n".encode() + part + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


def post(ep: Endpoint, body: bytes, *, path: str = "/studies", **headers: str) -> Any:
    sent = {"Authorization": f"Bearer {TOKEN}", "Content-Type": RELATED} | headers
    return requests.post(ep.url + path, data=body, headers=sent, timeout=30)


def failed_reasons(response: Any) -> list[int]:
    body = response.json()
    return [item["00081197"]["Value"][0] for item in body.get("00081198", {}).get("Value", [])]


def _modified(path: Path, **values: Any) -> bytes:
    ds = pydicom.dcmread(path)
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    if "SOPInstanceUID" in values:
        ds.file_meta.MediaStorageSOPInstanceUID = values["SOPInstanceUID"]
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# --- stored -------------------------------------------------------------------------------


def test_a_series_posted_is_stored_as_received_and_the_request_end_releases_it(
    endpoint: Callable[..., Endpoint], phantom: PhantomStudy
) -> None:
    ep = endpoint()
    parts = [p.read_bytes() for p in phantom.slices] + [phantom.seg.read_bytes()]
    response = post(ep, multipart(parts))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(DICOM_JSON)
    referenced = response.json()["00081199"]["Value"]
    assert len(referenced) == len(parts)
    assert "00081198" not in response.json()
    for path in phantom.slices:
        sop = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        stored = ep.spool.root / phantom.study_uid / phantom.series_uid / f"{sop}.dcm"
        assert stored.read_bytes() == path.read_bytes()
    assert len(ep.intake.stored) == len(parts)
    # One release for the whole request, naming the MR series (and the SEG's own series).
    assert len(ep.intake.released) == 1
    source, series = ep.intake.released[0]
    assert phantom.series_uid in series
    assert source == "127.0.0.1"


def test_dicomweb_client_stores_into_the_target_study_and_resending_is_idempotent(
    endpoint: Callable[..., Endpoint], phantom: PhantomStudy
) -> None:
    ep = endpoint()
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    client = DICOMwebClient(url=ep.url, session=session)
    datasets = [pydicom.dcmread(p) for p in phantom.slices[:4]]
    result = client.store_instances(datasets, study_instance_uid=phantom.study_uid)
    assert len(result.ReferencedSOPSequence) == 4
    again = client.store_instances(datasets, study_instance_uid=phantom.study_uid)
    assert len(again.ReferencedSOPSequence) == 4
    assert len(ep.stored_files()) == 4
    assert [i.duplicate for i in ep.intake.stored] == [False] * 4 + [True] * 4


# --- refused per instance (FailedSOPSequence) ----------------------------------------------


def test_refused_instances_carry_the_c_store_status_as_failure_reason(
    endpoint: Callable[..., Endpoint], phantom: PhantomStudy
) -> None:
    ep = endpoint()
    good = phantom.slices[0]
    parts = [
        good.read_bytes(),
        _modified(phantom.slices[1], Modality="CT"),
        _modified(phantom.slices[2], SOPClassUID="1.2.840.10008.5.1.4.1.1.2"),
        _modified(phantom.slices[3], SOPInstanceUID="1.2.3.4", SeriesInstanceUID="../../etc"),
        b"not a DICOM file at all",
    ]
    response = post(ep, multipart(parts))
    assert response.status_code == 202, response.text
    assert failed_reasons(response) == [
        NOT_MR,
        SOP_CLASS_NOT_SUPPORTED,
        INVALID_UID,
        CANNOT_UNDERSTAND,
    ]
    assert len(ep.stored_files()) == 1
    assert not (ep.spool.root.parent / "etc").exists()


def test_an_instance_of_another_study_than_the_target_is_refused_and_none_stored_is_409(
    endpoint: Callable[..., Endpoint], phantom: PhantomStudy
) -> None:
    ep = endpoint()
    response = post(ep, multipart([phantom.slices[0].read_bytes()]), path="/studies/1.2.826.0.1.99")
    assert response.status_code == 409
    assert failed_reasons(response) == [UID_MISMATCH]
    assert ep.stored_files() == []


# --- refused as a whole: nothing stored ------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Authorization": ""}, 401),
        ({"Authorization": "Bearer wrong-token"}, 401),
        ({"Authorization": f"Basic {TOKEN}"}, 401),
        ({"Content-Type": "application/dicom"}, 415),
        (
            {"Content-Type": f"multipart/related; type=application/json; boundary={BOUNDARY}"},
            415,
        ),
        ({"Content-Type": 'multipart/related; type="application/dicom"'}, 415),
        ({"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}, 415),
    ],
)
def test_wrong_token_or_content_type_is_refused_and_stores_nothing(
    endpoint: Callable[..., Endpoint],
    phantom: PhantomStudy,
    headers: dict[str, str],
    status: int,
) -> None:
    ep = endpoint()
    response = post(ep, multipart([phantom.slices[0].read_bytes()]), **headers)
    assert response.status_code == status
    if status == 401:
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert ep.stored_files() == []
    assert ep.intake.stored == []


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(lambda body: body[: len(body) // 2], id="truncated"),
        pytest.param(lambda body: body.replace(b"--\r\n", b"\r\n"), id="no-closing-boundary"),
        pytest.param(lambda body: b"garbage" + body[2:], id="no-opening-boundary"),
        pytest.param(lambda body: f"--{BOUNDARY}--\r\n".encode(), id="no-part"),
    ],
)
def test_malformed_multipart_is_400_and_stores_nothing_even_before_the_damage(
    endpoint: Callable[..., Endpoint], phantom: PhantomStudy, cut: Callable[[bytes], bytes]
) -> None:
    ep = endpoint()
    body = multipart([p.read_bytes() for p in phantom.slices[:3]])
    response = post(ep, cut(body))
    assert response.status_code == 400
    assert ep.stored_files() == []
    assert ep.intake.released == []


@pytest.mark.parametrize(
    "path",
    ["/studies/..%2F..%2Fetc", "/studies/1.2.3/../../x", "/studies/1.2.3%00", "/studies/abc"],
)
def test_a_target_study_that_is_not_a_uid_is_400_and_stores_nothing(
    endpoint: Callable[..., Endpoint], phantom: PhantomStudy, path: str
) -> None:
    ep = endpoint()
    # http.client sends the path as written (requests would normalise the dots away).
    connection = http.client.HTTPConnection("127.0.0.1", ep.port, timeout=10)
    body = multipart([phantom.slices[0].read_bytes()])
    connection.request(
        "POST",
        path,
        body=body,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": RELATED},
    )
    assert connection.getresponse().status in (400, 404)
    connection.close()
    assert ep.stored_files() == []


def test_a_2_gb_declared_length_is_refused_at_the_header(
    endpoint: Callable[..., Endpoint],
) -> None:
    ep = endpoint()
    with socket.create_connection(("127.0.0.1", ep.port), timeout=10) as sock:
        sock.sendall(
            (
                "POST /studies HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {TOKEN}\r\nContent-Type: {RELATED}\r\n"
                f"Content-Length: {2 * 1024**3}\r\n\r\n"
            ).encode()
            + f"--{BOUNDARY}\r\n".encode()
        )
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413")
    assert ep.stored_files() == []


def test_a_streamed_body_over_the_limit_is_413_and_stores_nothing(
    endpoint: Callable[..., Endpoint], phantom: PhantomStudy
) -> None:
    ep = endpoint(dicomweb_max_request=64 * 1024)
    body = multipart([p.read_bytes() for p in phantom.slices[:4]])
    assert len(body) > 64 * 1024

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        for i in range(0, len(body), 8192):
            yield body[i : i + 8192]

    response = post(ep, chunks())  # type: ignore[arg-type]
    assert response.status_code == 413
    assert ep.stored_files() == []


def test_peers_outside_allowed_hosts_get_403(
    endpoint: Callable[..., Endpoint], phantom: PhantomStudy
) -> None:
    ep = endpoint(allowed_hosts=["10.9.8.0/24"])
    response = post(ep, multipart([phantom.slices[0].read_bytes()]))
    assert response.status_code == 403
    assert ep.stored_files() == []


def test_without_a_token_the_endpoint_cannot_be_built(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        Endpoint(tmp_path, dicomweb_token=None)


def test_the_response_is_dicom_json_that_pydicom_reads(
    endpoint: Callable[..., Endpoint], phantom: PhantomStudy
) -> None:
    ep = endpoint()
    response = post(ep, multipart([phantom.slices[0].read_bytes(), b"junk"]))
    ds = pydicom.Dataset.from_json(json.dumps(response.json()))
    assert ds.FailedSOPSequence[0].FailureReason == CANNOT_UNDERSTAND
    assert ds.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == str(
        pydicom.dcmread(phantom.slices[0], stop_before_pixels=True).SOPInstanceUID
    )


# --- STOW-RS out: destinations and delivery -------------------------------------------------


def test_stow_destinations_parse_print_and_refuse_credentials_in_the_url() -> None:
    dest = Destination.parse("stow+https://pacs.example.org/dicom-web/")
    assert dest.transport is Transport.STOW_RS
    assert (dest.host, dest.port, dest.url) == ("pacs.example.org", 443, dest.url)
    assert dest.url == "https://pacs.example.org/dicom-web"
    assert str(dest) == "stow+https://pacs.example.org/dicom-web"
    assert Destination.parse(str(dest)) == dest
    assert Destination.parse("stow+http://10.0.0.5:8042").port == 8042
    for bad in (
        "stow+http://user:pw@h/x",
        "stow+ftp://h/x",
        "stow+http:///x",
        "stow+http://h/?t=1",
    ):
        with pytest.raises(ValueError):
            Destination.parse(bad)
    settings = load_settings(
        environ={"ONFH_DESTINATIONS": "PACS@10.0.0.1:104,stow+http://orthanc:8042/dicom-web"}
    )
    assert [d.transport for d in settings.destinations] == [Transport.DIMSE, Transport.STOW_RS]
    assert str(settings.destinations[0]) == "PACS@10.0.0.1:104"


def test_send_files_stows_to_a_dicomweb_peer_with_the_bearer_token(
    endpoint: Callable[..., Endpoint], phantom: PhantomStudy
) -> None:
    ep = endpoint()
    destination = Destination.parse(f"stow+{ep.url}")
    send_files(destination, [phantom.slices[0], phantom.seg], calling_ae="ONFH_DLR", token=TOKEN)
    assert len(ep.stored_files()) == 2
    with pytest.raises(DeliveryError, match="HTTP 401"):
        send_files(destination, [phantom.slices[1]], calling_ae="ONFH_DLR", token="wrong")
    with pytest.raises(DeliveryError, match="HTTP 401"):
        send_files(destination, [phantom.slices[1]], calling_ae="ONFH_DLR")
    assert len(ep.stored_files()) == 2


def test_an_instance_the_peer_refuses_fails_the_delivery_with_its_reason(
    endpoint: Callable[..., Endpoint], phantom: PhantomStudy, tmp_path: Path
) -> None:
    ep = endpoint()
    refused = tmp_path / "ct-modality.dcm"
    refused.write_bytes(_modified(phantom.slices[0], Modality="CT"))
    with pytest.raises(DeliveryError, match=f"1 of 2 refused .*0x{NOT_MR:04X}"):
        send_files(
            Destination.parse(f"stow+{ep.url}"),
            [phantom.slices[1], refused],
            calling_ae="ONFH_DLR",
            token=TOKEN,
        )


def test_an_unreachable_stow_destination_is_a_delivery_error_to_retry(
    phantom: PhantomStudy,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with pytest.raises(DeliveryError):
        send_files(
            Destination.parse(f"stow+http://127.0.0.1:{port}/dicom-web"),
            [phantom.slices[0]],
            calling_ae="ONFH_DLR",
            token=TOKEN,
            timeout=5,
        )


def test_an_unreadable_result_file_is_a_permanent_error(
    endpoint: Callable[..., Endpoint], tmp_path: Path
) -> None:
    ep = endpoint()
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"not DICOM")
    with pytest.raises(PermanentError):
        send_files(Destination.parse(f"stow+{ep.url}"), [broken], calling_ae="X", token=TOKEN)


# --- TLS: the DICOM TLS certificates ----------------------------------------------------------


def test_with_the_dicom_tls_certificates_only_https_with_a_client_certificate_is_served(
    endpoint: Callable[..., Endpoint], phantom: PhantomStudy, tls_pki: Certs
) -> None:
    certs = tls_pki
    ep = endpoint(tls_cert=certs.server_cert, tls_key=certs.server_key, tls_ca=certs.ca)
    url = f"https://localhost:{ep.port}/studies"
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": RELATED}
    body = multipart([phantom.slices[0].read_bytes()])
    client = (str(certs.client_cert), str(certs.client_key))
    response = requests.post(
        url, data=body, headers=headers, verify=str(certs.ca), cert=client, timeout=30
    )
    assert response.status_code == 200
    # no client certificate: refused in the handshake (TLS 1.3: a reset right after it)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(url, data=body, headers=headers, verify=str(certs.ca), timeout=30)
    with pytest.raises(requests.exceptions.ConnectionError):  # plain HTTP
        requests.post(f"http://localhost:{ep.port}/studies", data=body, headers=headers, timeout=30)
    assert len(ep.stored_files()) == 1


def test_a_peer_that_leaves_mid_body_stores_nothing_and_raises_nothing(
    endpoint: Callable[..., Endpoint], phantom: PhantomStudy, caplog: pytest.LogCaptureFixture
) -> None:
    ep = endpoint()
    body = multipart([p.read_bytes() for p in phantom.slices[:2]])
    with socket.create_connection(("127.0.0.1", ep.port), timeout=10) as sock:
        sock.sendall(
            (
                "POST /studies HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {TOKEN}\r\nContent-Type: {RELATED}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body[: len(body) - 100]
        )
    # Still serving, nothing stored from the broken request, no traceback logged.
    response = post(ep, multipart([phantom.slices[0].read_bytes()]))
    assert response.status_code == 200
    assert len(ep.stored_files()) == 1
    assert not [r for r in caplog.records if r.levelno >= 40 or r.exc_info]


# --- the series row and the status page ---------------------------------------------------


def test_a_stow_rs_series_records_its_transport_and_peer_address_and_the_status_page_shows_them(
    endpoint: Callable[..., Endpoint], phantom: PhantomStudy, tmp_path: Path
) -> None:
    db = StateDB(default_database_url(tmp_path))
    db.create_schema()
    jobs: list[str] = []
    tracker = SeriesTracker(db, AdmissionRules(), jobs.append, series_timeout=3600.0)
    ep = endpoint()
    ep.handler.intake = tracker  # the listener's real intake instead of the recording one
    response = post(ep, multipart([p.read_bytes() for p in phantom.slices]))
    assert response.status_code == 200, response.text
    row = db.series(phantom.series_uid)
    assert row is not None
    assert row.transport is Transport.STOW_RS
    assert row.peer_address == "127.0.0.1"
    assert row.calling_ae == ""  # an IP address is no AE title
    assert row.state == "admitted" and len(jobs) == 1  # the request end released it
    page = StatusPage(db, None, lambda _job: None)
    for path in ("/", f"/series/{phantom.series_uid}"):
        route = page.studies if path == "/" else page.series
        html = route(Request("GET", path, {}, {}, {})).body.decode()
        assert "STOW-RS from 127.0.0.1" in html


def test_a_series_keeps_a_full_ipv6_peer_address_and_c_store_series_stay_dimse(
    tmp_path: Path,
) -> None:
    db = StateDB(default_database_url(tmp_path))
    db.create_schema()
    ipv6 = "2001:db8:85a3:1234:5678:8a2e:370:7334"
    db.series_received(
        series_uid="1.2.3.1",
        study_uid="1.2.3",
        instances=1,
        at=1.0,
        transport=Transport.STOW_RS,
        peer_address=ipv6,
    )
    db.series_received(
        series_uid="1.2.3.2", study_uid="1.2.3", instances=1, at=1.0, calling_ae="MODALITY"
    )
    stow, dimse = db.series("1.2.3.1"), db.series("1.2.3.2")
    assert stow is not None and dimse is not None
    assert (stow.transport, stow.peer_address) == (Transport.STOW_RS, ipv6)
    assert (dimse.transport, dimse.peer_address, dimse.calling_ae) == (
        Transport.DIMSE,
        "",
        "MODALITY",
    )
    html = StatusPage(db, None, lambda _job: None).studies(Request("GET", "/", {}, {}, {}))
    assert f"STOW-RS from {ipv6}" in html.body.decode()
    assert "C-STORE from MODALITY" in html.body.decode()


def test_a_series_table_from_before_the_transport_column_gains_it_with_old_rows_as_dimse(
    tmp_path: Path,
) -> None:
    url = default_database_url(tmp_path)
    old = sqlalchemy.create_engine(url)
    with old.begin() as connection:
        # The series table as the first release created it.
        connection.execute(
            sqlalchemy.text(
                "CREATE TABLE series (series_uid VARCHAR(64) PRIMARY KEY, "
                "study_uid VARCHAR(64) NOT NULL, accession_number VARCHAR(16) NOT NULL, "
                "modality VARCHAR(16) NOT NULL, description VARCHAR(64) NOT NULL, "
                "calling_ae VARCHAR(16) NOT NULL, state VARCHAR(16) NOT NULL, "
                "reason TEXT NOT NULL, instances INTEGER NOT NULL, generation INTEGER NOT NULL, "
                "seg_path TEXT, first_received FLOAT NOT NULL, last_received FLOAT NOT NULL, "
                "closed_at FLOAT, purged_at FLOAT)"
            )
        )
        connection.execute(
            sqlalchemy.text(
                "INSERT INTO series VALUES ('1.2.3.1', '1.2.3', '', 'MR', '', 'OLDPACS', "
                "'admitted', '', 3, 1, NULL, 1.0, 2.0, 2.0, NULL)"
            )
        )
    old.dispose()
    db = StateDB(url)
    db.create_schema()
    db.create_schema()  # idempotent: the second pass finds the columns
    row = db.series("1.2.3.1")
    assert row is not None
    assert (row.transport, row.peer_address, row.calling_ae) == (Transport.DIMSE, "", "OLDPACS")


def test_stow_rs_requests_count_as_associations_accepted_or_rejected_by_transport(
    endpoint: Callable[..., Endpoint], phantom: PhantomStudy
) -> None:
    def count(outcome: str) -> float:
        labels = {"transport": "stow-rs", "outcome": outcome}
        return REGISTRY.get_sample_value("onfh_associations_total", labels) or 0.0

    ep = endpoint()
    body = multipart([phantom.slices[0].read_bytes()])
    accepted, rejected = count("accepted"), count("rejected")
    assert post(ep, body).status_code == 200
    assert post(ep, body, Authorization="Bearer not-the-token").status_code == 401
    assert (count("accepted") - accepted, count("rejected") - rejected) == (1, 1)
