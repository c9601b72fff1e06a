"""Storage faults at service level: a full spool disk, and the state DB restarted mid-run.

Real processes throughout (Redis, listener, worker, a receiving PACS; see
``service_harness``). The spool's file system is a small tmpfs that the test fills; the
state DB is PostgreSQL in a private cluster that the test stops and starts while studies
are being received and scored. Each test prints what it ran and what was lost (nothing).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import Scale
from service_harness import MODALITY_AE, SERVICE_AE, CohortMaker, Service, wait_until

from listener.spool import TMP_DIR
from onfh_dlr.broker import free_port
from worker.scu import wait_for_echo

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
FINISHED = {"done", "failed", "dead_letter"}


# --- studies, pushes, the PACS -------------------------------------------------------------


def sr_uids_at_pacs(service: Service, study_uid: str) -> tuple[set[str], int]:
    """The distinct SR SOP Instance UIDs the PACS holds for a study, and how many stores."""
    srs = [r for r in service.pacs.received if r.modality == "SR" and r.study_uid == study_uid]
    return {r.sop_instance_uid for r in srs}, len(srs)


class UrlService(Service):
    """The harness's service, with a check that its processes are alive."""

    def assert_alive(self, *roles: str) -> None:
        for role in roles:
            process = self.processes.get(role)
            assert process is not None and process.poll() is None, (
                f"the {role} process died (exit {process.poll() if process else None}):\n"
                f"{self.log(role)}"
            )


# --- disk full -----------------------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(where: Path, size_mb: int) -> Iterator[Path]:
    """A tmpfs of ``size_mb`` MiB mounted at ``where`` (needs root), unmounted afterwards."""
    if shutil.which("mount") is None:
        pytest.fail("mount is required: run `make system-deps`")
    where.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert mounted.returncode == 0, (
        f"cannot mount a tmpfs (the test runs as root, as CI does): {mounted.stderr.strip()}"
    )
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(filler: Path, leave: int) -> int:
    """Write ``filler`` until only about ``leave`` bytes stay free; returns its size."""
    stat = os.statvfs(filler.parent)
    size = max(0, stat.f_bavail * stat.f_frsize - leave)
    with filler.open("wb") as fh:
        chunk = b"\0" * (1 << 20)
        written = 0
        while written < size:
            written += fh.write(chunk[: min(len(chunk), size - written)])
        fh.flush()
        os.fsync(fh.fileno())
    return size


def interleaved(paths: list[Path]) -> list[Path]:
    """Every other slice first: a partial push then has gaps and cannot look complete."""
    return paths[::2] + paths[1::2]


