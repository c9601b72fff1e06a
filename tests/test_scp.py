"""The listener's SCP over real associations: pynetdicom and DCMTK storescu as senders."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    SegmentationStorage,
)
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config
from pynetdicom.dsutils import split_dataset
from service_harness import CohortMaker, PhantomStudy

from listener import scp
from listener.scp import Listener, Verification
from listener.spool import TMP_DIR, StoredInstance
from onfh_dlr.errors import ConfigurationError
from onfh_dlr.settings import Settings

STORESCU = shutil.which("storescu")
OPENSSL = shutil.which("openssl")
CALLED_AE = "ONFH_DLR"
# The broken datasets this file sends make pydicom (rightly) warn while decoding them.
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI:UserWarning")


# --- fixtures and helpers ---------------------------------------------------------------


@pytest.fixture(scope="module")
def phantom(phantom_cohort: CohortMaker) -> PhantomStudy:
    """A phantom MR series and its DICOM-SEG."""
    (study,) = phantom_cohort(1, 3, onfh_fraction=1.0).studies
    return study


class RecordingIntake:
    """Records what the SCP tells the tracker."""

    def __init__(self, fail: bool = False) -> None:
        self.stored: list[StoredInstance] = []
        self.released: list[tuple[str, frozenset[str]]] = []
        self.fail = fail
        self._cond = threading.Condition()

    def instance_stored(self, instance: StoredInstance) -> None:
        with self._cond:
            self.stored.append(instance)
        if self.fail:
            raise RuntimeError("tracker is broken")

    def association_released(self, calling_ae: str, series_uids: frozenset[str]) -> None:
        with self._cond:
            self.released.append((calling_ae, series_uids))
            self._cond.notify_all()

    def wait_released(
        self, count: int = 1, timeout: float = 5.0
    ) -> list[tuple[str, frozenset[str]]]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.released) >= count, timeout)
            return list(self.released)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


StartFn = Callable[..., tuple[Listener, RecordingIntake]]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[StartFn]:
    """Start a listener in a thread on a free port; stopped after the test."""
    running: list[Listener] = []

    def _start(
        intake: RecordingIntake | None = None, **settings: Any
    ) -> tuple[Listener, RecordingIntake]:
        settings.setdefault("data_dir", tmp_path / "data")
        intake = intake or RecordingIntake()
        listener = Listener(Settings(host="127.0.0.1", port=free_port(), **settings), intake)
        listener.start()
        running.append(listener)
        return listener, intake

    yield _start
    for listener in running:
        listener.stop(timeout=2.0)


@pytest.fixture(autouse=True)
def _send_files_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    # The pynetdicom SCU sends a file's dataset bytes as they are on disk (no decode and
    # re-encode), so "stored as received" can be checked byte for byte, and broken
    # datasets can be sent at all.
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)


@contextmanager
def associate(
    port: int, ae_title: str = "SCU", tls_args: tuple[Any, str] | None = None, ct: bool = False
) -> Iterator[Any]:
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = 5
    sop_classes = [CTImageStorage] if ct else [MRImageStorage, SegmentationStorage]
    for sop_class in sop_classes:
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=CALLED_AE, tls_args=tls_args)
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def store(assoc: Any, path: Path) -> int:
    status = assoc.send_c_store(path)
    assert "Status" in status, "no C-STORE response"
    return int(status.Status)


def dataset_bytes(path: Path) -> bytes:
    """A DICOM file's bytes after its file meta information."""
    _, offset = split_dataset(path)
    return path.read_bytes()[offset:]


def spool_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.dcm") if TMP_DIR not in p.parts)


def instance_path(listener: Listener, path: Path) -> Path:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return listener.spool.path_for(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)


# --- process and start-up -----------------------------------------------------------------


def test_listener_import_is_light() -> None:
    code = (
        "import sys, listener, listener.scp, listener.rules, listener.completeness\n"
        "heavy = {'torch', 'highdicom', 'SimpleITK', 'radiomics', 'model_bundle'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_startup_log_warns_about_an_open_listener(
    start: StartFn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="listener.scp")
    listener, _ = start()
    text = caplog.text
    assert f"AE title {CALLED_AE} on 127.0.0.1:{listener.port}, TLS off" in text
    warnings_ = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("ANY calling AE title" in r.getMessage() for r in warnings_)


