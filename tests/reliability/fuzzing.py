"""The toolkit that fuzzes the listener (``test_fuzz.py`` holds the tests that use it).

What it holds: the running listener as a fuzz target (:class:`Target`), a byte-level
view of encoded datasets and the dataset mutators (hypothesis strategies drawn with
``draw``), an SCU that sends raw dataset bytes and tallies the outcomes
(:class:`StoreSCU`), checks of what the listener stored, file-system snapshots around the
data directory, and the reading of the listener's JSON log for exceptions. Raw PDUs are
in :mod:`fuzzing_pdus`.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import socket
import struct
import time
import warnings
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pydicom
from hypothesis import strategies as st
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.pixels.utils import get_expected_length
from pydicom.tag import Tag
from pydicom.uid import (
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    EnhancedMRImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    MRImageStorage,
    RLELossless,
    SegmentationStorage,
)
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import split_dataset
from service_harness import MODALITY_AE, SERVICE_AE, PhantomStudy, Service

from listener.scp import Verification
from listener.uids import is_valid_uid
from worker.scu import wait_for_echo

T = TypeVar("T")
Draw = Callable[[st.SearchStrategy[T]], T]

TIMEOUT = 10.0  # s: DIMSE/ACSE/network timeouts of the fuzzing SCU; longer is a hang
ECHO_EVERY = 100  # cases between two liveness checks (process alive, C-ECHO answered)
ROOT_UID = "1.2.826.0.1.3680043.8.498.77"  # UIDs of the fuzz instances live under this

# Failure statuses the listener answers (README "Listener"); anything else is unexpected.
FAILURE_STATUSES = frozenset({0x0122, 0xA700, 0xA900, 0xA901, 0xA902, 0xC210, 0xC211})
FAILURE_STATUSES |= {0xC212, 0xC213}
# Statuses pynetdicom itself answers when the handler is not reached (PS3.4 B.2.3).
FAILURE_STATUSES |= {0xC000, 0xC001, 0xC002, 0xC110, 0x0110, 0x0211, 0xA800}

# Transfer syntaxes the fuzzing SCU proposes for MR Image Storage.
MR_SYNTAXES = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEG2000Lossless,
    RLELossless,
)
ENCODINGS = {  # encoding name -> the transfer syntax whose context it is sent on
    "explicit": ExplicitVRLittleEndian,
    "implicit": ImplicitVRLittleEndian,
    "big": ExplicitVRBigEndian,
    "deflate": DeflatedExplicitVRLittleEndian,
}

# UIDs that try to leave the spool or are otherwise not DICOM UIDs.
BAD_UIDS = (
    "../../etc",
    "..",
    ".",
    "/etc/passwd",
    "/etc",
    "1.2.3/../../x",
    "1.2.3\\..\\..\\x",
    "1.2.3\x00/../../x",
    "\x00",
    "1.2.3\n4",
    "1" * 65,
    "1." + "2" * 63,
    "1" * 1000,
    "",
    "  ",
    "1..2",
    "01.2",
    "1.2.",
    ".1.2",
    "1.2.-3",
    "1.2.3e5",
    "\u0661.\u0662",
    "~",
    "$HOME",
    "%2e%2e%2fetc",
    "1.2.3 4",
    "C:\\Windows",
)


@dataclass
class Target:
    """The running listener process and where it writes."""

    service: Service

    @property
    def port(self) -> int:
        return self.service.port

    @property
    def data_dir(self) -> Path:
        return self.service.data_dir

    @property
    def spool(self) -> Path:
        return self.data_dir / "spool"

    @property
    def log_path(self) -> Path:
        return self.service.root / "listener.log"

    def alive(self) -> bool:
        process = self.service.processes.get("listener")
        return process is not None and process.poll() is None

    def echo(self) -> bool:
        return wait_for_echo(
            "127.0.0.1", self.port, SERVICE_AE, timeout=TIMEOUT, calling_ae=MODALITY_AE
        )


# --- byte-level view of an encoded dataset ----------------------------------------------

LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
UNDEFINED = 0xFFFFFFFF


@dataclass(frozen=True)
class Element:
    """Where a top-level element sits in an encoded (little endian) dataset."""

    offset: int
    tag: int
    vr: bytes  # b"" when implicit
    length_at: int
    length_size: int  # 2 or 4 bytes
    value_at: int
    length: int


def top_level_elements(body: bytes, implicit: bool) -> list[Element]:
    """The top-level elements up to the first undefined length (little endian only)."""
    elements: list[Element] = []
    pos = 0
    while pos + 8 <= len(body):
        group, number = struct.unpack_from("<HH", body, pos)
        vr = b"" if implicit else body[pos + 4 : pos + 6]
        if implicit or vr in LONG_VRS:
            length_at = pos + (4 if implicit else 8)
            if length_at + 4 > len(body):
                break
            (length,) = struct.unpack_from("<L", body, length_at)
            size = 4
        else:
            length_at, size = pos + 6, 2
            (length,) = struct.unpack_from("<H", body, length_at)
        value_at = length_at + size
        elements.append(Element(pos, group << 16 | number, vr, length_at, size, value_at, length))
        if length == UNDEFINED:
            break
        pos = value_at + length
    return elements


def encode(ds: Dataset, encoding: str) -> bytes:
    """``ds`` encoded for one of :data:`ENCODINGS`."""
    buffer = DicomBytesIO()
    buffer.is_implicit_VR = encoding == "implicit"
    buffer.is_little_endian = encoding != "big"
    if encoding == "big" and ds.get("BitsAllocated") == 16 and "PixelData" in ds:
        ds = copy.deepcopy(ds)  # native 16-bit pixels are byte-swapped too (whole words)
        pixels = bytes(ds.PixelData)
        words = np.frombuffer(pixels[: len(pixels) // 2 * 2], dtype="<u2").astype(">u2")
        ds.PixelData = words.tobytes() + pixels[len(pixels) // 2 * 2 :]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_dataset(buffer, ds)
    body = buffer.getvalue()
    if encoding == "deflate":
        compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        body = compressor.compress(body) + compressor.flush()
    return body


# --- the dataset cases ------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """A valid instance to mutate: its dataset and SOP class."""

    name: str
    ds: Dataset


@dataclass
class Mutated:
    """What one case sends: the dataset bytes, on which context, with which request UIDs."""

    body: bytes
    syntax: str
    sop_class: str
    sop_instance: str
    context_id: int | None = None  # None: the accepted context of (sop_class, syntax)


def fresh_uids(template: Template, n: int) -> Dataset:
    ds = copy.deepcopy(template.ds)  # mutations must not reach the template
    ds.SOPInstanceUID = f"{ROOT_UID}.1.1{n:07d}"  # one length: the same draws, the same bytes
    return ds


def _valid(draw: Draw[Any], ds: Dataset) -> Mutated:
    encoding = draw(st.sampled_from(sorted(ENCODINGS)))
    sop_class, sop_instance = str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", ""))
    return Mutated(encode(ds, encoding), ENCODINGS[encoding], sop_class, sop_instance)


def _body_and_elements(draw: Draw[Any], ds: Dataset) -> tuple[str, bytes, list[Element]]:
    encoding = draw(st.sampled_from(["explicit", "explicit", "implicit"]))
    body = encode(ds, encoding)
    return encoding, body, top_level_elements(body, encoding == "implicit")


def _header_end(elements: list[Element], body: bytes) -> int:
    """Offset of the pixel data value: mutations aim at the header, not at pixels."""
    for element in elements:
        if element.tag == 0x7FE00010:
            return element.value_at
    return len(body)


def _truncate(draw: Draw[Any], ds: Dataset) -> Mutated:
    encoding, body, elements = _body_and_elements(draw, ds)
    boundaries = sorted({e.offset for e in elements} | {e.value_at for e in elements})
    near_boundary = st.sampled_from(boundaries).flatmap(
        lambda b: st.integers(max(1, b - 3), min(len(body) - 1, b + 3))
    )
    cut = draw(st.one_of(st.integers(1, len(body) - 1), near_boundary))
    return Mutated(body[:cut], ENCODINGS[encoding], ds.SOPClassUID, ds.SOPInstanceUID)


def _bytes(draw: Draw[Any], ds: Dataset) -> Mutated:
    encoding, body, elements = _body_and_elements(draw, ds)
    data = bytearray(body)
    end = _header_end(elements, body)
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(st.integers(0, max(0, min(end, len(data)) - 1)))
        op = draw(st.sampled_from(["flip", "set", "insert", "delete"]))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[pos] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x2E, 0x2F, 0x5C]))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[pos : pos + draw(st.integers(1, 16))]
    return Mutated(bytes(data), ENCODINGS[encoding], ds.SOPClassUID, ds.SOPInstanceUID)


VRS = (b"SQ", b"OB", b"OW", b"UN", b"UT", b"US", b"UL", b"SS", b"FD", b"AT", b"DA", b"UI", b"PN")
GARBAGE_VRS = (b"ZZ", b"\x00\x00", b"ob", b"  ", b"\xff\xff", b"S")


def _wrong_vr(draw: Draw[Any], ds: Dataset) -> Mutated:
    body = encode(ds, "explicit")
    elements = top_level_elements(body, implicit=False)
    data = bytearray(body)
    for _ in range(draw(st.integers(1, 3))):
        element = draw(st.sampled_from(elements))
        vr = draw(st.one_of(st.sampled_from(VRS + GARBAGE_VRS), st.binary(min_size=2, max_size=2)))
        data[element.offset + 4 : element.offset + 6] = vr.ljust(2, b"\x00")[:2]
    return Mutated(bytes(data), ExplicitVRLittleEndian, ds.SOPClassUID, ds.SOPInstanceUID)


HUGE_LENGTHS = (0xFFFFFFF0, 0xFFFFFFFE, 0x7FFFFFFF, 0x80000000, 0x00FFFFFF, 0xFFFFFFFF)


def _huge_length(draw: Draw[Any], ds: Dataset) -> Mutated:
    encoding, body, elements = _body_and_elements(draw, ds)
    data = bytearray(body)
    element = draw(st.sampled_from(elements))
    if element.length_size == 4:
        candidates = [*HUGE_LENGTHS, len(body), element.length + 1, max(0, element.length - 1)]
        length = draw(st.one_of(st.sampled_from(candidates), st.integers(0, 0xFFFFFFFF)))
        struct.pack_into("<L", data, element.length_at, length)
    else:
        candidates = [0xFFFF, 0xFFFE, 0x8000, element.length + 1, max(0, element.length - 1)]
        length = draw(st.one_of(st.sampled_from(candidates), st.integers(0, 0xFFFF)))
        struct.pack_into("<H", data, element.length_at, length)
    return Mutated(bytes(data), ENCODINGS[encoding], ds.SOPClassUID, ds.SOPInstanceUID)


ITEM = b"\xfe\xff\x00\xe0"
ITEM_END = b"\xfe\xff\x0d\xe0"
SEQUENCE_END = b"\xfe\xff\xdd\xe0"


def _undefined_length(draw: Draw[Any], ds: Dataset) -> Mutated:
    encoding, body, elements = _body_and_elements(draw, ds)
    data = bytearray(body)
    element = draw(st.sampled_from(elements))
    how = draw(st.sampled_from(["length", "open_sequence", "delimiter", "item"]))
    if how == "length" and element.length_size == 4:
        struct.pack_into("<L", data, element.length_at, UNDEFINED)
    elif how == "length":  # a short-length VR turned into an undefined-length one
        vr = draw(st.sampled_from([b"SQ", b"UN", b"OB"]))
        data[element.offset + 4 : element.value_at] = vr + b"\x00\x00" + b"\xff" * 4
    elif how == "open_sequence":  # an undefined-length sequence that never ends
        sq = b"\x09\x00\x10\x00" + (b"" if encoding == "implicit" else b"SQ\x00\x00") + b"\xff" * 4
        data[element.offset : element.offset] = sq + ITEM + b"\xff" * 4
    else:
        marker = {"delimiter": draw(st.sampled_from([ITEM_END, SEQUENCE_END])), "item": ITEM}[how]
        extra = draw(st.sampled_from([b"\x00" * 4, b"\xff" * 4, b"\x10\x00\x00\x00"]))
        data[element.offset : element.offset] = marker + extra
    return Mutated(bytes(data), ENCODINGS[encoding], ds.SOPClassUID, ds.SOPInstanceUID)


def _bad_pixels(draw: Draw[Any], ds: Dataset) -> Mutated:
    how = draw(
        st.sampled_from(
            [
                "absent",
                "empty",
                "short",
                "odd",
                "long",
                "rows",
                "columns",
                "bits",
                "samples",
                "frames",
                "float",
                "encapsulated",
                "modality",
                "huge_tail",
            ]
        )
    )
    pixels = bytes(ds.PixelData)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if how == "absent":
            del ds.PixelData
        elif how == "empty":
            ds.PixelData = b""
        elif how == "short":
            ds.PixelData = pixels[: draw(st.integers(1, max(1, len(pixels) // 2))) & ~1]
        elif how == "odd":
            ds.PixelData = pixels[:-1]
        elif how == "long":
            ds.PixelData = pixels + b"\x00" * draw(st.sampled_from([2, 1024, 65536]))
        elif how == "rows":
            ds.Rows = draw(st.sampled_from([0, 1, int(ds.Rows) + 1, 0xFFFF]))
        elif how == "columns":
            ds.Columns = draw(st.sampled_from([0, int(ds.Columns) * 2, 0xFFFF]))
        elif how == "bits":
            ds.BitsAllocated = draw(st.sampled_from([0, 1, 7, 32, 64, 0xFFFF]))
        elif how == "samples":
            ds.SamplesPerPixel = draw(st.sampled_from([0, 3, 0xFFFF]))
        elif how == "frames":
            frames = draw(st.sampled_from([b"0 ", b"-1", b"2 ", b"2147483648", b"x ", b"1.5 "]))
            # raw: pydicom refuses to hold a non-integer IS value
            ds[0x00280008] = RawDataElement(
                Tag(0x00280008), "IS", len(frames), frames, 0, False, True
            )
        elif how == "float":
            del ds.PixelData
            ds.FloatPixelData = pixels[: len(pixels) // 4 * 4]
        elif how == "encapsulated":  # an encapsulated fragment on a native syntax
            ds.PixelData = ITEM + b"\x00\x00\x00\x00" + ITEM + struct.pack("<L", 4) + b"\xff" * 4
        elif how == "modality":
            ds.Modality = draw(st.sampled_from(["CT", "", "mr", "MR\\CT"]))
    if how == "huge_tail":  # the pixel data element claims far more than is sent
        body = bytearray(encode(ds, "explicit"))
        tail = bytes(body).rfind(b"\xe0\x7f\x10\x00OW\x00\x00")
        struct.pack_into("<L", body, tail + 8, 0xFFFFFFF0)
        return Mutated(bytes(body), ExplicitVRLittleEndian, ds.SOPClassUID, ds.SOPInstanceUID)
    # The remaining cases are syntactically valid encodings of a wrong image.
    return _valid(draw, ds)


def _syntax(draw: Draw[Any], ds: Dataset) -> Mutated:
    """Bytes of one encoding sent on the context of another."""
    how = draw(
        st.sampled_from(
            [
                ("explicit", ImplicitVRLittleEndian),
                ("implicit", ExplicitVRLittleEndian),
                ("explicit", ExplicitVRBigEndian),
                ("big", ExplicitVRLittleEndian),
                ("explicit", DeflatedExplicitVRLittleEndian),
                ("deflate", ExplicitVRLittleEndian),
                ("garbage", DeflatedExplicitVRLittleEndian),
                ("explicit", JPEGBaseline8Bit),
                ("explicit", JPEG2000Lossless),
                ("explicit", RLELossless),
            ]
        )
    )
    encoding, syntax = how
    if encoding == "garbage":
        body = draw(st.binary(min_size=1, max_size=512))
    else:
        body = encode(ds, encoding)
    return Mutated(body, syntax, ds.SOPClassUID, ds.SOPInstanceUID)


def _bad_uids(draw: Draw[Any], ds: Dataset) -> Mutated:
    keyword = draw(
        st.sampled_from(["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"])
    )
    value = draw(st.one_of(st.sampled_from(BAD_UIDS), st.none(), st.text(max_size=80)))
    good_class, good_instance = str(ds.SOPClassUID), str(ds.SOPInstanceUID)
    if value is not None:
        value = on_the_wire(value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if value is None:
            del ds[keyword]
        else:
            setattr(ds, keyword, value)
    sop_class, sop_instance = str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", ""))
    mutated = _valid(draw, ds)
    # The request carries the same bad UID, or the good one the dataset had.
    if draw(st.booleans()):
        mutated.sop_class, mutated.sop_instance = sop_class, sop_instance
    else:
        mutated.sop_class, mutated.sop_instance = good_class, good_instance
    return mutated


def on_the_wire(text: str) -> str:
    """``text`` as Latin-1 characters: non-Latin-1 text is sent as its UTF-8 bytes."""
    return text.encode("utf-8", "surrogatepass").decode("latin-1")


def _request_uids(draw: Draw[Any], ds: Dataset) -> Mutated:
    """The request's Affected SOP Instance/Class UID differ from the dataset's."""
    mutated = _valid(draw, ds)
    field_ = draw(st.sampled_from(["instance", "class", "both"]))
    value = draw(
        st.one_of(
            st.sampled_from(BAD_UIDS),
            st.just(f"{ROOT_UID}.9.1"),
            st.just(str(CTImageStorage)),
            st.just(str(EnhancedMRImageStorage)),
        )
    )
    value = on_the_wire(value)
    if field_ in ("instance", "both"):
        mutated.sop_instance = value
    if field_ in ("class", "both"):
        mutated.sop_class = value
    return mutated


def _wrong_context(draw: Draw[Any], ds: Dataset) -> Mutated:
    """A valid dataset sent on a context that was not accepted (or does not exist)."""
    mutated = _valid(draw, ds)
    mutated.context_id = draw(st.sampled_from([0, 2, 254, 255, -1]))  # -1: the CT context
    return mutated


MUTATORS: dict[str, Callable[[Draw[Any], Dataset], Mutated]] = {
    "valid": _valid,
    "truncated": _truncate,
    "byte_mutations": _bytes,
    "wrong_vr": _wrong_vr,
    "huge_length": _huge_length,
    "undefined_length": _undefined_length,
    "bad_pixel_data": _bad_pixels,
    "bad_transfer_syntax": _syntax,
    "bad_uids": _bad_uids,
    "request_uid_mismatch": _request_uids,
    "wrong_context": _wrong_context,
}


# --- the SCU that sends raw dataset bytes -----------------------------------------------


@dataclass
class Tally:
    """Outcomes of one input class."""

    sent: int = 0
    failure: int = 0
    success: int = 0  # Success for a mutated dataset: it was still valid
    aborted: int = 0  # the listener aborted or closed the association
    other_status: int = 0
    hang: int = 0
    crash: int = 0
    statuses: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: v for k, v in vars(self).items() if k != "statuses"}
        out["statuses"] = dict(sorted(self.statuses.items()))
        return out


class StoreSCU:
    """One association at a time to the listener; raw dataset bytes in C-STORE requests."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ae = AE(ae_title="FUZZ_SCU")
        self.ae.acse_timeout = self.ae.dimse_timeout = TIMEOUT
        self.ae.network_timeout = self.ae.connection_timeout = TIMEOUT
        for sop_class, syntaxes in (
            (MRImageStorage, MR_SYNTAXES),
            (SegmentationStorage, (ExplicitVRLittleEndian, ImplicitVRLittleEndian)),
            (EnhancedMRImageStorage, (ExplicitVRLittleEndian,)),
            (CTImageStorage, (ExplicitVRLittleEndian,)),  # refused by the listener
        ):
            for syntax in syntaxes:  # one context per syntax: the case chooses
                self.ae.add_requested_context(sop_class, [syntax])
        self.ae.add_requested_context(Verification)
        self.assoc: Association | None = None
        self.contexts: dict[tuple[str, str], int] = {}
        self.ct_context = 0
        self.message_ids = itertools.count(1)
        self.associations = 0

    def _ensure(self) -> Association:
        if self.assoc is not None and self.assoc.is_established:
            return self.assoc
        self.close()
        assoc = self.ae.associate("127.0.0.1", self.port, ae_title=SERVICE_AE)
        if not assoc.is_established:
            raise AssertionError("the listener refused a fresh association")
        self.associations += 1
        # The command and the data set go out as separate small writes: without
        # TCP_NODELAY each C-STORE waits out a delayed ACK (~40 ms on loopback).
        sock = assoc.dul.socket.socket if assoc.dul.socket else None
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.contexts = {
            (str(cx.abstract_syntax), str(cx.transfer_syntax[0])): int(cx.context_id or 0)
            for cx in assoc.accepted_contexts
        }
        _pause_reactor(assoc)
        rejected = [cx for cx in assoc.rejected_contexts if cx.abstract_syntax == CTImageStorage]
        self.ct_context = int(rejected[0].context_id or 0) if rejected else 0
        self.assoc = assoc
        return assoc

    def close(self) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()
        self.assoc = None

    def store(self, case: Mutated) -> tuple[str, int | None]:
        """Send one C-STORE; ("status", code), ("aborted", None) or ("hang", None)."""
        assoc = self._ensure()
        if case.context_id is None:
            key = (str(case.sop_class), str(case.syntax))
            context_id = self.contexts.get(key) or self.contexts[(MRImageStorage, case.syntax)]
        else:
            context_id = self.ct_context if case.context_id == -1 else case.context_id
        request = C_STORE()
        request.MessageID = next(self.message_ids) % 0x10000
        request.Priority = 2
        # Not through the validating setters: the point is to send invalid UIDs.
        request._affected_sop_class_uid = UID(case.sop_class)
        request._affected_sop_instance_uid = UID(case.sop_instance)
        # An empty data set would be a command promising one that never comes.
        request.DataSet = BytesIO(case.body or b"\x00")
        started = time.monotonic()
        try:
            assoc.dimse.send_msg(request, context_id)
            _, response = assoc.dimse.get_msg(block=True)
        except (OSError, AttributeError):  # the socket went away while sending
            response = None
        if response is not None:
            status = getattr(response, "Status", None)
            return ("status", int(status)) if status is not None else ("aborted", None)
        waited = time.monotonic() - started
        if assoc.is_established and waited >= TIMEOUT * 0.9:
            assoc.abort()
            self.assoc = None
            return "hang", None
        assoc.abort()  # no-op if the peer already ended it
        self.assoc = None
        return "aborted", None


