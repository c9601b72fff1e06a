"""Fuzzing the running listener: mutated datasets over real associations, mutated PDUs
over raw TCP.

The listener is the real process (``python -m onfh_dlr listener`` with a real Redis), so
"no crash" means the process is alive and answers C-ECHO after every batch. Every mutated
C-STORE must get a failure status or end in an abort/close by the listener, never a hang;
a mutation that leaves a valid dataset may get Success, and then the instance must be in
the spool, byte for byte as sent, readable by pydicom. Every mutated PDU must end in an
A-ASSOCIATE-RJ, A-ABORT or a closed connection. Afterwards the listener stores a good
study, and nothing was written outside ``DATA_DIR/spool`` (and the state DB, the broker
and the logs).

Cases are drawn by hypothesis (derandomized: the same cases on every run):
``scale.fuzz_datasets`` datasets and ``scale.fuzz_pdus`` PDU exchanges (1,000 and 200 in
CI, 10,000 and 2,000 with ``RELIABILITY_SCALE=full``). The counts per input class are
printed (``-s``) and written to ``fuzz-summary.json`` in the test's directory.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import select
import socket
import struct
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from conftest import Scale
from fuzzing import (
    ECHO_EVERY,
    FAILURE_STATUSES,
    MUTATORS,
    ROOT_UID,
    TIMEOUT,
    Mutated,
    StoreSCU,
    Tally,
    Target,
    allowed_to_change,
    check_alive,
    check_stored_file,
    dataset_bytes,
    encode,
    fresh_uids,
    log_exceptions,
    snapshot,
    stored_instances,
    template_bank,
)
from fuzzing_pdus import (
    ABORT,
    PDU_KINDS,
    RELEASE_RQ,
    AssociateRQ,
    PduCase,
    RawConnection,
    StalledPeers,
    p_data,
    pdu_case,
    run_pdu_case,
)
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    MRImageStorage,
    RLELossless,
)
from pynetdicom import AE
from service_harness import MODALITY_AE, SERVICE_AE, CohortMaker, PhantomStudy, Service

from listener.scp import Listener, Verification
from listener.spool import TMP_DIR
from listener.transport import pdu_limit
from onfh_dlr.broker import free_port
from onfh_dlr.settings import Settings
from worker.scu import store_files, wait_for_echo

pytestmark = [
    # pydicom rightly warns while encoding the broken values this file sends on purpose.
    pytest.mark.filterwarnings("ignore::UserWarning"),
    # A listener thread (in-process listener) that dies of an exception fails the test.
    pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning"),
]


# --- the listener process ---------------------------------------------------------------


@pytest.fixture(scope="module")
def phantom(phantom_cohort: CohortMaker) -> PhantomStudy:
    """A phantom MR series and its DICOM-SEG."""
    (study,) = phantom_cohort(1, 17, onfh_fraction=1.0).studies
    return study


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """``python -m onfh_dlr listener`` with a real Redis (no worker: nothing is scored)."""
    root = tmp_path_factory.mktemp("fuzz-service")
    service = Service(
        root,
        series_timeout="3600",  # series close on release only: no timer racing the fuzz
        log_json="true",  # one record a line: tracebacks can be told apart
        sweep_interval="60",
    )
    try:
        service.redis.start()
        service.start_process("listener")
        if not wait_for_echo(
            "127.0.0.1", service.port, SERVICE_AE, timeout=30, calling_ae=MODALITY_AE
        ):
            raise AssertionError(f"listener did not start: {service.log('listener')}")
        yield Target(service)
    finally:
        service.stop()


# --- the test ----------------------------------------------------------------------------


def test_fuzzed_datasets_and_pdus_never_crash_the_listener(
    target: Target, phantom: PhantomStudy, scale: Scale, tmp_path: Path
) -> None:
    templates = template_bank(phantom)
    tmp_root = target.service.root
    before = snapshot(tmp_root)
    passwd = Path("/etc/passwd")
    passwd_stat = passwd.stat() if passwd.exists() else None

    tallies: dict[str, Tally] = defaultdict(Tally)
    successes: dict[str, tuple[str, str, str]] = {}  # SOP -> (class, sha256 of body, syntax)
    examples: dict[str, list[str]] = defaultdict(list)  # problems, a few per class
    stalled = StalledPeers(target.port)
    scu = StoreSCU(target.port)
    counter = itertools.count()
    started = time.monotonic()

    @settings(
        max_examples=scale.fuzz_datasets,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def send_dataset(data: st.DataObject) -> None:
        n = next(counter)
        kind = data.draw(st.sampled_from(sorted(MUTATORS)), label="kind")
        template_name = data.draw(
            st.sampled_from(["small"] * 17 + ["full"] * 2 + ["seg"]), label="template"
        )
        ds = fresh_uids(templates[template_name], n)
        case = MUTATORS[kind](data.draw, ds)
        tally = tallies[kind]
        tally.sent += 1
        outcome, status = scu.store(case)
        if outcome == "status" and status is not None:
            tally.statuses[f"{status:#06x}"] += 1
            if status == 0x0000:
                tally.success += 1
                digest = hashlib.sha256(case.body).hexdigest()
                successes[str(case.sop_instance)] = (str(case.sop_class), digest, str(case.syntax))
            elif status in FAILURE_STATUSES:
                tally.failure += 1
            else:
                tally.other_status += 1
                examples[kind].append(f"case {n}: status {status:#06x}")
        elif outcome == "aborted":
            tally.aborted += 1
        else:
            tally.hang += 1
            examples[kind].append(f"case {n}: no answer within {TIMEOUT} s")
        if not target.alive():
            tally.crash += 1
            raise AssertionError(f"listener died at case {n} ({kind})")
        if n % ECHO_EVERY == ECHO_EVERY - 1:
            scu.close()  # release now and then: the tracker sees ends of associations
            check_alive(target, f"after dataset case {n}")

    send_dataset()
    scu.close()
    check_alive(target, "after the dataset cases")
    dataset_seconds = time.monotonic() - started
    dataset_cases = next(counter)

    # --- PDUs
    pdu_tallies: dict[str, Counter[str]] = defaultdict(Counter)
    pdu_counter = itertools.count()
    started = time.monotonic()

    @settings(
        max_examples=scale.fuzz_pdus,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def send_pdu(data: st.DataObject) -> None:
        n = next(pdu_counter)
        kind = data.draw(st.sampled_from(PDU_KINDS), label="kind")
        case = pdu_case(data.draw, kind)
        outcome = run_pdu_case(target.port, case)
        pdu_tallies[kind][outcome] += 1
        if outcome.endswith("hang") or "no-answer" in outcome:
            examples[f"pdu:{kind}"].append(f"case {n}: {outcome}: {case.first[:80]!r}")
        if not target.alive():
            raise AssertionError(f"listener died at PDU case {n} ({kind})")
        if n % ECHO_EVERY == ECHO_EVERY - 1:
            check_alive(target, f"after PDU case {n}")

    send_pdu()
    check_alive(target, "after the PDU cases")
    pdu_seconds = time.monotonic() - started
    pdu_cases = next(pdu_counter)

    stalled_closed = stalled.wait_closed()

    # --- a good study afterwards
    good = phantom.slices
    statuses = store_files(
        good,
        host="127.0.0.1",
        port=target.port,
        called_ae=SERVICE_AE,
        calling_ae=MODALITY_AE,
        timeout=TIMEOUT,
    )
    assert statuses == [0] * len(good)
    on_disk = stored_instances(target.spool)
    for path in good:
        sop = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        assert dataset_bytes(on_disk[sop]) == dataset_bytes(path)
    check_alive(target, "after the good study")

    # --- every Success is durable, as sent, readable, in its place
    lost = [sop for sop in successes if sop not in on_disk]
    changed = [
        sop
        for sop, (_, digest, _) in successes.items()
        if sop in on_disk and hashlib.sha256(dataset_bytes(on_disk[sop])).hexdigest() != digest
    ]
    unreadable = [p for path in on_disk.values() for p in check_stored_file(path)]
    leftovers = sorted(p.name for p in (target.spool / TMP_DIR).iterdir())

    # --- nothing outside the spool
    after = snapshot(tmp_root)
    outside = sorted(
        rel
        for rel, stat in after.items()
        if before.get(rel) != stat and not allowed_to_change(rel, target.data_dir.name)
    )
    strays = sorted(
        str(p.relative_to(target.spool))
        for p in target.spool.rglob("*")
        if p.is_file()
        and TMP_DIR not in p.relative_to(target.spool).parts
        and p.parent.parent.parent != target.spool
    )
    escaped = [p for p in (Path("/etc/passwd.dcm"), Path("/etc.dcm")) if p.exists()]
    passwd_changed = passwd_stat is not None and passwd.stat().st_mtime != passwd_stat.st_mtime

    # --- the listener's log: exceptions that were not handled, or handled unexpectedly
    unhandled, own_exceptions, pynetdicom_logged = log_exceptions(target.log_path)

    summary = {
        "scale": "full" if scale.full else "reduced",
        "dataset_cases": dataset_cases,
        "dataset_seconds": round(dataset_seconds, 1),
        "associations": scu.associations,
        "datasets": {k: tallies[k].as_dict() for k in sorted(tallies)},
        "pdu_cases": pdu_cases,
        "pdu_seconds": round(pdu_seconds, 1),
        "pdus": {k: dict(sorted(v.items())) for k, v in sorted(pdu_tallies.items())},
        "stalled_peers_closed_after_s": stalled_closed,
        "instances_answered_success": len(successes),
        "instances_lost": len(lost),
        "instances_changed": len(changed),
        "stored_files_with_problems": unreadable[:20],
        "tmp_leftovers": leftovers,
        "written_outside_spool": outside + strays + [str(p) for p in escaped],
        "listener_exceptions_unhandled": unhandled[:5],
        "listener_exceptions_own": own_exceptions[:5],
        "pynetdicom_exceptions_logged_and_aborted": dict(pynetdicom_logged),
        "problems": {k: v[:5] for k, v in examples.items()},
    }
    text = json.dumps(summary, indent=2)
    (tmp_path / "fuzz-summary.json").write_text(text + "\n")
    print(f"\nfuzz summary ({tmp_path / 'fuzz-summary.json'}):\n{text}")

    assert dataset_cases >= scale.fuzz_datasets and pdu_cases >= scale.fuzz_pdus
    assert sum(t.crash for t in tallies.values()) == 0
    assert sum(t.hang for t in tallies.values()) == 0, summary["problems"]
    assert sum(t.other_status for t in tallies.values()) == 0, summary["problems"]
    assert not [o for c in pdu_tallies.values() for o in c if "hang" in o or "no-answer" in o]
    assert None not in stalled_closed.values(), stalled_closed
    assert tallies["valid"].success == tallies["valid"].sent > 0
    assert lost == [] and changed == []
    assert unreadable == []
    assert leftovers == []
    assert summary["written_outside_spool"] == [] and not passwd_changed
    assert unhandled == []
    assert own_exceptions == []


# --- regressions: what the fuzzing found, on an in-process listener ----------------------


class _NoIntake:
    def instance_stored(self, instance: object) -> None:
        pass

    def association_released(self, calling_ae: str, series_uids: frozenset[str]) -> None:
        pass


NETWORK_TIMEOUT = 2.0  # s: the in-process listener's read/idle timeout, short to wait out


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    """A listener in this process, with a short read/idle timeout."""
    server = Listener(
        Settings(data_dir=tmp_path / "data", host="127.0.0.1", port=free_port()), _NoIntake()
    )
    server.ae.network_timeout = NETWORK_TIMEOUT
    server.start()
    yield server
    server.stop(timeout=2.0)


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the peer closes ``sock`` within ``seconds`` (reading whatever it sends)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        try:
            if not sock.recv(65536):
                return True
        except OSError:
            return True
    return False


@pytest.mark.parametrize("sent", ["pdu_header", "part_of_an_rq", "p_data_header"])
def test_a_peer_silent_inside_a_pdu_is_disconnected(listener: Listener, sent: str) -> None:
    # Defect: accepted sockets had no timeout and pynetdicom reads a whole PDU in one
    # blocking call, so such a peer held a thread pair and a socket forever.
    rq = AssociateRQ().encode()
    data = {
        "pdu_header": rq[:6],
        "part_of_an_rq": rq[:40],
        "p_data_header": rq + struct.pack(">BBL", 0x04, 0, 1000),
    }[sent]
    with socket.create_connection(("127.0.0.1", listener.port)) as sock:
        sock.sendall(data)
        time.sleep(0.2)
        (assoc,) = listener.ae.active_associations
        assert assoc.dul.socket is not None and assoc.dul.socket.socket is not None
        assert assoc.dul.socket.socket.gettimeout() == NETWORK_TIMEOUT
        assert _closed_within(sock, NETWORK_TIMEOUT + 5)


def test_broken_connections_do_not_use_up_the_association_slots(listener: Listener) -> None:
    # Defect: an acceptor whose connection closed before an A-ASSOCIATE-RQ waited the
    # ACSE timeout (30 s) and counted towards maximum_associations (10): ten broken
    # connections refused every modality ("local limit exceeded") for 30 s.
    for _ in range(2 * listener.ae.maximum_associations):
        assert run_pdu_case(listener.port, PduCase(ABORT[:5])) == "eof+closed"
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", listener.port, ae_title=SERVICE_AE)
    assert assoc.is_established, "refused: the slots are still taken"
    assert int(assoc.send_c_echo().Status) == 0x0000
    assoc.release()


def _rq_with(contexts: list[tuple[int, bytes, list[bytes]]]) -> bytes:
    rq = AssociateRQ()
    rq.contexts = contexts
    return rq.encode()


@pytest.mark.parametrize(
    ("request_", "answer"),
    [
        # Defect: ValueError in the state machine killed the reader thread, no answer.
        (_rq_with([(2, b"1.2.840.10008.1.1", [b"1.2.840.10008.1.2"])]), "ABORT"),
        # Defect: IndexError in the negotiation killed the association thread; the
        # peer waited for an answer forever.
        (_rq_with([(1, b"1.2.840.10008.1.1", [])]), "RJ"),
        (_rq_with([(1, b"1.2.840.10008.1.1", [b""])]), "RJ"),
    ],
    ids=["even_context_id", "no_transfer_syntax", "empty_transfer_syntax"],
)
def test_a_malformed_association_request_is_answered(
    listener: Listener, request_: bytes, answer: str
) -> None:
    outcome = run_pdu_case(listener.port, PduCase(request_, echo=True))
    assert outcome.startswith(answer) and outcome.endswith("closed"), outcome


def test_a_command_set_without_command_field_aborts(listener: Listener) -> None:
    # Defect: pynetdicom raised in the reader thread (AttributeError: CommandField),
    # which died with a traceback, leaving the connection to the timers.
    no_command_field = b"\x00\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00"
    case = PduCase(AssociateRQ().encode(), [p_data(1, 0x03, no_command_field)])
    assert run_pdu_case(listener.port, case) == "AC+ABORT+eof+closed"


@pytest.mark.parametrize("empty", ["sop_class", "sop_instance", "spaces"])
def test_a_store_request_without_affected_uids_is_aborted(
    listener: Listener, phantom: PhantomStudy, empty: str
) -> None:
    # Defect: pynetdicom dropped such a request without an answer (and its logging
    # handler raised before the listener's check could run): the peer waited.
    ds = template_bank(phantom)["small"].ds
    case = Mutated(encode(ds, "explicit"), ExplicitVRLittleEndian, MRImageStorage, "1.2.3")
    if empty == "sop_class":
        case.sop_class = ""
    else:
        case.sop_instance = "" if empty == "sop_instance" else "  "
    scu = StoreSCU(listener.port)
    started = time.monotonic()
    assert scu.store(case) == ("aborted", None)
    assert time.monotonic() - started < 2.0
    scu.close()


def test_pixel_data_that_does_not_match_the_image_is_refused(
    listener: Listener, phantom: PhantomStudy
) -> None:
    # Defect: answered Success, then stored an image no reader can decode.
    ds = template_bank(phantom)["small"].ds
    scu = StoreSCU(listener.port)
    numbers = itertools.count(1)

    def store(changes: dict[str, Any], encoding: str, syntax: str) -> tuple[str, int | None]:
        variant = copy.deepcopy(ds)
        variant.SOPInstanceUID = f"{ROOT_UID}.5.{next(numbers)}"
        for keyword, value in changes.items():
            setattr(variant, keyword, value)
        body = encode(variant, encoding)
        return scu.store(Mutated(body, syntax, MRImageStorage, variant.SOPInstanceUID))

    assert store({"Rows": 17}, "explicit", ExplicitVRLittleEndian) == ("status", 0xC210)
    assert store({"BitsAllocated": 8}, "implicit", ImplicitVRLittleEndian) == ("status", 0xC210)
    short = {"PixelData": bytes(ds.PixelData)[:100]}
    assert store(short, "big", ExplicitVRBigEndian) == ("status", 0xC210)
    # native pixel data sent on a compressed transfer syntax's context
    assert store({}, "explicit", JPEGBaseline8Bit) == ("status", 0xC210)
    assert store({}, "explicit", RLELossless) == ("status", 0xC210)
    # the image as it is: stored
    assert store({}, "deflate", DeflatedExplicitVRLittleEndian) == ("status", 0x0000)
    scu.close()


def test_a_release_request_followed_by_garbage_ends_cleanly(listener: Listener) -> None:
    # Defect: the listener's A-RELEASE response came after the garbage had aborted the
    # association (Sta13), an event with no transition: the reader thread died (and,
    # with a first guard that aborted again, the primitive came back on every loop).
    for garbage in (b"\xff" * 10, b"\x09\x00\x00\x00\x00\x00"):
        case = PduCase(AssociateRQ().encode(), [RELEASE_RQ + garbage])
        outcome = run_pdu_case(listener.port, case)
        assert outcome.startswith("AC+") and outcome.endswith("closed"), outcome
        assert outcome.count("ABORT") <= 3, outcome


@pytest.mark.parametrize("when", ["before_association", "after_association"])
def test_a_pdu_longer_than_the_limit_is_aborted_before_it_is_read(
    listener: Listener, when: str
) -> None:
    # Defect: pynetdicom reads whatever length a PDU header claims (up to 4 GiB) into
    # memory, so one connection, even from a sender that is not allowed in, could
    # exhaust the listener's memory. The header alone now gets an A-ABORT.
    limit = pdu_limit(listener.ae.maximum_pdu_size)
    assert limit < 64 * 1024 * 1024
    conn = RawConnection(listener.port)
    try:
        if when == "after_association":
            conn.send(AssociateRQ().encode())
            accepted = conn.read_pdu(time.monotonic() + TIMEOUT)
            assert accepted is not None and accepted[0] == 0x02
            pdu_type = 0x04
        else:
            pdu_type = 0x01
        conn.send(struct.pack(">BBL", pdu_type, 0, limit + 1) + b"\x00" * 4096)
        answer = conn.read_pdu(time.monotonic() + 5)
        assert answer is not None and answer[0] == 0x07, answer  # A-ABORT
    finally:
        conn.close()
    # a PDU as large as the limit is still read (then refused as undecodable: aborted)
    conn = RawConnection(listener.port)
    try:
        assert conn.send(struct.pack(">BBL", 0x01, 0, limit) + b"\x00" * limit)
        answer = conn.read_pdu(time.monotonic() + TIMEOUT)
        assert answer is not None and answer[0] == 0x07, answer
    finally:
        conn.close()
