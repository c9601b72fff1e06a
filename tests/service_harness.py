"""Real service processes for integration tests: Redis, listener, worker, a receiving PACS.

Each process is started the way an administrator starts it (``python -m onfh_dlr
listener|worker`` with ``ONFH_*`` variables), so the tests exercise the same entry points.
"""

from __future__ import annotations

import contextlib
import csv
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pydicom

from onfh_dlr.broker import EmbeddedRedis, free_port
from onfh_dlr.cli.demo import running_service
from onfh_dlr.cli.receiver import Received, Receiver
from onfh_dlr.state import Job, StateDB
from phantom.cohort import generate_cohort
from worker.scu import store_files, wait_for_echo

SERVICE_AE = "ONFH_DLR"
PACS_AE = "TEST_PACS"
MODALITY_AE = "TEST_MR"


def wait_until(
    predicate: Callable[[], object], timeout: float, what: str, poll: float = 0.2
) -> None:
    """Poll ``predicate`` until it is truthy; fail the test with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextlib.contextmanager
def serve_process(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m onfh_dlr serve`` with ``env``, its output appended to ``log_path``.

    Stopped on exit as an administrator stops it: SIGTERM, and a kill if it has not
    ended within 60 s (the supervisor waits for its workers to finish first).
    """
    with log_path.open("ab") as log, running_service(env, log) as process:
        yield process


@dataclass(frozen=True)
class PhantomStudy:
    """One phantom patient: its coronal T2-FS series, ground-truth SEG and identity."""

    slices: list[Path]
    seg: Path
    study_uid: str
    series_uid: str
    patient_name: str
    patient_id: str
    labels: dict[str, int]  # side -> 1 for early ONFH

    @property
    def nbytes(self) -> int:
        return sum(p.stat().st_size for p in self.slices)


@dataclass(frozen=True)
class Cohort:
    """A generated phantom cohort: its ``cohort.csv`` and one entry per patient."""

    csv: Path
    studies: list[PhantomStudy]

    @property
    def root(self) -> Path:
        return self.csv.parent


CohortMaker = Callable[..., Cohort]


def phantom_studies(
    root: Path, count: int, seed: int, onfh_fraction: float = 0.5
) -> list[PhantomStudy]:
    """``count`` phantom patients generated in one go under ``root``."""
    return studies_of(generate_cohort(root, cases=count, seed=seed, onfh_fraction=onfh_fraction))


def studies_of(cohort: Path) -> list[PhantomStudy]:
    """One :class:`PhantomStudy` per patient of a generated cohort (its ``cohort.csv``)."""
    rows = list(csv.DictReader(cohort.open(encoding="utf-8")))
    studies = []
    for patient in sorted({row["PatientID"] for row in rows}):
        mine = [row for row in rows if row["PatientID"] == patient]
        slices = sorted((cohort.parent / mine[0]["Image"]).glob("*.dcm"))
        first = pydicom.dcmread(slices[0], stop_before_pixels=True)
        studies.append(
            PhantomStudy(
                slices,
                cohort.parent / mine[0]["Mask"],
                str(first.StudyInstanceUID),
                str(first.SeriesInstanceUID),
                str(first.PatientName),
                str(first.PatientID),
                {row["Side"]: int(row["Label"]) for row in mine},
            )
        )
    return studies