def _pause_reactor(assoc: Association) -> None:
    """Stop the requestor's reactor for the life of the association.

    Association.send_c_store pauses it around each exchange, but a reactor woken by the
    previous exchange still shows its old "paused" flag for a moment: the next request
    goes out, the reactor takes its response off the queue as an unexpected message and
    the request waits for its timeout (about 1 in 10,000 C-STOREs here, client side).
    Kept paused, it never competes; releases and aborts do not need it.
    """
    assoc._reactor_checkpoint.clear()
    deadline = time.monotonic() + TIMEOUT
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < 0.02 and time.monotonic() < deadline:
        if not assoc._is_paused:  # still turning: wait until it has been still a while
            quiet_since = time.monotonic()
        time.sleep(0.0005)


def stored_instances(spool: Path) -> dict[str, Path]:
    """SOP Instance UID -> file, for every instance file in the spool."""
    return {p.stem: p for p in spool.glob("*/*/*.dcm")}


def dataset_bytes(path: Path) -> bytes:
    _, offset = split_dataset(path)
    return path.read_bytes()[offset:]


def check_stored_file(path: Path) -> list[str]:
    """What is wrong with an instance file in the spool (empty: nothing)."""
    problems: list[str] = []
    try:
        ds = pydicom.dcmread(path)
        ds.walk(lambda _ds, _elem: None)  # every value parses
    except Exception as exc:
        return [f"{path.name}: pydicom cannot read it: {type(exc).__name__}: {exc}"]
    study, series = path.parent.parent.name, path.parent.name
    if (study, series, path.stem) != (
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
    ):
        problems.append(f"{path}: its place does not match its UIDs")
    if not all(is_valid_uid(u) for u in (study, series, path.stem)):
        problems.append(f"{path}: not a valid UID path")
    syntax = ds.file_meta.TransferSyntaxUID
    if "PixelData" in ds and not syntax.is_compressed:
        expected = get_expected_length(ds, "bytes")
        if len(ds.PixelData) not in (expected, expected + expected % 2):
            problems.append(
                f"{path.name}: {len(ds.PixelData)} pixel bytes, Rows/Columns/... say {expected}"
            )
    return problems


