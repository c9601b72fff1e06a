"""The listener's changes to pynetdicom's transport, in one place: socket options, the
PDU size we advertise and event-driven reactors instead of 1 ms polling.

pynetdicom 3.0 runs two polling loops per association: the DUL reactor (reads PDUs,
sends primitives) sleeps 1 ms whenever a turn found nothing to do, and the acceptor's
association reactor sleeps 1 ms before every look at the DIMSE message queue. A C-STORE
waits in both (the request's last PDU, then the handler's response on its way out), and
each ``time.sleep(0.001)`` costs 1.05-1.1 ms, more on a busy machine. Here both loops wait
on what they serve instead: the DUL thread in ``select()`` on the peer's socket and on a
wake-up socket written whenever a primitive or event is queued for it; the association
thread on a :class:`threading.Event` set whenever a DIMSE message or a primitive for the
user arrives. Both still wake every :data:`MAX_WAIT` s to check their timers (ARTIM,
network idle) and kill flags, as pynetdicom's loops do on every turn.

The two replaced loops are copies of pynetdicom's, changed only where they wait; the
version range they were copied from is :data:`PYNETDICOM_RANGE` (also pinned in
``pyproject.toml``), and ``tests/test_transport.py`` fails when the installed
pynetdicom's originals differ from the ones copied (:data:`COPIED_SOURCES`). Outside the
range :func:`event_driven_available` is false and :func:`install` leaves pynetdicom's
loops in place (only the socket options are applied).

Who may import: ``listener.scp`` (the SCP). The worker's SCU (``worker.scu``) sets the
same socket options on its own connection; the layering keeps the worker out of here.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
import queue
import select
import socket
import ssl
import threading
import time
from typing import Any, cast

import pynetdicom
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import AssociationSocket

log = logging.getLogger(__name__)

#: pynetdicom versions whose reactors the copies below were made from.
PYNETDICOM_RANGE = ((3, 0, 4), (3, 1, 0))  # >= 3.0.4, < 3.1 (as pyproject.toml)
#: sha256 of ``inspect.getsource`` of the pynetdicom functions copied here (3.0.4).
COPIED_SOURCES = {
    "pynetdicom.dul.DULServiceProvider.run_reactor": (
        "e3a10eb3a0931e4854af33b9496e92d9679522aca26b0e04da8967559b9e2803"
    ),
    "pynetdicom.association.Association._run_reactor": (
        "f28838c5559e462a563750cfc9f3790027f4bb7e2223baf42c9f5d682c359dee"
    ),
}

#: The largest P-DATA-TF PDU we advertise (maximum receive length). pynetdicom's default,
#: 16382 bytes, splits a 372 KB MR instance into 24 PDUs, each a turn of the reactor, a
#: state machine action and a bytes concatenation; at 1 MiB one PDU carries it.
MAXIMUM_PDU_SIZE = 1024 * 1024
#: Socket send and receive buffers (bytes) of the SCP's and the SCU's connections: room
#: for a few instances in flight, so the sender never waits on a full window.
SOCKET_BUFFER = 4 * 1024 * 1024
#: Longest wait (s) of an idle reactor before it looks at its timers and kill flags.
MAX_WAIT = 0.05


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def source_digest(function: Any) -> str:
    """sha256 of a function's source text (how :data:`COPIED_SOURCES` is made)."""
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()


def event_driven_available() -> bool:
    """Whether the installed pynetdicom is one whose reactors were copied here."""
    low, high = PYNETDICOM_RANGE
    return low <= _version(pynetdicom.__version__) < high


