"""Raw PDUs for fuzzing the listener: association requests built and broken byte by
byte, the PDU cases hypothesis draws, a raw TCP connection that sends them and judges
the listener's answer, and peers that stall inside a PDU. The dataset side of the
toolkit is :mod:`fuzzing`."""

from __future__ import annotations

import contextlib
import itertools
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from fuzzing import TIMEOUT, Draw
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    MRImageStorage,
)
from service_harness import SERVICE_AE

from listener.scp import Verification

# --- PDUs --------------------------------------------------------------------------------


def _item(item_type: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(payload)) + payload


def _pdu(pdu_type: int, payload: bytes) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, len(payload)) + payload


def _ae(title: bytes) -> bytes:
    return title[:16].ljust(16, b" ")


@dataclass
class AssociateRQ:
    """The fields of an A-ASSOCIATE-RQ, each of which a case may break."""

    version: int = 1
    called: bytes = SERVICE_AE.encode()
    calling: bytes = b"FUZZ_PDU"
    app_context: bytes = b"1.2.840.10008.3.1.1.1"
    contexts: list[tuple[int, bytes, list[bytes]]] = field(
        default_factory=lambda: [
            (1, b"1.2.840.10008.1.1", [b"1.2.840.10008.1.2"]),
            (3, MRImageStorage.encode(), [b"1.2.840.10008.1.2.1", b"1.2.840.10008.1.2"]),
        ]
    )
    max_pdu: int | None = 16384
    impl_uid: bytes | None = b"1.2.826.0.1.3680043.8.498.1"
    extra_user_items: bytes = b""
    extra_items: bytes = b""

    def encode(self) -> bytes:
        items = _item(0x10, self.app_context)
        for context_id, abstract, syntaxes in self.contexts:
            sub = _item(0x30, abstract) + b"".join(_item(0x40, s) for s in syntaxes)
            items += _item(0x20, bytes([context_id & 0xFF, 0, 0, 0]) + sub)
        user = b""
        if self.max_pdu is not None:
            user += _item(0x51, struct.pack(">L", self.max_pdu & 0xFFFFFFFF))
        if self.impl_uid is not None:
            user += _item(0x52, self.impl_uid)
        user += self.extra_user_items
        items += _item(0x50, user) + self.extra_items
        header = struct.pack(">HH", self.version & 0xFFFF, 0)
        header += _ae(self.called) + _ae(self.calling) + b"\x00" * 32
        return _pdu(0x01, header + items)


def echo_command(message_id: int = 1) -> bytes:
    """A C-ECHO-RQ command set (implicit VR little endian)."""
    ds = Dataset()
    ds.AffectedSOPClassUID = Verification
    ds.CommandField = 0x0030
    ds.MessageID = message_id
    ds.CommandDataSetType = 0x0101
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_dataset(buffer, ds)
    body = buffer.getvalue()
    return b"\x00\x00\x00\x00\x04\x00\x00\x00" + struct.pack("<L", len(body)) + body


def p_data(context_id: int, control: int, data: bytes) -> bytes:
    """A P-DATA-TF PDU with one PDV."""
    pdv = struct.pack(">LBB", len(data) + 2, context_id & 0xFF, control) + data
    return _pdu(0x04, pdv)


RELEASE_RQ = _pdu(0x05, b"\x00" * 4)
ABORT = _pdu(0x07, b"\x00\x00\x00\x00")