# --- the file system around the data dir ------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple[int, float]]:
    """Every file under ``root``: size and modification time."""
    files: dict[str, tuple[int, float]] = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath, name)
            try:
                stat = path.lstat()
            except OSError:
                continue
            files[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime)
    return files


def allowed_to_change(relative: str, data_dir_name: str) -> bool:
    parts = Path(relative).parts
    if len(parts) == 1 and parts[0].endswith(".log"):
        return True  # the process logs
    if parts[0] == "broker":
        return True  # Redis' files
    if parts[0] != data_dir_name or len(parts) < 2:
        return False
    if parts[1].startswith("state.db"):
        return True
    return parts[1] == "spool"


def template_bank(phantom: PhantomStudy) -> dict[str, Template]:
    """Valid instances: a phantom slice cut to 16x16 pixels (most cases, fast), the slice
    whole, and the phantom's DICOM-SEG; in a fuzz study, each in a series of its own."""
    full: Dataset = pydicom.dcmread(phantom.slices[5])
    full.StudyInstanceUID = f"{ROOT_UID}.2.1"
    full.SeriesInstanceUID = f"{ROOT_UID}.3.1"
    small = copy.deepcopy(full)
    pixels = small.pixel_array[:16, :16]
    small.Rows = small.Columns = 16
    small.PixelData = np.ascontiguousarray(pixels).astype("<u2").tobytes()
    small.SeriesInstanceUID = f"{ROOT_UID}.3.2"
    seg: Dataset = pydicom.dcmread(phantom.seg)
    seg.StudyInstanceUID = f"{ROOT_UID}.2.1"
    seg.SeriesInstanceUID = f"{ROOT_UID}.3.3"
    for ds in (full, small, seg):
        del ds.file_meta  # the body alone is sent; the context says how it is encoded
    return {
        "small": Template("small", small),
        "full": Template("full", full),
        "seg": Template("seg", seg),
    }


def check_alive(target: Target, where: str) -> None:
    assert target.alive(), f"listener died ({where}):\n{target.service.log('listener')}"
    assert target.echo(), f"listener stopped answering C-ECHO ({where})"


def log_exceptions(log: Path) -> tuple[list[str], list[str], Counter[str]]:
    """The listener log's exceptions: unhandled (a thread died), the listener's own (its
    handlers hit something they did not expect) and those pynetdicom logged before the
    association was aborted (counted by logger; the state machine's are then handled by
    the listener's guard, see ``listener.transport._GuardedStateMachine``)."""
    unhandled: list[str] = []
    own: list[str] = []
    pynetdicom: Counter[str] = Counter()
    lines = log.read_text(errors="replace").splitlines()
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
        except ValueError:
            if "Traceback" in line or line.startswith("Exception in thread"):
                unhandled.append("\n".join(lines[max(0, i - 2) : i + 25]))
            continue
        if not (isinstance(record, dict) and record.get("exception")):
            continue
        logger = str(record.get("logger"))
        text = f"{logger}: {record.get('message')}\n{record.get('exception')}"
        if logger.startswith("pynetdicom"):
            pynetdicom[logger] += 1
        else:
            own.append(text)
    return unhandled, own, pynetdicom