def test_a_full_spool_disk_refuses_with_out_of_resources_keeps_every_stored_instance_and_recovers(
    tmp_path: Path, phantom_cohort: CohortMaker
) -> None:
    (study,) = phantom_cohort(1, 4101, onfh_fraction=1.0).studies
    dbdir = tmp_path / "db"  # the state DB stays on the normal disk: only the spool fills
    dbdir.mkdir()
    size_mb = 48 + study.nbytes // (1 << 20) * 2
    with small_tmpfs(tmp_path / "spoolfs", size_mb) as data_dir:
        svc = UrlService(
            tmp_path / "service",
            data_dir=str(data_dir),
            database_url=f"sqlite:///{dbdir / 'state.db'}",
            series_timeout="60",  # the series must close at the complete push, not in between
        )
        svc.start()
        try:
            # Leave room for about 40 % of the study: the push runs into a full disk.
            filler = data_dir / "filler.bin"
            fill(filler, leave=int(study.nbytes * 0.4))
            order = interleaved(study.slices)
            answers: dict[Path, int] = {}
            statuses = svc.push(order, on_file=lambda path, code: answers.__setitem__(path, code))
            stored = [p for p in order if answers[p] == SUCCESS]
            refused = [p for p in order if answers[p] == OUT_OF_RESOURCES]
            others = {f"0x{c:04X}" for p, c in answers.items() if c not in (0, OUT_OF_RESOURCES)}
            print(
                f"disk full: {len(stored)} instances answered 0x0000, {len(refused)} answered "
                f"0xA700, other statuses {sorted(others)}"
            )
            assert stored and refused and not others, statuses
            assert answers[order[0]] == SUCCESS

            # Nothing partial: .tmp is empty and the spool holds exactly the instances
            # answered Success, each whole (readable to the last pixel, same pixels).
            spool = data_dir / "spool"
            assert list((spool / TMP_DIR).iterdir()) == []
            series_dir = spool / study.study_uid / study.series_uid
            on_disk = sorted(p for p in spool.rglob("*") if p.is_file() and TMP_DIR not in p.parts)
            assert all(p.parent == series_dir and p.suffix == ".dcm" for p in on_disk), on_disk
            sent = {
                str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in order
            }
            uids_ok = {
                str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in stored
            }
            assert {p.stem for p in on_disk} == uids_ok
            lost = 0
            for path in on_disk:
                ds = pydicom.dcmread(path)
                original = pydicom.dcmread(sent[path.stem])
                if not np.array_equal(ds.pixel_array, original.pixel_array):
                    lost += 1
            assert lost == 0, f"{lost} stored instances differ from what was sent"

            # The listener is still up and says why it refused.
            svc.assert_alive("listener", "worker")
            assert wait_for_echo(
                "127.0.0.1", svc.port, SERVICE_AE, timeout=10, calling_ae=MODALITY_AE
            )
            assert "out of resources" in svc.log("listener")
            assert svc.jobs_of(study.series_uid) == []  # the gappy series is still open

            # Space is freed: the modality sends the study again; everything is stored, the
            # series completes and is scored and delivered once.
            filler.unlink()
            assert set(svc.push(study.slices)) == {SUCCESS}
            job = svc.wait_for_job(study.series_uid, FINISHED, timeout=120)
            assert job.state == "done", job.reason
            assert len(list(series_dir.glob("*.dcm"))) == len(study.slices)
            assert list((spool / TMP_DIR).iterdir()) == []
            jobs = svc.jobs_of(study.series_uid)
            srs, _ = sr_uids_at_pacs(svc, study.study_uid)
            assert len(jobs) == 1 and srs == {job.sr_uid}
            svc.assert_alive("listener", "worker")
            print(
                f"disk full: 1 case, {len(study.slices)} instances, 0 lost "
                f"(study scored after space was freed: job {job.state})"
            )
        finally:
            svc.stop()


# --- PostgreSQL restarted mid-run -------------------------------------------------------------


def postgres_bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not found:
        pytest.fail("PostgreSQL is required: run `make system-deps`")
    return found[-1].parent


class PrivateCluster:
    """A throw-away PostgreSQL cluster on a free port, run as the ``postgres`` OS user.

    Its directory lives directly under the system temp dir (pytest's tmp_path is private
    to root, and PostgreSQL refuses to run as root). Host connections need the password.
    """

    def __init__(self, password: str) -> None:
        self.bindir = postgres_bindir()
        self.password = password
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="onfh-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "run"
        self.logfile = self.root / "postgres.log"
        shutil.chown(self.root, "postgres", "postgres")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres:{self.password}@127.0.0.1:{self.port}/onfh"

    def _run(self, *args: str, timeout: float = 60) -> None:
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, f"{args[0]}: {done.stdout}{done.stderr}{self.log()}"

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")[-3000:] if self.logfile.exists() else ""

    def init(self) -> PrivateCluster:
        self.sockets.mkdir()
        shutil.chown(self.sockets, "postgres", "postgres")
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        shutil.chown(pwfile, "postgres", "postgres")
        self._run(
            str(self.bindir / "initdb"),
            "-D", str(self.data), "-U", "postgres", "--no-sync", "-E", "UTF8",
            "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}",
        )  # fmt: skip
        pwfile.unlink()
        self.start()
        self._run(
            str(self.bindir / "createdb"), "-h", str(self.sockets), "-p", str(self.port), "onfh"
        )
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.sockets} -h 127.0.0.1"
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options,
            "-l", str(self.logfile), "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, down: float, mode: str = "fast") -> None:
        """Stop (``fast``: roll back and disconnect; ``immediate``: a crash), wait, start."""
        self.stop(mode)
        time.sleep(down)
        self.start()

    def destroy(self) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bindir / "pg_ctl"), "-D",
             str(self.data), "-m", "immediate", "stop"],
            capture_output=True, check=False, timeout=60,
        )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def postgres() -> Iterator[PrivateCluster]:
    if shutil.which("runuser") is None:
        pytest.fail("runuser is required: run `make system-deps`")
    cluster = PrivateCluster(password="pg-" + os.urandom(12).hex())
    try:
        yield cluster.init()
    finally:
        cluster.destroy()


