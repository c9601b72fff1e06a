"""The SCU side: C-STORE of DICOM files over one association, C-ECHO until a peer answers.

The worker delivers its results with it; the demo, tests and benchmarks push studies and
wait for a service with it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from onfh_dlr.errors import DeliveryError, PermanentError

log = logging.getLogger(__name__)

# C-STORE statuses that mean the peer has the object (PS3.4 B.2.3: warnings included).
STORED_STATUSES = frozenset({0x0000, 0xB000, 0xB006, 0xB007})


def store_files(
    paths: Sequence[Path],
    *,
    host: str,
    port: int,
    called_ae: str,
    calling_ae: str,
    timeout: float = 30.0,
    on_file: Callable[[Path, int], None] | None = None,
) -> list[int]:
    """C-STORE each file, as stored (its own transfer syntax), in one association.

    Returns the status of each store (-1: no response). ``on_file(path, status)`` is
    called after each.

    Raises
    ------
    DeliveryError
        The association could not be established or broke.
    PermanentError
        A file cannot be read.
    """
    datasets = []
    for path in paths:
        try:
            datasets.append(pydicom.dcmread(path))
        except (OSError, InvalidDicomError) as exc:
            raise PermanentError(f"cannot read {path}: {exc}") from exc
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    contexts = sorted(
        {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets}
    )
    if len(contexts) > 128:
        raise PermanentError("more than 128 SOP class / transfer syntax pairs in one push")
    for sop_class, syntax in contexts:
        ae.add_requested_context(sop_class, [syntax])
    where = f"{called_ae}@{host}:{port}"
    assoc = ae.associate(host, port, ae_title=called_ae)
    if not assoc.is_established:
        raise DeliveryError(f"{where}: association not established (peer down or refused)")
    tune_socket(assoc)
    statuses: list[int] = []
    try:
        for ds, path in zip(datasets, paths, strict=True):
            if not assoc.is_established:
                raise DeliveryError(
                    f"{where}: association {_how_it_ended(assoc)} after {len(statuses)} "
                    f"objects (last status {_last_status(statuses)})"
                )
            status = assoc.send_c_store(ds)
            code = int(status.Status) if status and "Status" in status else -1
            statuses.append(code)
            if on_file is not None:
                on_file(path, code)
    finally:
        if assoc.is_established:
            assoc.release()
    return statuses


#: Send and receive buffers (bytes) of the SCU's connection: room for a few instances.
SOCKET_BUFFER = 4 * 1024 * 1024


def _how_it_ended(assoc: Association) -> str:
    # What a PACS administrator needs first: did the peer abort, release, or just vanish?
    if assoc.is_aborted:
        return "aborted"
    if assoc.is_released:
        return "released by the peer"
    return "lost (connection closed, no A-ABORT or A-RELEASE)"


def _last_status(statuses: Sequence[int]) -> str:
    if not statuses:
        return "none"
    return "no response" if statuses[-1] < 0 else f"0x{statuses[-1]:04X}"


def tune_socket(assoc: Association) -> None:
    """TCP_NODELAY and large buffers on an established association's socket.

    pynetdicom leaves Nagle's algorithm on: the last segment of each C-STORE then waits
    for the peer's delayed ACK (~40 ms on loopback, 5-16 s for 400 instances). Set after
    the association is up (pynetdicom has no hook before connect); the A-ASSOCIATE
    exchange does not need it. Options the platform refuses are skipped.
    """
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if not isinstance(sock, socket.socket) or sock.family not in (
        socket.AF_INET,
        socket.AF_INET6,
    ):
        return
    for level, option, value in (
        (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
        (socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER),
        (socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER),
    ):
        with contextlib.suppress(OSError):
            sock.setsockopt(level, option, value)


def wait_for_echo(host: str, port: int, ae_title: str, timeout: float, *, calling_ae: str) -> bool:
    """C-ECHO ``ae_title@host:port`` until it answers or ``timeout`` passes."""
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = ae.connection_timeout = 2
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assoc = ae.associate(host, port, ae_title=ae_title)
        if assoc.is_established:
            status = assoc.send_c_echo()
            assoc.release()
            if status and status.Status == 0x0000:
                return True
        time.sleep(0.3)
    return False


__all__ = ["STORED_STATUSES", "store_files", "tune_socket", "wait_for_echo"]
