"""The listener's one seam into pynetdicom's internals: its subclasses of, and patches to,
pynetdicom's transport, upper layer (DUL, state machine) and ACSE, so that
``listener.scp`` holds the DICOM-level logic (what is accepted, what is refused and why,
the spool) and the :class:`~listener.scp.Listener` that runs it.

What it holds:

- socket options, the PDU size we advertise and event-driven reactors instead of 1 ms
  polling (:func:`tune_socket`, :data:`MAXIMUM_PDU_SIZE`, :func:`install`);
- guards that turn malformed input into an A-ABORT or A-ASSOCIATE-RJ instead of a dead
  thread and a peer left waiting: a PDU reader that refuses PDUs longer than
  :func:`pdu_limit`, a state machine whose failing actions abort, an ACSE whose failing
  negotiation rejects;
- :class:`GuardedRequestHandler`, which builds each association with all of the above
  and without pynetdicom's logging handlers, and :class:`GuardedAssociationServer`, which
  checks the peer's address (``listener.peers``) right after ``accept()`` and defers the
  TLS handshake to the association's own thread.

The reactors. pynetdicom 3.0 runs two polling loops per association: the DUL reactor (reads PDUs,
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

Who may import: ``listener.scp`` (the SCP). It imports ``listener.peers`` and the kernel,
never ``listener.scp``. The worker's SCU (``worker.scu``) sets the same socket options on
its own connection; the layering keeps the worker out of here.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
import queue
import select
import socket
import socketserver
import ssl
import struct
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import pynetdicom
from pynetdicom import evt
from pynetdicom.acse import ACSE
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.fsm import StateMachine
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from listener.peers import Network, host_allowed
from onfh_dlr.metrics import ASSOCIATIONS
from onfh_dlr.settings import Transport

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


# --- guards against malformed input, and the server that installs them -------------------

_READ_TIMEOUT = 60.0  # s; longest silence inside a PDU when the AE has no network timeout

#: State machine events raised by a primitive from this side (PS3.8 9.2): the primitive
#: waits in ``to_provider_queue`` until an action takes it.
_LOCAL_EVENTS = frozenset({"Evt1", "Evt7", "Evt8", "Evt9", "Evt11", "Evt14", "Evt15"})


class _GuardedStateMachine(StateMachine):
    """pynetdicom's upper-layer state machine, except that an action that raises is
    treated as an invalid PDU (Evt19: A-ABORT) instead of killing the DUL thread.

    Actions raise on some malformed input, e.g. an A-ASSOCIATE-RQ with an even
    presentation context ID or a command set without a Command Field, and an event the
    current state has no transition for raises too (e.g. the A-RELEASE response of a
    release the peer asked for just before sending garbage); the reader thread then
    died with a traceback and the connection was left open until a timer.
    """

    def do_action(self, event: str) -> None:
        killed = self.dul._kill_thread
        try:
            super().do_action(event)
        except Exception as exc:
            if event == "Evt19":
                raise  # aborting itself failed: let pynetdicom's own handling run
            self.dul._kill_thread = killed  # a failed action sets it; the abort needs the DUL
            if event in _LOCAL_EVENTS:
                # A primitive of ours that cannot be sent now: drop it, or it comes back
                # on every turn of the reactor loop.
                with contextlib.suppress(queue.Empty):
                    self.dul.to_provider_queue.get_nowait()
            if self.current_state == "Sta13":
                return  # aborted already, waiting for the connection to close
            log.warning(
                "invalid data from %s (%s in %s): aborting the association",
                self.dul.assoc.requestor.address,
                type(exc).__name__,
                self.current_state,
            )
            super().do_action("Evt19")


class _GuardedACSE(ACSE):
    """pynetdicom's ACSE, except that an A-ASSOCIATE-RQ whose negotiation raises (e.g.
    a presentation context without a transfer syntax) is rejected: otherwise the
    association thread dies and the peer waits for an answer that never comes."""

    def negotiate_association(self) -> None:
        try:
            super().negotiate_association()
        except Exception as exc:
            log.warning(
                "A-ASSOCIATE-RQ from %s cannot be negotiated (%s): rejected",
                self.assoc.requestor.address,
                type(exc).__name__,
            )
            with contextlib.suppress(Exception):
                # rejected-permanent, by the service user, no reason given
                self.send_reject(0x01, 0x01, 0x01)
            self.assoc.is_rejected = True
            self.assoc.kill()


#: The largest PDU the listener reads (its 6-byte header not counted). pynetdicom reads
#: whatever length a header claims, up to 4 GiB, into memory; a peer that streams such a
#: PDU (before association, too) could exhaust the listener's memory. Ours advertise
#: ``maximum_pdu_size`` for P-DATA-TF; an A-ASSOCIATE-RQ with every storage context is
#: tens of KB. Larger PDUs are a protocol violation and get an A-ABORT.
MIN_PDU_LIMIT = 1024 * 1024


def pdu_limit(maximum_pdu_size: int) -> int:
    """The largest PDU length accepted by an AE that advertises ``maximum_pdu_size``.

    Four times the advertised size (at least 1 MiB) leaves room for peers that round
    up; an AE that advertises no limit (0) accepts what the header says.
    """
    if maximum_pdu_size <= 0:
        return 0xFFFFFFFF
    return max(MIN_PDU_LIMIT, 4 * maximum_pdu_size)


def _bounded_pdu_reader(dul: DULServiceProvider, limit: int) -> Callable[[], None]:
    """A replacement for ``dul._read_pdu_data`` that refuses PDUs longer than ``limit``.

    Otherwise it does what pynetdicom's does: read one PDU, queue its event (Evt17 when
    the connection closes mid-PDU, Evt19 for an unknown type or undecodable PDU) and
    the decoded PDU. Malformed PDUs are logged as one warning, not as an ERROR with a
    traceback for each.
    """

    def read() -> None:
        sock = cast(AssociationSocket, dul.socket)
        try:
            header = sock.recv(6)
        except OSError:  # includes TimeoutError
            dul.event_queue.put("Evt17")
            return
        if len(header) < 6:
            dul.event_queue.put("Evt17")
            return
        pdu_type, _, length = struct.unpack(">BBL", header)
        address = dul.assoc.requestor.address
        if pdu_type not in _PDU_TYPES:
            log.warning("invalid data from %s: unknown PDU type 0x%02X", address, pdu_type)
            dul.event_queue.put("Evt19")
            return
        if length > limit:
            log.warning(
                "invalid data from %s: a PDU of %d bytes (at most %d accepted)",
                address,
                length,
                limit,
            )
            dul.event_queue.put("Evt19")
            return
        try:
            body = sock.recv(length)
        except OSError:
            dul.event_queue.put("Evt17")
            return
        if len(body) != length:  # the connection closed mid-PDU
            dul.event_queue.put("Evt17")
            return
        try:
            pdu, event = dul._decode_pdu(bytearray(header) + body)
        except Exception as exc:  # any malformed PDU; pynetdicom raises many kinds
            log.warning("invalid data from %s: undecodable PDU (%s)", address, exc)
            dul.event_queue.put("Evt19")
            return
        dul.event_queue.put(event)
        dul._recv_pdu.put(pdu)

    return read


_PDU_TYPES = frozenset(range(0x01, 0x08))

#: Events to which pynetdicom binds its own logging handlers (``LOG_HANDLER_LEVEL``).
_LOGGING_EVENTS = (evt.EVT_DIMSE_RECV, evt.EVT_DIMSE_SENT, evt.EVT_PDU_RECV, evt.EVT_PDU_SENT)


class GuardedRequestHandler(RequestHandler):
    """Creates associations with event-driven reactors and a tuned socket
    (:func:`install`), the bounded PDU reader, the guarded state machine and ACSE, and
    without pynetdicom's logging handlers.

    Those format every PDU and DIMSE message for DEBUG logs (which the service does not
    write) and raise on malformed values (an empty or non-UID SOP Class UID): the
    exception stops the remaining handlers of the event, so the listener's own check
    of the request never ran and the peer got no answer.
    """

    def _create_association(self) -> Association:
        # First: it replaces the DUL that the lines below patch.
        assoc = install(super()._create_association())
        for event in _LOGGING_EVENTS:
            bound = cast(list[tuple[Callable[..., Any], Any]], assoc.get_handlers(event))
            for handler, _ in list(bound):
                if getattr(handler, "__module__", "") == "pynetdicom._handlers":
                    assoc.unbind(event, handler)
        limit = pdu_limit(self.ae.maximum_pdu_size)
        assoc.dul._read_pdu_data = _bounded_pdu_reader(assoc.dul, limit)  # type: ignore[method-assign]
        machine = _GuardedStateMachine(assoc.dul)
        machine.current_state = assoc.dul.state_machine.current_state
        assoc.dul.state_machine = machine
        assoc.acse = _GuardedACSE(assoc)
        return assoc


class GuardedAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with a peer-address check and a deferred TLS handshake."""

    allowed_networks: tuple[Network, ...] = ()

    def verify_request(self, request: Any, client_address: Any) -> bool:
        address = str(client_address[0]) if isinstance(client_address, tuple) else ""
        if host_allowed(address, self.allowed_networks):
            return True
        ASSOCIATIONS.labels(Transport.DIMSE.value, "rejected").inc()
        log.warning("refused connection from %s: not in allowed_hosts", address)
        return False

    def shutdown(self) -> None:
        # pynetdicom's shutdown() also drops the server from its AE's list and raises if
        # it is no longer there; listener.scp's Listener._close does that part, once.
        socketserver.BaseServer.shutdown(self)

    def get_request(self) -> tuple[socket.socket, Any]:
        # pynetdicom wraps with the handshake inside accept(), on the single accepting
        # thread: one silent client would block every other. Deferring the handshake to
        # the first read moves it onto that association's own thread.
        client, address = cast(socket.socket, self.socket).accept()
        # Accepted sockets block without a timeout: a peer that sends part of a PDU and
        # then nothing would hold its thread and socket forever (pynetdicom reads a whole
        # PDU in one blocking call, where neither ARTIM nor the idle timer can fire).
        client.settimeout(self.ae.network_timeout or _READ_TIMEOUT)
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(
                client, server_side=True, do_handshake_on_connect=False
            )
        return client, address


__all__ = [
    "COPIED_SOURCES",
    "MAXIMUM_PDU_SIZE",
    "MAX_WAIT",
    "MIN_PDU_LIMIT",
    "PYNETDICOM_RANGE",
    "SOCKET_BUFFER",
    "EventDrivenDUL",
    "GuardedAssociationServer",
    "GuardedRequestHandler",
    "event_driven_available",
    "install",
    "pdu_limit",
    "source_digest",
    "tune_socket",
]