def test_invalid_network_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        Listener(Settings(data_dir=tmp_path, allowed_hosts=["not-an-ip"]), RecordingIntake())
    with pytest.raises(ConfigurationError):
        Listener(Settings(data_dir=tmp_path, tls_cert=tmp_path / "c.pem"), RecordingIntake())


# --- C-ECHO, C-STORE --------------------------------------------------------------------


def test_echo(start: StartFn) -> None:
    listener, intake = start()
    with associate(listener.port) as assoc:
        assert assoc.is_established
        assert int(assoc.send_c_echo().Status) == 0x0000
    time.sleep(0.2)
    assert intake.released == []  # nothing stored: nothing to tell


def test_store_series_and_seg_with_pynetdicom(start: StartFn, phantom: PhantomStudy) -> None:
    listener, intake = start()
    with associate(listener.port) as assoc:
        statuses = [store(assoc, p) for p in [*phantom.slices, phantom.seg]]
    assert statuses == [0] * (len(phantom.slices) + 1)

    for sent in [*phantom.slices, phantom.seg]:
        stored = instance_path(listener, sent)
        assert dataset_bytes(stored) == dataset_bytes(sent)  # stored as received
        meta = pydicom.dcmread(stored, stop_before_pixels=True).file_meta
        assert meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert meta.SourceApplicationEntityTitle == "SCU"
    assert len(spool_files(listener.spool.root)) == len(phantom.slices) + 1
    assert list((listener.spool.root / TMP_DIR).iterdir()) == []

    assert len(intake.stored) == len(phantom.slices) + 1
    assert len({i.sop_instance_uid for i in intake.stored}) == len(intake.stored)
    first = intake.stored[0]
    assert (first.study_uid, first.series_uid, first.calling_ae) == (
        phantom.study_uid,
        phantom.series_uid,
        "SCU",
    )
    assert first.sop_class_uid == MRImageStorage and not first.duplicate
    assert "PixelData" not in first.header and first.header.Modality == "MR"
    assert first.path.is_file() and first.received_at > 0
    seg = intake.stored[-1]
    assert seg.sop_class_uid == SegmentationStorage and "PixelData" not in seg.header
    assert seg.header.ReferencedSeriesSequence[0].SeriesInstanceUID == phantom.series_uid

    (released,) = intake.wait_released()
    assert released[0] == "SCU"
    assert phantom.series_uid in released[1] and seg.series_uid in released[1]


def test_resend_is_a_duplicate(start: StartFn, phantom: PhantomStudy) -> None:
    listener, intake = start()
    with associate(listener.port) as assoc:
        assert store(assoc, phantom.slices[0]) == 0
        assert store(assoc, phantom.slices[0]) == 0
    assert [i.duplicate for i in intake.stored] == [False, True]
    assert spool_files(listener.spool.root) == [intake.stored[0].path]