def test_postgres_restarted_while_studies_are_received_and_scored_loses_no_job(
    tmp_path: Path, postgres: PrivateCluster, scale: Scale, phantom_cohort: CohortMaker
) -> None:
    studies = phantom_cohort(scale.studies, 4200, onfh_fraction=1.0).studies
    svc = UrlService(tmp_path / "service", database_url=postgres.url, series_timeout="3")
    svc.start()
    restarts: list[str] = []
    try:
        # 1. During the push: the database goes away (fast shutdown) while the studies
        #    arrive, and comes back a few seconds later.
        statuses: dict[str, list[int]] = {}
        errors: list[BaseException] = []

        def pusher() -> None:
            try:
                for study in studies:
                    statuses[study.series_uid] = svc.push(study.slices)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        thread = threading.Thread(target=pusher, name="pusher")
        first_dir = svc.data_dir / "spool" / studies[0].study_uid / studies[0].series_uid
        thread.start()
        wait_until(lambda: len(list(first_dir.glob("*.dcm"))) >= 3, 60, "the push to start")
        postgres.restart(down=3.0, mode="fast")
        restarts.append("fast stop during push, 3 s down")
        thread.join(120)
        assert not thread.is_alive() and not errors, errors
        for study in studies:
            assert set(statuses[study.series_uid]) == {SUCCESS}, statuses[study.series_uid]

        # 2. During scoring: each time a job is running, the database goes down (immediate
        #    stop: connections cut mid-transaction, crash recovery at start; or fast) and
        #    stays down until the worker has run into it (or 20 s), then comes back.
        during_scoring = 3 if scale.full else 1
        worker_hits = 0

        def retries() -> int:
            return svc.full_log("worker").count("transient error")

        def retried_since(count: int) -> bool:
            return retries() > count

        for i in range(during_scoring):

            def running() -> bool:
                with contextlib.suppress(Exception):
                    return bool(svc.db.jobs(states=["running"]))
                return False

            if i > 0 and all(
                any(j.state == "done" for j in svc.jobs_of(s.series_uid)) for s in studies
            ):
                break
            wait_until(running, 120, "a job to be running")
            mode = "immediate" if i % 2 == 0 else "fast"
            before = retries()
            postgres.stop(mode)
            started = time.monotonic()
            with contextlib.suppress(AssertionError):
                wait_until(partial(retried_since, before), 20, "the worker to retry")
            time.sleep(1.0)
            hit = retries() > before
            worker_hits += hit
            postgres.start()
            restarts.append(
                f"{mode} stop during scoring, {time.monotonic() - started:.0f} s down"
                + (", worker retried" if hit else "")
            )

        lost = []
        for study in studies:
            try:
                job = svc.wait_for_job(study.series_uid, {"done"}, timeout=240)
            except AssertionError as exc:
                lost.append(f"{study.series_uid}: {exc}")
                continue
            srs, stores = sr_uids_at_pacs(svc, study.study_uid)
            if srs != {job.sr_uid}:
                lost.append(f"{study.series_uid}: SRs at the PACS {srs} (stored {stores}x)")
        svc.assert_alive("listener", "worker")
        print(
            f"postgres restarts: {len(restarts)} ({'; '.join(restarts)}), "
            f"{len(studies)} studies, {sum(len(s.slices) for s in studies)} instances, "
            f"{len(lost)} lost"
        )
        assert lost == [], "\n".join(lost)
        assert worker_hits >= 1, "no outage reached the worker: the test proved nothing there"
        for study in studies:
            states = sorted(j.state for j in svc.jobs_of(study.series_uid))
            assert states.count("done") == 1, states
        # Database errors were logged, never the connection password.
        for role in ("listener", "worker"):
            assert postgres.password not in svc.full_log(role)
        # A process that cannot reach the database names it without the password.
        postgres.stop("fast")
        cli = subprocess.run(
            [sys.executable, "-m", "onfh_dlr", "status"],
            env=svc.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert cli.returncode != 0 and "Connection refused" in cli.stdout + cli.stderr
        assert postgres.password not in cli.stdout + cli.stderr, (
            f"the DB password is in the {role} log"
        )
    finally:
        svc.stop()