def tune_socket(sock: socket.socket, *, buffer_size: int = SOCKET_BUFFER) -> None:
    """TCP_NODELAY and large send/receive buffers on a connected TCP socket.

    Nagle's algorithm holds a small segment (a C-STORE response, the last PDV of a request)
    until the previous one is acknowledged, and the peer delays that ACK by up to 40 ms;
    every DICOM peer that cares (DCMTK with ``TCP_NODELAY=1``, Orthanc) turns it off.
    Options the platform refuses are skipped: a slower socket still works.
    """
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    for level, option, value in (
        (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
        (socket.SOL_SOCKET, socket.SO_SNDBUF, buffer_size),
        (socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_size),
    ):
        with contextlib.suppress(OSError):
            sock.setsockopt(level, option, value)


class _WakingQueue(queue.Queue[Any]):
    """A queue that calls ``wake()`` after every put (the reader may be waiting elsewhere)."""

    def __init__(self, wake: Any) -> None:
        super().__init__()
        self._wake = wake

    def _put(self, item: Any) -> None:
        super()._put(item)
        self._wake()


class _Waker:
    """A socket pair the DUL thread selects on next to the peer's socket."""

    def __init__(self) -> None:
        self.reader, self.writer = socket.socketpair()
        self.reader.setblocking(False)
        self.writer.setblocking(False)
        self._signalled = False

    def wake(self) -> None:
        # One byte at most is pending: a second wake while one is unread adds nothing.
        if not self._signalled:
            self._signalled = True
            with contextlib.suppress(OSError):
                self.writer.send(b"\0")

    def drain(self) -> None:
        with contextlib.suppress(OSError):
            while self.reader.recv(64):
                pass
        self._signalled = False

    def close(self) -> None:
        self.reader.close()
        self.writer.close()


class EventDrivenDUL(DULServiceProvider):
    """pynetdicom's DUL service provider with a reactor that waits in ``select()``.

    Built by :func:`install` in place of an association's own (before its thread starts).
    """

    def __init__(self, assoc: Association) -> None:
        super().__init__(assoc)
        self._waker = _Waker()
        self._user_wake: threading.Event | None = None
        self.event_queue = _WakingQueue(self._waker.wake)
        self.to_provider_queue = _WakingQueue(self._waker.wake)

    def kill_dul(self) -> None:
        """Kill the DUL reactor and stop the thread (at once, not at its next timeout)."""
        super().kill_dul()
        self._waker.wake()

    def _wait(self) -> None:
        """Block until the peer sent data, a primitive or event was queued, or MAX_WAIT."""
        wrapper = self.socket
        sock = wrapper.socket if wrapper is not None else None
        if sock is None or not getattr(wrapper, "_is_connected", False) or sock.fileno() < 0:
            time.sleep(0.001)  # no connection to wait on (Sta13 closing): poll as pynetdicom
            return
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return  # decrypted bytes select() cannot see
        if not (self.event_queue.empty() and self.to_provider_queue.empty()):
            return
        try:
            ready, _, _ = select.select([sock, self._waker.reader], [], [], MAX_WAIT)
        except (OSError, ValueError):
            return  # the reactor's own socket check reports the closed connection
        if self._waker.reader in ready:
            self._waker.drain()

    def run_reactor(self) -> None:
        """pynetdicom 3.0's ``run_reactor``, waiting in :meth:`_wait` instead of sleeping."""
        try:
            self._run_reactor()
        finally:
            self._waker.close()
            if self._user_wake is not None:
                self._user_wake.set()  # the association reactor checks is_alive() now

    def _run_reactor(self) -> None:
        # Copied from pynetdicom 3.0.4 DULServiceProvider.run_reactor; only the wait differs.
        self._idle_timer.start()
        self.socket = cast("AssociationSocket", self.socket)
        sleep = False

        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
                sleep = True

            if sleep:
                self._wait()

            if self._kill_thread:
                break

            if self.artim_timer.expired:
                self.event_queue.put("Evt18")

            try:
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception as exc:
                log.error("Exception in DUL.run(), aborting association")
                log.exception(exc)
                abort_pdu = A_ABORT_RQ()
                abort_pdu.source = 0x02
                abort_pdu.reason_diagnostic = 0x00
                self.socket.send(abort_pdu.encode())
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                self.assoc._kill = True
                self._kill_thread = True
                return

            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                sleep = True
                continue

            self.state_machine.do_action(event)
            sleep = False


def _acceptor_reactor(self: Association, wake: threading.Event) -> None:
    """pynetdicom 3.0.4's ``Association._run_reactor``, waiting on ``wake`` instead of 1 ms."""
    self._is_paused = False
    while not self._kill:
        # Cleared before the checks: a message queued during them sets it again.
        wake.wait(MAX_WAIT)
        wake.clear()

        self._is_paused = True
        self._reactor_checkpoint.wait()
        self._is_paused = False

        context_id, msg = self.dimse.get_msg(block=False)
        if msg:
            self._serve_request(msg, cast(int, context_id))
            wake.set()  # look again at once: another message may be queued

        if self.is_established and self.acse.is_release_requested():
            self.acse.send_release(is_response=True)
            log.debug("Association Released")
            self.is_released = True
            self.is_established = False
            evt.trigger(self, evt.EVT_RELEASED, {})
            self.kill()
            return

        if self.acse.is_aborted():
            self.dul.receive_pdu(wait=False)
            self.is_aborted = True
            self.is_established = False
            evt.trigger(self, evt.EVT_ABORTED, {})
            self.kill()
            return

        if not self.dul.is_alive():
            self.kill()
            return

        if self.dul.idle_timer_expired():
            log.error("Network timeout reached")
            if self.network_timeout_response == "A-RELEASE":
                self._is_paused = True
                self._reactor_checkpoint.wait()
                self.release()
                self._is_paused = False
            else:
                self.abort()

            self.kill()
            return


def install(assoc: Association) -> Association:
    """Make a fresh acceptor association (thread not started) event-driven and tune its
    socket.

    Replaces its DUL with an :class:`EventDrivenDUL` (same socket, timers and queues'
    roles) and its reactor with the event-driven copy. Call it first when creating an
    association, before anything else keeps a reference to ``assoc.dul``. With a
    pynetdicom outside :data:`PYNETDICOM_RANGE` only the socket is tuned.
    """
    old = assoc.dul
    wrapper = old.socket
    if wrapper is not None and isinstance(wrapper.socket, socket.socket):
        tune_socket(wrapper.socket)
    if not event_driven_available():
        return assoc
    dul = EventDrivenDUL(assoc)
    dul.socket = old.socket
    dul._idle_timer.timeout = old._idle_timer.timeout
    dul.artim_timer.timeout = old.artim_timer.timeout
    dul.state_machine.current_state = old.state_machine.current_state
    wake = threading.Event()
    dul._user_wake = wake
    dul.to_user_queue = _WakingQueue(wake.set)
    # The socket's creation queued Evt5 (connection open) on the old DUL: keep its events.
    for name in ("event_queue", "to_provider_queue", "to_user_queue", "_recv_pdu"):
        source, target = getattr(old, name), getattr(dul, name)
        while True:
            try:
                target.put(source.get_nowait())
            except queue.Empty:
                break
    assoc.dul = dul
    assoc.dimse.msg_queue = _WakingQueue(wake.set)
    assoc._run_reactor = lambda: _acceptor_reactor(assoc, wake)  # type: ignore[method-assign]
    return assoc


__all__ = [
    "COPIED_SOURCES",
    "MAXIMUM_PDU_SIZE",
    "MAX_WAIT",
    "PYNETDICOM_RANGE",
    "SOCKET_BUFFER",
    "EventDrivenDUL",
    "event_driven_available",
    "install",
    "source_digest",
    "tune_socket",
]
