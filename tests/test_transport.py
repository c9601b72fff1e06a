"""The listener's seam into pynetdicom (``listener.transport``) and the durable write path.

The seam copies two pynetdicom reactor loops: the first tests fail when the installed
pynetdicom is not the one they were copied from. Then, over real associations: the
reactors in use are the event-driven ones (they wait, they do not poll), the socket has
TCP_NODELAY, the listener advertises large PDUs; and a C-STORE is answered Success only
after its file is fsynced (an fsync that blocks or fails is injected).
"""

from __future__ import annotations

import errno
import os
import re
import socket
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pydicom
import pynetdicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, MRImageStorage
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from service_harness import CohortMaker, PhantomStudy

from listener import scp, transport
from listener.scp import Listener
from listener.spool import TMP_DIR, StoredInstance
from onfh_dlr.settings import Settings
from worker.scu import tune_socket

ROOT = Path(__file__).resolve().parents[1]
CALLED_AE = "ONFH_DLR"


class NullIntake:
    def instance_stored(self, instance: StoredInstance) -> None:
        pass

    def association_released(self, calling_ae: str, series_uids: frozenset[str]) -> None:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def phantom(phantom_cohort: CohortMaker) -> PhantomStudy:
    (study,) = phantom_cohort(1, 3, onfh_fraction=1.0).studies
    return study


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    running = Listener(
        Settings(host="127.0.0.1", port=free_port(), data_dir=tmp_path / "data"), NullIntake()
    )
    running.start()
    yield running
    running.stop(timeout=2.0)