def _mutate_bytes(draw: Draw[Any], data: bytes) -> bytes:
    out = bytearray(data)
    how = draw(st.sampled_from(["truncate", "flip", "length", "insert", "delete"]))
    if how == "truncate":
        return bytes(out[: draw(st.integers(0, max(0, len(out) - 1)))])
    if how == "length":  # the PDU length field
        length = draw(st.one_of(st.sampled_from([0, 1, 5, 0xFFFFFFFF, 0x7FFFFFFF]), st.integers()))
        struct.pack_into(">L", out, 2, length & 0xFFFFFFFF)
        return bytes(out)
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, max(0, len(out) - 1)))
        if how == "flip" and out:
            out[pos] ^= 1 << draw(st.integers(0, 7))
        elif how == "insert":
            out[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif out:
            del out[pos : pos + draw(st.integers(1, 8))]
    return bytes(out)


def _broken_rq(draw: Draw[Any]) -> bytes:
    """An A-ASSOCIATE-RQ with one field broken, or its bytes mutated."""
    rq = AssociateRQ()
    what = draw(
        st.sampled_from(
            [
                "version",
                "calling",
                "called",
                "app_context",
                "context_ids",
                "abstract",
                "syntaxes",
                "no_contexts",
                "many_contexts",
                "max_pdu",
                "impl_uid",
                "user_items",
                "items",
                "bytes",
            ]
        )
    )
    if what == "version":
        rq.version = draw(st.sampled_from([0, 2, 0xFFFF]))
    elif what == "calling":
        rq.calling = draw(
            st.one_of(
                st.sampled_from(
                    [b"", b" " * 16, b"\x00" * 16, b"A\x1b[2JB", b"\n\r\t", b"\xff\xfe"]
                ),
                st.binary(max_size=16),
            )
        )
    elif what == "called":
        rq.called = draw(st.sampled_from([b"", b"\x00" * 16, b"OTHER", b"\x07\x08"]))
    elif what == "app_context":
        rq.app_context = draw(st.sampled_from([b"", b"1.2.3", b"x" * 70, b"\x00", b"9" * 300]))
    elif what == "context_ids":
        ids = draw(st.lists(st.integers(0, 255), min_size=2, max_size=2))
        rq.contexts = [(i, a, s) for i, (_, a, s) in zip(ids, rq.contexts, strict=True)]
    elif what == "abstract":
        bad = draw(st.sampled_from([b"", b"../../etc", b"1" * 65, b"\x00" * 8, b"9" * 5000]))
        rq.contexts = [(1, bad, [b"1.2.840.10008.1.2"])]
    elif what == "syntaxes":
        bad_syntaxes = draw(
            st.sampled_from([[], [b""], [b"1.2.3.4"], [b"\xff" * 64], [b"1.2.840.10008.1.2"] * 300])
        )
        rq.contexts = [(1, b"1.2.840.10008.1.1", bad_syntaxes)]
    elif what == "no_contexts":
        rq.contexts = []
    elif what == "many_contexts":
        count = draw(st.sampled_from([128, 129, 255, 256]))
        rq.contexts = [
            (2 * i + 1, b"1.2.840.10008.1.1", [b"1.2.840.10008.1.2"]) for i in range(count)
        ]
    elif what == "max_pdu":
        rq.max_pdu = draw(st.sampled_from([None, 0, 1, 6, 7, 8, 100, 0xFFFFFFFF, 0x7FFFFFFF]))
    elif what == "impl_uid":
        rq.impl_uid = draw(st.sampled_from([None, b"", b"1" * 65, b"../../x", b"\x00" * 4]))
    elif what == "user_items":  # role selection, extended negotiation, user identity, unknown
        rq.extra_user_items = draw(
            st.sampled_from(
                [
                    _item(0x54, b"\xff\xff" + b"1.2" + b"\x01\x01"),  # role: bad UID length
                    _item(0x56, b"\x00\x05" + b"1.2.3" + b"\xff" * 100),
                    _item(0x58, b"\x02\x01" + b"\xff\xff" + b"user"),  # identity: bad length
                    _item(0x53, b"\x00"),  # asynchronous ops window, too short
                    _item(0x77, b"\x00" * 10),
                    b"\x51\x00\xff\xff",  # an item claiming 65535 bytes
                ]
            )
        )
    elif what == "items":
        rq.extra_items = draw(
            st.sampled_from([_item(0x99, b"x" * 10), b"\x20\x00\xff\xff", b"\x10", b"\x00" * 7])
        )
    encoded = rq.encode()
    if what == "bytes" or draw(st.integers(0, 9)) == 0:
        encoded = _mutate_bytes(draw, encoded)
    return encoded


@dataclass
class PduCase:
    """One raw exchange: bytes to send before and after the association is negotiated."""

    first: bytes
    after_accept: list[bytes] = field(default_factory=list)
    echo: bool = False  # if accepted, run a C-ECHO over the raw connection first


def pdu_case(draw: Draw[Any], kind: str) -> PduCase:
    good = AssociateRQ().encode()
    if kind == "associate_rq":
        return PduCase(_broken_rq(draw), echo=True)
    if kind == "before_association":
        first = draw(
            st.sampled_from(
                [
                    p_data(1, 0x03, echo_command()),
                    RELEASE_RQ,
                    ABORT,
                    _pdu(0x02, good[6:]),  # an A-ASSOCIATE-AC from the requestor
                    _pdu(0x03, b"\x00\x01\x01\x01"),
                    _pdu(0x06, b"\x00" * 4),
                    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",  # a TLS ClientHello start
                ]
            )
        )
        return PduCase(_mutate_bytes(draw, first) if draw(st.booleans()) else first)
    if kind == "unknown_pdu_type":
        pdu_type = draw(st.sampled_from([0x00, 0x08, 0x09, 0x7F, 0x80, 0xFF]))
        payload = draw(st.binary(max_size=64))
        case = PduCase(_pdu(pdu_type, payload))
        if draw(st.booleans()):
            case = PduCase(good, [_pdu(pdu_type, payload)])
        return case
    if kind == "huge_length":
        pdu_type = draw(st.sampled_from([0x01, 0x04, 0x05, 0x07]))
        length = draw(st.sampled_from([0xFFFFFFFF, 0xFFFFFFF0, 0x7FFFFFFF, 0x01000000]))
        tail = draw(st.binary(max_size=256))
        raw = struct.pack(">BBL", pdu_type, 0, length) + tail
        return PduCase(raw) if pdu_type == 0x01 or draw(st.booleans()) else PduCase(good, [raw])
    # kind == "after_association": garbage or broken P-DATA on an established association
    what = draw(
        st.sampled_from(
            [
                "garbage",
                "bad_context_id",
                "pdv_too_long",
                "empty_p_data",
                "command_garbage",
                "dataset_before_command",
                "second_rq",
                "bad_release",
                "mutated_echo",
            ]
        )
    )
    echo = echo_command()
    follow: bytes
    if what == "garbage":
        follow = draw(st.binary(min_size=1, max_size=512))
    elif what == "bad_context_id":
        follow = p_data(draw(st.sampled_from([0, 2, 5, 127, 255])), 0x03, echo)
    elif what == "pdv_too_long":
        follow = _pdu(0x04, struct.pack(">LBB", 0xFFFFFF00, 1, 0x03) + echo)
    elif what == "empty_p_data":
        follow = _pdu(
            0x04, draw(st.sampled_from([b"", b"\x00\x00\x00\x00", b"\x00\x00\x00\x01\x01"]))
        )
    elif what == "command_garbage":
        follow = p_data(1, 0x03, draw(st.binary(min_size=0, max_size=300)))
    elif what == "dataset_before_command":
        follow = p_data(1, 0x02, draw(st.binary(min_size=0, max_size=64)))
    elif what == "second_rq":
        follow = good
    elif what == "bad_release":
        follow = _pdu(0x05, draw(st.sampled_from([b"", b"\x00", b"\x00" * 40])))
    else:
        follow = p_data(
            1, draw(st.sampled_from([0x00, 0x01, 0x03, 0xFF])), _mutate_bytes(draw, echo)
        )
    return PduCase(good, [follow])


PDU_KINDS = (
    "associate_rq",
    "before_association",
    "unknown_pdu_type",
    "huge_length",
    "after_association",
)
PDU_NAMES = {
    1: "A-ASSOCIATE-RQ",
    2: "AC",
    3: "RJ",
    4: "P-DATA",
    5: "RELEASE-RQ",
    6: "RP",
    7: "ABORT",
}


class RawConnection:
    """A TCP connection to the listener that reads whole PDUs back."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.closed = False

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
            return True
        except OSError:  # the listener closed first (e.g. it aborted already)
            self.closed = True
            return False

    def read_pdu(self, deadline: float) -> tuple[int, bytes] | None:
        """The next PDU, or None once the listener has closed the connection.

        Raises TimeoutError if nothing arrives before ``deadline``.
        """
        while True:
            if len(self.buffer) >= 6:
                pdu_type, _, length = struct.unpack_from(">BBL", self.buffer)
                if len(self.buffer) >= 6 + length:
                    pdu = self.buffer[6 : 6 + length]
                    self.buffer = self.buffer[6 + length :]
                    return pdu_type, pdu
            if self.closed:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            ready, _, _ = select.select([self.sock], [], [], remaining)
            if not ready:
                raise TimeoutError
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, OSError):
                chunk = b""
            if not chunk:
                self.closed = True
            self.buffer += chunk

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def is_complete_pdu(data: bytes) -> bool:
    """Whether ``data`` is exactly one PDU of a known type, as long as its length says.

    (The listener reads on after a PDU of unknown type without its body: whatever
    follows may be an incomplete next PDU it waits for.)
    """
    return (
        len(data) >= 6
        and 0x01 <= data[0] <= 0x07
        and struct.unpack_from(">L", data, 2)[0] == len(data) - 6
    )


ANSWER_GRACE = 3.0  # s the listener has to answer a complete PDU
WAIT_GRACE = 0.1  # s before we stop sending when the listener may wait for more bytes


def run_pdu_case(port: int, case: PduCase) -> str:
    """Play one exchange; the outcome: what the listener sent, then how it ended.

    When the listener may legitimately wait for more bytes (an incomplete PDU, a DIMSE
    message in progress) we end our side after a short silence ("+eof"); the listener
    must then close. "no-answer" is a complete first PDU the listener said nothing to;
    "hang" is a connection the listener did not close within the timeout.
    """
    conn = RawConnection(port)
    seen: list[str] = []
    ended = False

    def end_our_side() -> None:
        nonlocal ended
        if not ended:
            ended = True
            seen.append("eof")
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_WR)

    def send_then_wait(data: bytes, expect_answer: bool) -> tuple[int, bytes] | None:
        conn.send(data)
        try:
            return conn.read_pdu(time.monotonic() + (ANSWER_GRACE if expect_answer else WAIT_GRACE))
        except TimeoutError:
            if expect_answer:
                seen.append("no-answer")
            end_our_side()
            return conn.read_pdu(time.monotonic() + TIMEOUT)

    try:
        pdu = send_then_wait(case.first, expect_answer=is_complete_pdu(case.first))
        pending = list(case.after_accept)
        echoed = not case.echo
        while pdu is not None:
            pdu_type, _ = pdu
            seen.append(PDU_NAMES.get(pdu_type, f"type-{pdu_type:#x}"))
            if pdu_type == 0x02 and not echoed and not ended:  # accepted: a C-ECHO first
                echoed = True
                pdu = send_then_wait(p_data(1, 0x03, echo_command()), expect_answer=True)
                continue
            if pdu_type in (0x02, 0x04) and not ended:  # accepted / echo answered
                follow = b"".join(pending) if pending else RELEASE_RQ
                pending = []
                pdu = send_then_wait(follow, expect_answer=not case.after_accept)
                continue
            if pdu_type in (0x03, 0x06, 0x07):  # rejected, released, aborted: it must close
                end_our_side()
            pdu = conn.read_pdu(time.monotonic() + TIMEOUT)
        return _outcome([*seen, "closed"])
    except TimeoutError:
        return _outcome([*seen, "hang"])
    finally:
        conn.close()


def _outcome(events: list[str]) -> str:
    """``events`` joined by "+", runs of one event as "ABORTx12"."""
    runs = [(name, len(list(group))) for name, group in itertools.groupby(events)]
    return "+".join(name if count == 1 else f"{name}x{count}" for name, count in runs)


class StalledPeers:
    """Connections that send part of a PDU (or a whole A-ASSOCIATE-RQ, or nothing) and
    then stay silent, held open while the other cases run: the listener must close
    each of them by itself (ARTIM, its read timeout, its idle timeout) and serve the
    others meanwhile."""

    #: Longest wait the listener may take: pynetdicom's network (idle) timeout, 60 s.
    LIMIT = 60.0 + 15.0

    def __init__(self, port: int) -> None:
        rq = AssociateRQ().encode()
        sends = {
            "nothing": b"",
            "pdu_header": rq[:6],
            "part_of_an_rq": rq[:40],
            "rq_then_silence": rq,
            "p_data_header_after_rq": rq + struct.pack(">BBL", 0x04, 0, 1000),
        }
        self.opened = time.monotonic()
        self.connections: dict[str, socket.socket] = {}
        for name, data in sends.items():
            sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
            sock.sendall(data)
            self.connections[name] = sock
        self.closed: dict[str, float | None] = dict.fromkeys(self.connections)
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="stalled-peers", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while not self._stop.is_set() and None in self.closed.values():
            for name, sock in self.connections.items():
                if self.closed[name] is not None:
                    continue
                ready, _, _ = select.select([sock], [], [], 0)
                if not ready:
                    continue
                try:
                    data = sock.recv(65536)  # an A-ASSOCIATE-AC or A-ABORT, or the end
                except OSError:
                    data = b""
                if not data:
                    self.closed[name] = round(time.monotonic() - self.opened, 1)
            self._stop.wait(0.2)

    def wait_closed(self) -> dict[str, float | None]:
        """Seconds until the listener closed each connection (None: still open)."""
        self._watcher.join(max(0.0, self.opened + self.LIMIT - time.monotonic()))
        self._stop.set()
        self._watcher.join()
        for sock in self.connections.values():
            sock.close()
        return dict(self.closed)