@pytest.mark.skipif(STORESCU is None, reason="DCMTK storescu is not installed")
def test_store_series_with_storescu(start: StartFn, phantom: PhantomStudy) -> None:
    listener, intake = start(allowed_calling_aes=["MODALITY1"])
    command = [str(STORESCU), "-aet", "MODALITY1", "-aec", CALLED_AE, "127.0.0.1"]
    result = subprocess.run(
        [*command, str(listener.port), *map(str, phantom.slices)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert len(intake.stored) == len(phantom.slices)
    for sent in phantom.slices:
        stored = instance_path(listener, sent)
        meta = pydicom.dcmread(stored, stop_before_pixels=True).file_meta
        # storescu proposes the file's own transfer syntax first: nothing was converted,
        # so the bytes on disk after the meta are the bytes in the sent file.
        assert meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert dataset_bytes(stored) == dataset_bytes(sent)
    (released,) = intake.wait_released()
    assert released == ("MODALITY1", frozenset({phantom.series_uid}))


def test_other_sop_class_is_refused_at_negotiation(start: StartFn, phantom: PhantomStudy) -> None:
    listener, intake = start()
    with associate(listener.port, ct=True) as assoc:
        assert assoc.is_established  # Verification is accepted...
        accepted = {cx.abstract_syntax for cx in assoc.accepted_contexts}
        rejected = {cx.abstract_syntax for cx in assoc.rejected_contexts}
        assert CTImageStorage in rejected and CTImageStorage not in accepted  # ...CT is not
        with pytest.raises(ValueError, match="presentation context"):
            ct = pydicom.dcmread(phantom.slices[0])
            ct.SOPClassUID = ct.file_meta.MediaStorageSOPClassUID = CTImageStorage
            assoc.send_c_store(ct)
    assert intake.stored == []


def test_calling_ae_not_on_the_list_is_rejected(start: StartFn, phantom: PhantomStudy) -> None:
    listener, intake = start(allowed_calling_aes=["PACS", "MODALITY1"])
    with associate(listener.port, ae_title="INTRUDER") as assoc:
        assert assoc.is_rejected and not assoc.is_established
        rj = assoc.acceptor.primitive
        # rejected-permanent, by the service user, "calling AE title not recognised"
        assert (rj.result, rj.result_source, rj.diagnostic) == (0x01, 0x01, 0x03)
    with associate(listener.port, ae_title="PACS") as assoc:
        assert assoc.is_established
        assert store(assoc, phantom.slices[0]) == 0
    assert [i.calling_ae for i in intake.stored] == ["PACS"]


@pytest.mark.parametrize(
    ("allowed", "ok"),
    [(["10.0.0.0/8", "192.168.1.7"], False), (["10.0.0.0/8", "127.0.0.0/8"], True)],
)
def test_allowed_hosts(start: StartFn, allowed: list[str], ok: bool) -> None:
    listener, _ = start(allowed_hosts=allowed)
    with associate(listener.port) as assoc:
        assert assoc.is_established is ok
        assert not assoc.is_rejected  # refused before any DICOM byte: no A-ASSOCIATE-RJ


def _raw_file(
    path: Path, sop_class: str, sop_instance: str, body: bytes, ts: str = ExplicitVRLittleEndian
) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(ts)
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)
    path.write_bytes(buffer.getvalue() + body)
    return path


def _variant(source: Path, out: Path, **changes: Any) -> Path:
    """A copy of a phantom file with attributes changed (None deletes), sent as-is."""
    ds = pydicom.dcmread(source)
    meta_instance = changes.pop("meta_instance", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid UIDs, rightly
        for keyword, value in changes.items():
            if value is None:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        body = DicomBytesIO()
        body.is_little_endian, body.is_implicit_VR = True, False
        pydicom.filewriter.write_dataset(body, ds)
    instance = meta_instance or str(changes.get("SOPInstanceUID") or "1.2.3.4.5.6.7")
    return _raw_file(out, str(ds.SOPClassUID), instance, body.getvalue())


def test_bad_input_gets_a_failure_status(
    start: StartFn, phantom: PhantomStudy, tmp_path: Path
) -> None:
    listener, intake = start()
    src = phantom.slices[3]
    bad = tmp_path / "bad"
    bad.mkdir()
    cases = {
        # an unknown VR: the dataset cannot be decoded
        "undecodable": (
            _raw_file(bad / "a.dcm", MRImageStorage, "1.2.3.4", b"\x08\x00\x18\x00ZZ\x10\x00abc"),
            scp.CANNOT_UNDERSTAND,
        ),
        # a sequence cut short
        "truncated": (
            _raw_file(
                bad / "b.dcm",
                MRImageStorage,
                "1.2.3.5",
                b"\x10\x00\x10\x00SQ\x00\x00\xff\xff\xff\xff\x01\x02",
            ),
            scp.CANNOT_UNDERSTAND,
        ),
        "no SOP Instance UID": (
            _variant(src, bad / "c.dcm", SOPInstanceUID=None),
            scp.MISSING_UID,
        ),
        "no Series Instance UID": (
            _variant(src, bad / "d.dcm", SeriesInstanceUID=None, SOPInstanceUID="1.2.3.6"),
            scp.MISSING_UID,
        ),
        "study UID ../../etc": (
            _variant(src, bad / "e.dcm", StudyInstanceUID="../../etc", SOPInstanceUID="1.2.3.7"),
            scp.INVALID_UID,
        ),
        "series UID 1.2/../x": (
            _variant(src, bad / "f.dcm", SeriesInstanceUID="1.2/../x", SOPInstanceUID="1.2.3.8"),
            scp.INVALID_UID,
        ),
        "SOP Instance UID ../../etc": (
            _variant(src, bad / "g.dcm", SOPInstanceUID="../../etc"),
            scp.INVALID_UID,
        ),
        "dataset and request disagree": (
            _variant(src, bad / "h.dcm", SOPInstanceUID="1.2.3.9", meta_instance="1.2.3.10"),
            scp.UID_MISMATCH,
        ),
        "MR image with Modality CT": (
            _variant(src, bad / "i.dcm", Modality="CT", SOPInstanceUID="1.2.3.11"),
            scp.NOT_MR,
        ),
        "MR image without pixel data": (
            _variant(src, bad / "j.dcm", PixelData=None, SOPInstanceUID="1.2.3.12"),
            scp.NO_PIXEL_DATA,
        ),
    }
    with associate(listener.port) as assoc:
        got = {name: store(assoc, path) for name, (path, _) in cases.items()}
        assert got == {name: status for name, (_, status) in cases.items()}
        assert store(assoc, src) == 0  # the same association still stores a good instance
    with associate(listener.port) as assoc:
        assert store(assoc, phantom.slices[4]) == 0  # and so do new ones
    assert sorted(i.path for i in intake.stored) == spool_files(listener.spool.root)
    assert len(intake.stored) == 2
    data_files = sorted(p for p in (tmp_path / "data").rglob("*") if p.is_file())
    assert data_files == spool_files(listener.spool.root)  # nothing else, anywhere
    assert not list(tmp_path.parent.glob("**/etc.dcm"))


def test_abort_also_ends_the_association_for_the_intake(
    start: StartFn, phantom: PhantomStudy
) -> None:
    listener, intake = start()
    with associate(listener.port) as assoc:
        assert store(assoc, phantom.slices[0]) == 0
        assoc.abort()
    assert intake.wait_released() == [("SCU", frozenset({phantom.series_uid}))]


def test_serve_forever_until_stopped(tmp_path: Path) -> None:
    # What the CLI does: serve in the main thread, stop() from a signal handler's thread.
    listener = Listener(
        Settings(data_dir=tmp_path, host="127.0.0.1", port=free_port()), RecordingIntake()
    )
    thread = threading.Thread(target=listener.serve_forever)
    thread.start()
    try:
        for _ in range(50):
            with associate(listener.settings.port) as assoc:
                if assoc.is_established:
                    assert int(assoc.send_c_echo().Status) == 0
                    break
            time.sleep(0.05)
        else:
            pytest.fail("the listener never accepted an association")
    finally:
        listener.stop(timeout=2.0)
        thread.join(5.0)
    assert not thread.is_alive()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", listener.settings.port), timeout=1).close()


def test_intake_failure_still_answers_success(start: StartFn, phantom: PhantomStudy) -> None:
    listener, intake = start(intake=RecordingIntake(fail=True))
    with associate(listener.port) as assoc:
        assert store(assoc, phantom.slices[0]) == 0
    assert len(intake.stored) == 1 and intake.stored[0].path.is_file()


@contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_full_disk_refuses_with_out_of_resources(
    start: StartFn, phantom: PhantomStudy, tmp_path: Path
) -> None:
    with small_tmpfs(tmp_path / "small", "2m") as small:
        listener, intake = start(data_dir=small)
        try:
            statuses: list[int] = []
            with associate(listener.port) as assoc:
                for path in phantom.slices:
                    statuses.append(store(assoc, path))
                    if statuses[-1] != 0:
                        break
            assert statuses[-1] == scp.OUT_OF_RESOURCES, statuses
            assert set(statuses[:-1]) == {0} and len(statuses) > 1
            # nothing half-written: no temporary file, every instance whole
            assert list((listener.spool.root / TMP_DIR).iterdir()) == []
            stored = spool_files(listener.spool.root)
            assert len(stored) == len(statuses) - 1 == len(intake.stored)
            for path, sent in zip(
                stored,
                sorted(phantom.slices[: len(stored)], key=lambda p: instance_path(listener, p)),
                strict=True,
            ):
                assert dataset_bytes(path) == dataset_bytes(sent)
            # space freed: the refused instance is stored when sent again
            for path in stored[:2]:
                path.unlink()
            with associate(listener.port) as assoc:
                assert store(assoc, phantom.slices[len(statuses) - 1]) == 0
        finally:
            listener.stop(timeout=2.0)


# --- TLS ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([str(OPENSSL), *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    if OPENSSL is None:
        pytest.skip("openssl CLI not installed")
    d = tmp_path_factory.mktemp("pki")
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=onfh-test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip
    for name, usage, san in (
        ("server", "serverAuth", "DNS:localhost,IP:127.0.0.1"),
        ("client", "clientAuth", "DNS:scu.example"),
    ):
        (d / f"{name}.ext").write_text(
            f"basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            f"extendedKeyUsage={usage}\nsubjectAltName={san}\n"
        )
        _openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/CN={name}",
            cwd=d,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
            "-extfile", f"{name}.ext",
            cwd=d,
        )  # fmt: skip
    return Certs(
        d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key"
    )


def _client_context(certs: Certs, with_cert: bool) -> Any:
    import ssl

    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(certs.ca))
    if with_cert:
        context.load_cert_chain(certs.client_cert, certs.client_key)
    return context