@contextmanager
def associate(port: int) -> Iterator[Association]:
    ae = AE(ae_title="SCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = 10
    ae.add_requested_context(MRImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    ae.add_requested_context(scp.Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=CALLED_AE)
    assert assoc.is_established
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def server_side(listener: Listener) -> Association:
    """The listener's (only) established association."""
    server = listener._server
    assert server is not None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        found = [a for a in server.active_associations if a.is_established]
        if found:
            return found[0]
        time.sleep(0.01)
    raise AssertionError("no established association on the listener")


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def spool_files(listener: Listener) -> list[Path]:
    return sorted(p for p in listener.spool.root.rglob("*.dcm") if TMP_DIR not in p.parts)


def temp_files(listener: Listener) -> list[Path]:
    return list((listener.spool.root / TMP_DIR).iterdir())


# --- the pinned pynetdicom ----------------------------------------------------------------


def as_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def test_pyproject_pins_the_pynetdicom_range_the_reactors_were_copied_from() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (pin,) = [d for d in project["dependencies"] if d.startswith("pynetdicom")]
    low, high = re.fullmatch(r"pynetdicom>=([\d.]+),<([\d.]+)", pin).groups()  # type: ignore[union-attr]
    assert (as_tuple(low), as_tuple(high)) == (
        transport.PYNETDICOM_RANGE[0],
        transport.PYNETDICOM_RANGE[1][: len(as_tuple(high))],
    )
    assert transport.event_driven_available(), pynetdicom.__version__


def test_pynetdicom_reactors_are_the_ones_copied() -> None:
    # A new pynetdicom that changes either loop must be read again before the pin moves.
    originals = {
        "pynetdicom.dul.DULServiceProvider.run_reactor": DULServiceProvider.run_reactor,
        "pynetdicom.association.Association._run_reactor": Association._run_reactor,
    }
    assert {name: transport.source_digest(f) for name, f in originals.items()} == (
        transport.COPIED_SOURCES
    )


def test_outside_the_range_the_loops_are_pynetdicom_s(
    monkeypatch: pytest.MonkeyPatch, listener: Listener
) -> None:
    monkeypatch.setattr(pynetdicom, "__version__", "3.1.0")
    assert not transport.event_driven_available()
    with associate(listener.port) as assoc:
        assert assoc.send_c_echo().Status == scp.SUCCESS
        theirs = server_side(listener)
        assert type(theirs.dul) is DULServiceProvider
        raw = theirs.dul.socket.socket  # type: ignore[union-attr]
        assert raw is not None and raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


# --- the seam in use ----------------------------------------------------------------------


def test_accepted_association_has_nodelay_large_pdus_and_event_driven_reactors(
    listener: Listener,
) -> None:
    with associate(listener.port) as assoc:
        assert assoc.acceptor.maximum_length == transport.MAXIMUM_PDU_SIZE
        theirs = server_side(listener)
        assert isinstance(theirs.dul, transport.EventDrivenDUL)
        raw = theirs.dul.socket.socket  # type: ignore[union-attr]
        assert raw is not None and raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_idle_association_waits_instead_of_polling(listener: Listener) -> None:
    # pynetdicom's loops turn about every 1.1 ms when idle (~450 turns in 0.5 s); the
    # event-driven ones wake every MAX_WAIT (10 in 0.5 s) or when something arrives.
    with associate(listener.port):
        theirs = server_side(listener)
        turns = {"dul": 0, "association": 0}

        def counted(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
            def call(*args: Any, **kwargs: Any) -> Any:
                turns[name] += 1
                return method(*args, **kwargs)

            return call

        dul = theirs.dul
        dul._process_recv_primitive = counted("dul", dul._process_recv_primitive)  # type: ignore[method-assign]
        theirs.dimse.get_msg = counted("association", theirs.dimse.get_msg)  # type: ignore[method-assign]
        time.sleep(0.5)
        seen = dict(turns)
    limit = 0.5 / transport.MAX_WAIT * 3
    assert 0 < seen["dul"] <= limit and 0 < seen["association"] <= limit, seen


def test_echo_and_release_are_answered_at_once(listener: Listener) -> None:
    # Nothing waits for MAX_WAIT on the way: 20 echoes take far less than 20 x 50 ms.
    with associate(listener.port) as assoc:
        start = time.perf_counter()
        for _ in range(20):
            assert assoc.send_c_echo().Status == scp.SUCCESS
        assert time.perf_counter() - start < 20 * transport.MAX_WAIT


def test_scu_socket_gets_nodelay(listener: Listener) -> None:
    with associate(listener.port) as assoc:
        tune_socket(assoc)
        raw = assoc.dul.socket.socket  # type: ignore[union-attr]
        assert raw is not None and raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


# --- Success only after fsync -------------------------------------------------------------


def test_store_is_answered_only_after_the_fsync(
    listener: Listener, phantom: PhantomStudy, monkeypatch: pytest.MonkeyPatch
) -> None:
    released = threading.Event()
    fsyncs: list[float] = []
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        released.wait(10)  # the disk holds every fsync until the test lets it go
        real_fsync(fd)
        fsyncs.append(time.monotonic())

    monkeypatch.setattr("listener.spool.os.fsync", slow_fsync)
    answers: list[tuple[int, float]] = []
    with associate(listener.port) as assoc:

        def send() -> None:
            status = assoc.send_c_store(phantom.slices[0])
            answers.append((int(status.Status), time.monotonic()))

        sender = threading.Thread(target=send)
        sender.start()
        # The bytes are in a temporary file, not yet fsynced: no answer, no instance.
        assert wait_until(lambda: bool(temp_files(listener)))
        time.sleep(0.5)
        assert answers == [] and spool_files(listener) == []
        released.set()
        sender.join(10)
    assert [status for status, _ in answers] == [scp.SUCCESS]
    # both fsyncs (file, then its directory) came before the answer
    assert len(fsyncs) >= 2 and max(fsyncs) <= answers[0][1]
    assert len(spool_files(listener)) == 1 and temp_files(listener) == []


def test_failed_fsync_refuses_and_leaves_no_file(
    listener: Listener, phantom: PhantomStudy, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr("listener.spool.os.fsync", failing_fsync)
    with associate(listener.port) as assoc:
        status = assoc.send_c_store(phantom.slices[0])
    assert int(status.Status) == scp.OUT_OF_RESOURCES
    assert spool_files(listener) == [] and temp_files(listener) == []


def test_refused_instance_leaves_no_temporary_file(
    listener: Listener, phantom: PhantomStudy
) -> None:
    dataset = pydicom.dcmread(phantom.slices[0])
    dataset.Modality = "CT"  # an MR image that says it is not: refused after it was written
    with associate(listener.port) as assoc:
        status = assoc.send_c_store(dataset)
    assert int(status.Status) == scp.NOT_MR
    assert wait_until(lambda: temp_files(listener) == [])
    assert spool_files(listener) == []
