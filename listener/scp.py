"""The DICOM Application Entity of the listener: C-ECHO and C-STORE SCP.

What it holds: what is accepted (SOP classes, transfer syntaxes: :func:`build_ae`), what
is refused and why (:class:`StoreHandler`'s checks and their statuses, below), the durable
write to the spool before Success, and the :class:`Listener` that serves it all. How
pynetdicom is made to carry it (socket options, reactors, the guards against malformed
PDUs, the association server) is in ``listener.transport``; the peer-address allow-list
and the TLS context, shared with STOW-RS, are in ``listener.peers``.

Accepts MR Image, Enhanced MR Image, Segmentation and the SR Storage SOP classes (and
Verification) in the common transfer syntaxes; every other SOP class is refused at
association negotiation. SRs are radiologists' assessments of our results (IHE AIRA,
``listener.verdicts``): stored like any instance, then recorded as verdicts, never scored.
Each instance is stored *as received* (the file meta information, then the dataset bytes
exactly as the peer encoded them) durably in the :class:`~listener.spool.Spool` before
Success is answered, then handed to an :class:`Intake` (the series tracker). STOW-RS
(``listener.dicomweb``) hands its parts to the same :meth:`StoreHandler.accept`: one set of
checks, statuses and durable writes for both transports.

C-STORE statuses (PS3.4 Table B.2-1, PS3.7 Annex C):

======  =====================================================================
0x0000  Success (also for a re-sent instance: the spool is idempotent)
0x0122  Refused: SOP Class not supported (SOP Class not one we store)
0xA700  Refused: Out of Resources -- the spool's disk is full or cannot be written
0xA900  Error: Data Set does not match SOP Class -- SOP Instance/Class UID in the
        dataset differ from the request's Affected SOP Instance/Class UID
0xA901  Error: Data Set does not match SOP Class -- an MR image whose Modality is not MR
0xA902  Error: Data Set does not match SOP Class -- an MR image without pixel data
0xC210  Error: Cannot understand -- the dataset cannot be decoded, or its pixel data
        does not match Rows/Columns/... or the transfer syntax (native vs encapsulated)
0xC211  Error: Cannot understand -- unexpected failure in the handler (logged)
0xC212  Error: Cannot understand -- Study/Series/SOP Instance UID or SOP Class UID missing
0xC213  Error: Cannot understand -- a UID is not a valid DICOM UID (e.g. ``../../etc``)
0xC122  Refused: Transfer Syntax not supported (STOW-RS parts only)
======  =====================================================================

The handler never raises: whatever a peer sends, the listener answers with a status and
keeps running. Below the handler, malformed PDUs and DIMSE messages that make pynetdicom
raise end in an A-ABORT or A-ASSOCIATE-RJ (see ``listener.transport``), never in a dead
thread and a peer left waiting. Failures are logged with UIDs and the calling AE only
(no patient data).

Who may connect: a calling AE title outside a non-empty ``allowed_calling_aes`` gets
A-ASSOCIATE-RJ (rejected-permanent, service-user, "calling AE title not recognised");
a peer address outside a non-empty ``allowed_hosts`` is disconnected right after
``accept()``, before TLS or any DICOM byte is read (socketserver's ``verify_request``).
With ``tls_cert``/``tls_key`` the port speaks only TLS >= 1.2; with ``tls_ca`` too, client
certificates are required and verified against it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    EnhancedMRImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    MRImageStorage,
    RLELossless,
    SegmentationStorage,
)
from pynetdicom import AE, evt
from pynetdicom.events import EventHandlerType

from listener import transport
from listener.peers import build_ssl_context, parse_allowed_hosts
from listener.spool import PendingWrite, Spool, StoredInstance, StoreResult
from listener.uids import is_valid_uid
from listener.verdicts import SR_SOP_CLASSES
from onfh_dlr.errors import SpoolError, SpoolFullError
from onfh_dlr.metrics import ASSOCIATIONS, INSTANCES
from onfh_dlr.settings import Settings, Transport

log = logging.getLogger(__name__)

#: Verification SOP Class (C-ECHO); pynetdicom defines it dynamically, invisible to mypy.
Verification = UID("1.2.840.10008.1.1")

#: SOP classes the listener stores (SRs: assessments of our results, ``listener.verdicts``).
STORAGE_SOP_CLASSES = (
    MRImageStorage,
    EnhancedMRImageStorage,
    SegmentationStorage,
    *sorted(SR_SOP_CLASSES),
)
#: SOP classes that must carry MR pixel data.
MR_IMAGE_SOP_CLASSES = frozenset({MRImageStorage, EnhancedMRImageStorage})
#: Transfer syntaxes accepted for storage (stored as received, never transcoded).
TRANSFER_SYNTAXES = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
)

SUCCESS = 0x0000
SOP_CLASS_NOT_SUPPORTED = 0x0122
OUT_OF_RESOURCES = 0xA700
UID_MISMATCH = 0xA900
NOT_MR = 0xA901
NO_PIXEL_DATA = 0xA902
CANNOT_UNDERSTAND = 0xC210
INTERNAL_ERROR = 0xC211
MISSING_UID = 0xC212
INVALID_UID = 0xC213
#: STOW-RS only (C-STORE refuses other transfer syntaxes at negotiation): PS3.18's
#: "Referenced Transfer Syntax not supported".
TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122

# The metric outcome of each refusal (bounded label values for Prometheus).
_REFUSAL_OUTCOMES = {
    OUT_OF_RESOURCES: "refused_out_of_resources",
    UID_MISMATCH: "refused_bad_dataset",
    NOT_MR: "refused_bad_dataset",
    NO_PIXEL_DATA: "refused_bad_dataset",
    CANNOT_UNDERSTAND: "refused_bad_dataset",
    MISSING_UID: "refused_bad_dataset",
    INVALID_UID: "refused_bad_dataset",
    TRANSFER_SYNTAX_NOT_SUPPORTED: "refused_bad_dataset",
}
_VERB = {Transport.DIMSE: "C-STORE", Transport.STOW_RS: "STOW-RS"}

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


class Intake(Protocol):
    """What the SCP tells about received instances (implemented by the series tracker)."""

    def instance_stored(self, instance: StoredInstance) -> None:
        """An instance is durable in the spool (called before Success is answered).

        Re-sent instances are reported too, with ``duplicate=True``: they still show that
        the series is active.
        """

    def association_released(self, calling_ae: str, series_uids: frozenset[str]) -> None:
        """An association that stored into ``series_uids`` was released or aborted.

        Called once per association that stored at least one instance (also when the
        peer just drops the connection); not for associations that stored nothing.
        """


@dataclass(frozen=True)
class Received:
    """One instance as it arrived, by C-STORE or as a STOW-RS part, before any check.

    ``declared_*`` are what the transport says the instance is (the C-STORE request's
    Affected SOP Instance/Class UID; a STOW-RS part's file meta). ``decode`` parses the
    dataset (may raise); ``encode`` gives the bytes to store, in pieces. ``session`` is the
    association or the STOW-RS request, whose end closes complete series; ``study`` is
    the target study of ``POST /studies/{study}``.
    """

    session: object
    source: str
    transport: Transport
    declared_instance: str
    declared_class: str
    transfer_syntax: UID
    decode: Callable[[], Dataset]
    encode: Callable[[], Sequence[bytes]]
    study: str | None = None


@dataclass(frozen=True)
class Acceptance:
    """What became of a received instance: its status and, once known, its UIDs."""

    status: int
    sop_instance_uid: str = ""
    sop_class_uid: str = ""
    study_uid: str = ""


class StoreHandler:
    """The event handlers of the SCP: C-STORE, C-ECHO and the end of associations.

    Parameters
    ----------
    spool
        Where instances are stored.
    intake
        Told about each stored instance and each finished association.
    clock
        Source of ``received_at`` times.
    """

    def __init__(
        self, spool: Spool, intake: Intake, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.spool = spool
        self.intake = intake
        self.clock = clock
        self._series: dict[Any, tuple[str, set[str]]] = {}  # association -> (AE, series)
        self._lock = threading.Lock()

    @property
    def handlers(self) -> list[EventHandlerType]:
        """``evt_handlers`` for pynetdicom."""
        return [
            (evt.EVT_C_STORE, self.handle_store),
            (evt.EVT_C_ECHO, self.handle_echo),
            (evt.EVT_DIMSE_RECV, self.handle_dimse_received),
            (evt.EVT_ESTABLISHED, self.handle_established),
            (evt.EVT_REJECTED, self.handle_rejected),
            (evt.EVT_RELEASED, self.handle_finished),
            (evt.EVT_ABORTED, self.handle_finished),
            # A peer that drops the connection without A-RELEASE or A-ABORT.
            (evt.EVT_CONN_CLOSE, self.handle_connection_closed),
        ]

    def handle_echo(self, event: Any) -> int:
        """C-ECHO: always Success."""
        log.debug("C-ECHO from %s", _calling_ae(event))
        return SUCCESS

    def handle_dimse_received(self, event: Any) -> None:
        """Abort on a request that lacks a required command element.

        pynetdicom drops such a request (e.g. a C-STORE-RQ with an empty Affected SOP
        Instance UID) without any answer, so the peer would wait for its own timeout;
        an A-ABORT tells it at once.
        """
        message = event.message
        if not type(message).__name__.endswith("_RQ"):
            return
        try:
            valid = message.message_to_primitive().is_valid_request
        except Exception:
            return  # pynetdicom aborts the association on this one itself
        if not valid:
            log.warning(
                "%s from %s lacks a required command element: aborting the association",
                type(message).__name__.replace("_", "-"),
                _calling_ae(event),
            )
            event.assoc.dul.event_queue.put("Evt19")  # "invalid PDU": A-ABORT, as pynetdicom

    def handle_rejected(self, event: Any) -> None:
        """Count an association rejected at negotiation (calling AE not allowed)."""
        ASSOCIATIONS.labels(Transport.DIMSE.value, "rejected").inc()

    def handle_established(self, event: Any) -> None:
        """Log an accepted association."""
        ASSOCIATIONS.labels(Transport.DIMSE.value, "accepted").inc()
        with contextlib.suppress(Exception):
            log.info(
                "association from %s at %s accepted",
                _calling_ae(event),
                event.assoc.requestor.address,
            )

    def handle_store(self, event: Any) -> int:
        """C-STORE: store the instance durably, tell the intake, answer a status."""
        try:
            return self._store(event)
        except Exception:  # the listener must survive any input
            log.exception("C-STORE from %s: unexpected error", _calling_ae(event))
            INSTANCES.labels(Transport.DIMSE.value, "refused_other").inc()
            return INTERNAL_ERROR

    def handle_connection_closed(self, event: Any) -> None:
        """The connection is gone: end the association now, then as :meth:`handle_finished`.

        pynetdicom's acceptor waits ``acse_timeout`` (30 s) for an A-ASSOCIATE-RQ even
        when the connection closed (or sent garbage) before one came, and the waiting
        association counts towards ``maximum_associations`` (10): ten broken
        connections would refuse every modality for 30 s. Nothing more can come, so
        the wait is ended at once (an empty queue item, which it takes as its timeout).
        """
        with contextlib.suppress(Exception):
            assoc = event.assoc
            if (
                assoc.is_acceptor
                and not assoc.is_established
                and assoc.requestor.primitive is None
                and assoc.dul.to_user_queue.empty()
            ):
                assoc.dul.to_user_queue.put(None)
        self.handle_finished(event)

    def handle_finished(self, event: Any) -> None:
        """End of an association: tell the intake which series it stored into (once)."""
        self.session_ended(event.assoc)

    # --- C-STORE ------------------------------------------------------------------------

    def _store(self, event: Any) -> int:
        calling_ae = _calling_ae(event)
        request = event.request
        meta = event.file_meta
        if calling_ae:
            meta.SourceApplicationEntityTitle = calling_ae
        return self.accept(
            Received(
                session=event.assoc,
                source=calling_ae,
                transport=Transport.DIMSE,
                declared_instance=str(request.AffectedSOPInstanceUID or ""),
                declared_class=str(request.AffectedSOPClassUID or ""),
                transfer_syntax=UID(event.context.transfer_syntax),
                decode=lambda: event.dataset,
                encode=lambda: [_encode_meta(meta), event.encoded_dataset(False)],
            )
        ).status

    # --- shared by C-STORE and STOW-RS ---------------------------------------------------

    def accept(self, received: Received) -> Acceptance:
        """Check one received instance, store it durably, tell the intake; never raises.

        The one path for C-STORE and STOW-RS: the same checks, the same refusal statuses
        (module docstring), the same durable write before the status is returned.
        """
        try:
            acceptance = self._accept(received)
        except Exception:  # the listener must survive any input
            log.exception(
                "%s from %s: unexpected error", _VERB[received.transport], received.source
            )
            acceptance = Acceptance(INTERNAL_ERROR)
        if acceptance.status != SUCCESS:
            INSTANCES.labels(
                received.transport.value,
                _REFUSAL_OUTCOMES.get(acceptance.status, "refused_other"),
            ).inc()
        return acceptance

    def session_ended(self, session: object) -> None:
        """A session (association, STOW-RS request) ended: tell the intake its series, once."""
        try:
            with self._lock:
                entry = self._series.pop(session, None)
            if entry is None:
                return
            source, series = entry
            self.intake.association_released(source, frozenset(series))
        except Exception:
            log.exception("intake failed at the end of a session")

    def _accept(self, received: Received) -> Acceptance:
        source = received.source
        verb = _VERB[received.transport]
        affected_instance = received.declared_instance
        affected_class = received.declared_class
        where = f"{verb} from {source} (SOP Instance {affected_instance[:64]!r})"
        if not (is_valid_uid(affected_instance) and is_valid_uid(affected_class)):
            log.warning("%s: declared SOP Instance/Class UID is invalid", where)
            return Acceptance(INVALID_UID)
        if received.transfer_syntax not in TRANSFER_SYNTAXES:
            # C-STORE never gets here (refused at negotiation); STOW-RS parts may.
            log.warning("%s: transfer syntax %s is not accepted", where, received.transfer_syntax)
            return Acceptance(TRANSFER_SYNTAX_NOT_SUPPORTED, affected_instance, affected_class)

        # The bytes go to disk (and fsync) in a writer thread while the checks below run;
        # they become an instance (rename, directory fsync) only in _store_durably.
        write = _Write(self.spool, received)
        try:
            return self._check_and_store(received, where, write)
        finally:
            write.discard_unless_committed()

    def _check_and_store(self, received: Received, where: str, write: _Write) -> Acceptance:
        source = received.source
        verb = _VERB[received.transport]
        affected_instance = received.declared_instance
        affected_class = received.declared_class
        try:
            dataset = received.decode()
            has_pixels = any(k in dataset for k in _PIXEL_KEYWORDS)
            pixel_problem = _pixel_data_problem(dataset, received.transfer_syntax)
            for keyword in _PIXEL_KEYWORDS:
                if keyword in dataset:
                    del dataset[keyword]
            # pydicom parses values lazily: parse them all now, so that a broken element
            # fails here (with a status) and not later in the tracker.
            dataset.walk(lambda _ds, _elem: None)
        except Exception as exc:
            log.warning("%s: dataset cannot be decoded: %s", where, type(exc).__name__)
            return Acceptance(CANNOT_UNDERSTAND, affected_instance, affected_class)

        uids: dict[str, str] = {}
        for keyword in _REQUIRED_UIDS:
            value = dataset.get(keyword)
            if value is None or str(value).strip("\x00 ") == "":
                log.warning("%s: %s is missing", where, keyword)
                return Acceptance(MISSING_UID, affected_instance, affected_class)
            if not is_valid_uid(value):
                log.warning("%s: %s %r is not a valid UID", where, keyword, str(value)[:72])
                return Acceptance(INVALID_UID, affected_instance, affected_class)
            uids[keyword] = str(value).rstrip("\x00 ")
        study, series = uids["StudyInstanceUID"], uids["SeriesInstanceUID"]
        sop_instance, sop_class = uids["SOPInstanceUID"], uids["SOPClassUID"]
        where = f"{verb} from {source} (series {series}, SOP Instance {sop_instance})"

        def refuse(status: int) -> Acceptance:
            return Acceptance(status, sop_instance, sop_class, study)

        if sop_instance != affected_instance or sop_class != affected_class:
            log.warning(
                "%s: dataset's SOP Instance/Class UID %s / %s differ from the declared %s / %s",
                where,
                sop_instance,
                sop_class,
                affected_instance,
                affected_class,
            )
            return refuse(UID_MISMATCH)
        if received.study is not None and study != received.study:
            log.warning(
                "%s: Study Instance UID %s is not the target %s", where, study, received.study
            )
            return refuse(UID_MISMATCH)
        if sop_class not in STORAGE_SOP_CLASSES:
            log.warning("%s: SOP Class %s is not stored here", where, sop_class)
            return refuse(SOP_CLASS_NOT_SUPPORTED)
        if sop_class in MR_IMAGE_SOP_CLASSES:
            modality = str(dataset.get("Modality", "") or "")
            if modality != "MR":
                log.warning("%s: MR image with Modality %r", where, modality[:16])
                return refuse(NOT_MR)
            if not has_pixels:
                log.warning("%s: MR image without pixel data", where)
                return refuse(NO_PIXEL_DATA)
        if pixel_problem is not None:
            log.warning("%s: pixel data cannot be decoded: %s", where, pixel_problem)
            return refuse(CANNOT_UNDERSTAND)

        try:
            result = write.commit(study, series, sop_instance)
        except SpoolFullError as exc:
            log.error("%s: refused, out of resources: %s", where, exc)
            return refuse(OUT_OF_RESOURCES)
        except SpoolError as exc:
            log.error("%s: refused, cannot write to the spool: %s", where, exc)
            return refuse(OUT_OF_RESOURCES)
        if result.replaced:
            log.warning("%s: re-sent with different content, replaced the stored copy", where)
        elif result.duplicate:
            log.info("%s: re-sent, already stored", where)
        INSTANCES.labels(
            received.transport.value,
            "duplicate" if result.duplicate and not result.replaced else "stored",
        ).inc()

        with self._lock:
            _, stored_series = self._series.setdefault(received.session, (source, set()))
            stored_series.add(series)
        instance = StoredInstance(
            path=result.path,
            study_uid=study,
            series_uid=series,
            sop_instance_uid=sop_instance,
            sop_class_uid=sop_class,
            # A STOW-RS source is the client's IP address, not an AE title.
            calling_ae=source if received.transport is Transport.DIMSE else "",
            duplicate=result.duplicate,
            header=dataset,
            received_at=self.clock(),
            replaced=result.replaced,
            transport=received.transport,
            peer_address=source if received.transport is Transport.STOW_RS else "",
        )
        try:
            self.intake.instance_stored(instance)
        except Exception:
            # The file is durable and the tracker rebuilds from the spool on restart:
            # refusing now would only make the peer send it again.
            log.exception("%s: intake failed (instance is stored)", where)
        return Acceptance(SUCCESS, sop_instance, sop_class, study)


class _Write:
    """One instance's write to the spool, begun before its checks (``Spool.begin``).

    Committed once the checks accept the instance, else discarded. When the bytes cannot
    be encoded up front, :meth:`commit` encodes and stores them as before (the same error).
    """

    def __init__(self, spool: Spool, received: Received) -> None:
        self.spool = spool
        self.received = received
        self.committed = False
        self.pending: PendingWrite | None
        try:
            self.pending = spool.begin(received.encode())
        except Exception:
            self.pending = None

    def commit(self, study: str, series: str, sop_instance: str) -> StoreResult:
        """Make the instance durable (raises as ``Spool.store``)."""
        self.committed = True
        if self.pending is None:
            return self.spool.store(study, series, sop_instance, self.received.encode())
        return self.spool.commit(self.pending, study, series, sop_instance)

    def discard_unless_committed(self) -> None:
        """Remove the temporary file of a refused instance."""
        if self.pending is not None and not self.committed:
            self.spool.discard(self.pending)


def _calling_ae(event: Any) -> str:
    try:
        return str(event.assoc.requestor.ae_title).strip()
    except Exception:
        return "?"


def _pixel_data_problem(dataset: Dataset, transfer_syntax: UID) -> str | None:
    """Why the Pixel Data cannot be decoded as its transfer syntax says, or None.

    Native (uncompressed) pixel data must be as long as Rows x Columns x Samples per
    Pixel x Bits Allocated x Number of Frames says (plus the padding byte of an odd
    length); compressed pixel data must be encapsulated. Frames are not decoded.
    """
    if "PixelData" not in dataset:
        return None
    element = dataset["PixelData"]
    if transfer_syntax.is_compressed:
        return None if element.is_undefined_length else "compressed but not encapsulated"
    if element.is_undefined_length:
        return "encapsulated in an uncompressed transfer syntax"
    try:
        expected = get_expected_length(dataset, "bytes")
    except Exception as exc:  # Rows, Columns... missing or not numbers
        return f"image pixel attributes unusable ({type(exc).__name__})"
    length = len(element.value or b"")
    if expected <= 0 or length not in (expected, expected + expected % 2):
        return f"{length} bytes where the image pixel attributes say {expected}"
    return None


def _encode_meta(meta: FileMetaDataset) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)
    return buffer.getvalue()


# --- the Application Entity and its server ------------------------------------------

_POLL_INTERVAL = 0.2  # s; how soon stop() is noticed by the accepting loop


def build_ae(settings: Settings) -> AE:
    """The Application Entity: title, storage and verification contexts, calling-AE list."""
    ae = AE(ae_title=settings.ae_title)
    for sop_class in STORAGE_SOP_CLASSES:
        ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
    ae.add_supported_context(
        Verification, [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]
    )
    ae.require_calling_aet = list(settings.allowed_calling_aes)
    ae.maximum_pdu_size = transport.MAXIMUM_PDU_SIZE
    return ae


class Listener:
    """The listener's DICOM server.

    Parameters
    ----------
    settings
        ``ae_title``, ``host``, ``port``, ``allowed_calling_aes``, ``allowed_hosts``,
        ``tls_*`` and ``data_dir`` (the spool is ``data_dir / "spool"``) are used.
    intake
        Receives stored instances and association ends.
    spool
        The spool to use (default: opened under ``settings.data_dir``).

    Raises
    ------
    ConfigurationError
        If ``allowed_hosts`` or the TLS settings are invalid.
    SpoolError
        If the spool cannot be created.
    """

    def __init__(self, settings: Settings, intake: Intake, *, spool: Spool | None = None) -> None:
        self.settings = settings
        self.spool = spool if spool is not None else Spool(settings.data_dir / "spool")
        self.handler = StoreHandler(self.spool, intake)
        self.networks = parse_allowed_hosts(settings.allowed_hosts)
        self.ssl_context = build_ssl_context(settings)
        self.ae = build_ae(settings)
        self._server: transport.GuardedAssociationServer | None = None
        self._thread: threading.Thread | None = None
        self._state_lock = threading.Lock()

    @property
    def serving(self) -> bool:
        """Whether the DICOM port is bound and accepting associations."""
        return self._server is not None

    @property
    def port(self) -> int:
        """The port the server is bound to (once started)."""
        if self._server is None:
            return self.settings.port
        return int(self._server.server_address[1])

    def _make_server(self) -> transport.GuardedAssociationServer:
        if self._server is not None:
            raise RuntimeError("the listener is already running")
        server = cast(
            transport.GuardedAssociationServer,
            self.ae.make_server(
                (self.settings.host, self.settings.port),
                ssl_context=self.ssl_context,
                evt_handlers=self.handler.handlers,
                server_class=transport.GuardedAssociationServer,
                request_handler=transport.GuardedRequestHandler,
            ),
        )
        server.allowed_networks = self.networks
        # AE.shutdown() and the server's own shutdown() expect it in this list.
        self.ae._servers.append(server)
        self._server = server
        self._log_startup()
        return server

    def start(self) -> None:
        """Start serving in a background thread and return."""
        server = self._make_server()
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL},
            name=f"listener:{self.port}",
            daemon=True,
        )
        self._thread.start()

    def serve_forever(self) -> None:
        """Serve in this thread until :meth:`stop` is called (from another thread)."""
        server = self._make_server()
        try:
            server.serve_forever(poll_interval=_POLL_INTERVAL)
        except KeyboardInterrupt:
            log.info("interrupted")
        finally:
            if self._server is not None:
                self._close(timeout=5.0)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting associations; wait up to ``timeout`` s for running ones, abort
        the rest."""
        server = self._server
        if server is None:
            return
        server.shutdown()  # returns once serve_forever has stopped
        self._close(timeout)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _close(self, timeout: float) -> None:
        with self._state_lock:  # stop() and a returning serve_forever() may both get here
            server, self._server = self._server, None
        if server is None:
            return
        with contextlib.suppress(Exception):
            server.server_close()
        with contextlib.suppress(ValueError):
            self.ae._servers.remove(server)
        # Let established associations finish their transfer; ones still negotiating (or
        # whose connection already failed, waiting out the ACSE timeout) are not waited for.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(
            a.is_established for a in server.active_associations
        ):
            time.sleep(0.05)
        for assoc in server.active_associations:
            if assoc.is_established:
                log.warning("aborting association from %s at shutdown", assoc.requestor.ae_title)
            with contextlib.suppress(Exception):
                assoc.abort()
        log.info("DICOM listener stopped")

    def __enter__(self) -> Listener:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _log_startup(self) -> None:
        s = self.settings
        tls = "off"
        if self.ssl_context is not None:
            tls = "on, client certificates required" if s.tls_ca else "on"
        log.info(
            "DICOM listener: AE title %s on %s:%d, TLS %s, spool %s",
            s.ae_title,
            s.host,
            self.port,
            tls,
            self.spool.root,
        )
        if s.allowed_calling_aes:
            log.info("calling AE titles allowed: %s", ", ".join(s.allowed_calling_aes))
        else:
            log.warning(
                "allowed_calling_aes is empty: associations from ANY calling AE title "
                "are accepted (set ONFH_ALLOWED_CALLING_AES to restrict)"
            )
        if self.networks:
            log.info("peer addresses allowed: %s", ", ".join(map(str, self.networks)))
        else:
            log.info("allowed_hosts is empty: connections from any address are accepted")


__all__ = [
    "CANNOT_UNDERSTAND",
    "INTERNAL_ERROR",
    "INVALID_UID",
    "MISSING_UID",
    "MR_IMAGE_SOP_CLASSES",
    "NOT_MR",
    "NO_PIXEL_DATA",
    "OUT_OF_RESOURCES",
    "SOP_CLASS_NOT_SUPPORTED",
    "STORAGE_SOP_CLASSES",
    "SUCCESS",
    "TRANSFER_SYNTAXES",
    "TRANSFER_SYNTAX_NOT_SUPPORTED",
    "UID_MISMATCH",
    "Acceptance",
    "Intake",
    "Listener",
    "Received",
    "StoreHandler",
    "build_ae",
]