class Service:
    """A listener, a worker, their Redis and a receiving PACS under one directory."""

    def __init__(self, root: Path, **settings: str) -> None:
        self.root = root
        self.port = int(settings["port"]) if "port" in settings else free_port()
        self.pacs_port = free_port()
        # With AUTH, as `onfh-dlr serve` runs it: every test uses the password path.
        self.redis = EmbeddedRedis(
            root / "broker", port=free_port(), password=secrets.token_urlsafe(16)
        )
        self.pacs = Receiver(root / "pacs", self.pacs_port, ae_title=PACS_AE)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ONFH_")}
        self.env.update(
            ONFH_DATA_DIR=str(root / "data"),
            ONFH_HOST="127.0.0.1",
            ONFH_PORT=str(self.port),
            ONFH_AE_TITLE=SERVICE_AE,
            ONFH_BROKER_URL=self.redis.url,
            ONFH_DESTINATIONS=f"{PACS_AE}@127.0.0.1:{self.pacs_port}",
            ONFH_SERIES_TIMEOUT="4",
            ONFH_SWEEP_INTERVAL="1",
            ONFH_DELIVERY_BACKOFF="0.5",
            ONFH_DELIVERY_BACKOFF_MAX="2",
        )
        self.env.update({f"ONFH_{k.upper()}": v for k, v in settings.items()})
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._db: StateDB | None = None

    @property
    def data_dir(self) -> Path:
        return Path(self.env["ONFH_DATA_DIR"])

    @property
    def db(self) -> StateDB:
        if self._db is None:
            self._db = StateDB.for_settings(self.env.get("ONFH_DATABASE_URL"), self.data_dir)
        return self._db

    def push(
        self,
        paths: list[Path],
        *,
        calling_ae: str = MODALITY_AE,
        on_file: Callable[[Path, int], None] | None = None,
    ) -> list[int]:
        """C-STORE ``paths`` to the listener over one association; the statuses."""
        return store_files(
            paths,
            host="127.0.0.1",
            port=self.port,
            called_ae=SERVICE_AE,
            calling_ae=calling_ae,
            on_file=on_file,
        )

    def srs_received(self, study_uid: str) -> list[Received]:
        """Every SR the PACS received for a study, a re-sent one as often as it came."""
        return [r for r in self.pacs.received if r.modality == "SR" and r.study_uid == study_uid]

    def srs_at_pacs(self, study_uid: str) -> set[str]:
        """The distinct SR SOP Instance UIDs the PACS received for a study."""
        return {r.sop_instance_uid for r in self.srs_received(study_uid)}

    def full_log(self, role: str) -> str:
        path = self.root / f"{role}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start_process(self, role: str) -> subprocess.Popen[bytes]:
        log = (self.root / f"{role}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "onfh_dlr", role], env=self.env, stdout=log, stderr=log
        )
        self.processes[role] = process
        return process

    def accepts_our_echo(self) -> bool:
        """Whether the listener answers this harness' plain C-ECHO (no TLS, AE allowed)."""
        allowed = self.env.get("ONFH_ALLOWED_CALLING_AES", "")
        names = {a.strip() for a in allowed.split(",") if a.strip()}
        return "ONFH_TLS_CERT" not in self.env and (not names or MODALITY_AE in names)

    def start(self) -> Service:
        """Start everything and wait until the listener answers and the worker is ready; on
        failure stop what did start (no stray processes)."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self.redis.start()
            self.pacs.start()
            worker_ready = self._ready_count("worker")
            self.start_process("worker")
            self.restart_listener()
            if self.accepts_our_echo() and not wait_for_echo(
                "127.0.0.1", self.port, SERVICE_AE, timeout=30, calling_ae=MODALITY_AE
            ):
                raise AssertionError(f"listener did not answer C-ECHO: {self.log('listener')}")
            self._wait_ready("worker", worker_ready, 60)
        except BaseException:
            self.stop()
            raise
        return self

    # What each process logs once it serves: the listener when its port is bound, Celery
    # when the worker consumes. Counting them tells a restart's line from an earlier one.
    _READY_LINES: ClassVar[dict[str, str]] = {
        "listener": "DICOM listener: AE title",
        "worker": " ready.",
    }

    def _ready_count(self, role: str) -> int:
        return self.full_log(role).count(self._READY_LINES[role])

    def _wait_ready(self, role: str, before: int, timeout: float) -> None:
        process = self.processes[role]
        wait_until(
            lambda: process.poll() is not None or self._ready_count(role) > before,
            timeout,
            f"the {role} to be ready",
        )
        assert process.poll() is None, self.log(role)

    def _apply(self, changes: dict[str, str | None]) -> None:
        for key, value in changes.items():
            name = f"ONFH_{key.upper()}"
            if value is None:
                self.env.pop(name, None)
            else:
                self.env[name] = value

    def restart_listener(self, **changes: str | None) -> None:
        """(Re)start the listener with changed ``ONFH_*`` settings (None removes one); wait
        until its DICOM port is bound (no C-ECHO: TLS and allow-lists may refuse us)."""
        self.stop_process("listener")
        self._apply(changes)
        before = self._ready_count("listener")
        self.start_process("listener")
        self._wait_ready("listener", before, 30)

    def restart_worker(self, **changes: str | None) -> None:
        """(Re)start the worker with changed settings; wait until Celery says it is ready."""
        self.stop_process("worker")
        self._apply(changes)
        before = self._ready_count("worker")
        self.start_process("worker")
        self._wait_ready("worker", before, 60)

    def stop_process(self, role: str, sig: int = signal.SIGTERM) -> None:
        process = self.processes.pop(role, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop(self) -> None:
        for role in list(self.processes):
            self.stop_process(role)
        self.pacs.stop()
        self.redis.stop()
        if self._db is not None:
            self._db.dispose()

    def log(self, role: str) -> str:
        path = self.root / f"{role}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def jobs_of(self, series_uid: str) -> list[Job]:
        return [j for j in self.db.jobs(limit=1000) if j.series_uid == series_uid]

    def wait_for_job(self, series_uid: str, states: set[str], timeout: float = 120) -> Job:
        """The newest job of a series once it is in one of ``states``."""
        found: list[Job] = []

        def ready() -> bool:
            jobs = sorted(self.jobs_of(series_uid), key=lambda j: j.generation)
            if jobs and jobs[-1].state in states:
                found[:] = [jobs[-1]]
                return True
            return False

        try:
            wait_until(ready, timeout, f"a job of {series_uid} in {sorted(states)}")
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\njobs: {self.jobs_of(series_uid)}\n--- worker\n{self.log('worker')}"
                f"\n--- listener\n{self.log('listener')}"
            ) from None
        return found[0]


__all__ = [
    "MODALITY_AE",
    "PACS_AE",
    "SERVICE_AE",
    "Cohort",
    "CohortMaker",
    "PhantomStudy",
    "Service",
    "phantom_studies",
    "studies_of",
    "wait_until",
]