def test_tls_with_client_certificates(start: StartFn, certs: Certs, phantom: PhantomStudy) -> None:
    listener, intake = start(tls_cert=certs.server_cert, tls_key=certs.server_key, tls_ca=certs.ca)
    # A silent plain-TCP client must not hold up the others (the handshake is deferred).
    with (
        socket.create_connection(("127.0.0.1", listener.port)),
        associate(listener.port, tls_args=(_client_context(certs, True), "localhost")) as assoc,
    ):
        assert assoc.is_established
        assert int(assoc.send_c_echo().Status) == 0
        assert store(assoc, phantom.slices[0]) == 0
    assert len(intake.stored) == 1

    with associate(listener.port) as assoc:  # plain DICOM to the TLS port
        assert not assoc.is_established
    with associate(listener.port, tls_args=(_client_context(certs, False), "localhost")) as assoc:
        assert not assoc.is_established  # no client certificate


def test_tls_without_ca_needs_no_client_certificate(start: StartFn, certs: Certs) -> None:
    listener, _ = start(tls_cert=certs.server_cert, tls_key=certs.server_key)
    with associate(listener.port, tls_args=(_client_context(certs, False), "localhost")) as assoc:
        assert assoc.is_established
        assert int(assoc.send_c_echo().Status) == 0


@pytest.mark.skipif(STORESCU is None, reason="DCMTK storescu is not installed")
def test_tls_with_storescu(start: StartFn, certs: Certs, phantom: PhantomStudy) -> None:
    listener, intake = start(tls_cert=certs.server_cert, tls_key=certs.server_key, tls_ca=certs.ca)
    base = [str(STORESCU), "-aet", "MODALITY1", "-aec", CALLED_AE]
    tls = ["+tls", str(certs.client_key), str(certs.client_cert), "+cf", str(certs.ca)]
    target = ["127.0.0.1", str(listener.port), str(phantom.slices[0])]
    result = subprocess.run([*base, *tls, *target], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert len(intake.stored) == 1
    plain = subprocess.run([*base, *target], capture_output=True, text=True, timeout=30)
    assert plain.returncode != 0
    assert len(intake.stored) == 1
