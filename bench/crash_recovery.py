"""Seconds to a result after ``kill -9`` of ``serve``'s scoring worker mid-study.

Run: ``.venv/bin/python bench/crash_recovery.py [--rounds 3] [--work DIR] [--json PATH]``.
Starts ``onfh-dlr serve`` as an administrator does (its embedded Redis, listener, scoring
worker, delivery worker; the broker's 900 s visibility timeout left as it is) with a
receiving Storage SCP as the destination PACS, as
``tests/reliability/test_worker_loss.py`` does. Pushes a warm-up study and waits for its
SR; then, per round, pushes a two-hip phantom study, waits until the state DB says its job
is ``running``, waits a moment so that the kill lands mid-study, and kills the scoring
worker's main process with SIGKILL (as ``kill -9 <pid>`` does). It measures:

- kill -> worker back: ``serve`` restarted it and the new worker logs Celery's "ready.";
- worker back -> SR at the PACS (issue 16's aim: <= 60 s), and kill -> SR;
- kill -> the job's ``requeued`` event, and who requeued it (``serve`` reaping its child,
  or a liveness pass -- ``serve``'s or the listener's -- finding the pid gone);
- how many SRs of the study the PACS received (after a grace of ``--grace`` s) and how the
  job ended: the aim is exactly one SR and ``done``.

It prints a row per round and the median and max; ``--json PATH`` writes the rounds as a
``bench_records.CrashRecord`` (read by ``summary.py``). ``TCP_NODELAY=1`` is set for every
process, as the other benches do. The exit status is 1 if a wait timed out (the SR, the
restarted worker) or ``serve`` exited; the aims are judged in the printout, not the status.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
from bench_records import CrashRecord, CrashRound, RequeuedBy, write_record

from onfh_dlr.broker import free_port
from onfh_dlr.cli.demo import MODALITY_AE, PACS_AE, SERVICE_AE, service_environment
from onfh_dlr.cli.receiver import Receiver
from onfh_dlr.state import Job, StateDB
from phantom.dicom_writer import write_series
from phantom.generator import generate_study
from worker.scu import STORED_STATUSES, store_files, wait_for_echo

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from service_harness import serve_process

FINISHED = {"done", "failed", "dead_letter"}
#: Issue 16's aim: the SR at the destination at most this long after the worker is back.
BACK_TO_SR_AIM = 60.0


def poll(predicate: Callable[[], bool], timeout: float, what: str, every: float = 0.1) -> None:
    """Call ``predicate`` until it is true; RuntimeError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class Served:
    """``onfh-dlr serve`` under test, its log, its state DB and the receiving PACS."""

    process: subprocess.Popen[bytes]
    log_path: Path
    port: int
    pacs: Receiver
    db: StateDB

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pid(self) -> int | None:
        """The pid of the scoring worker ``serve`` runs now (not the delivery worker)."""
        for child in psutil.Process(self.process.pid).children():
            try:
                command = child.cmdline()
            except psutil.NoSuchProcess:
                continue
            if "worker" in command and "--delivery-only" not in command:
                return int(child.pid)
        return None

    def ready(self, pid: int) -> bool:
        """Whether worker ``pid`` consumes: Celery logs "<node name> ready.", and the node
        name carries the pid (``worker/main.py``)."""
        return any(
            f"onfh-worker-{pid}-" in line and " ready." in line for line in self.log().splitlines()
        )

    def job(self, series_uid: str) -> Job | None:
        """The newest job of a series."""
        jobs = sorted(self.db.jobs_of_series([series_uid]), key=lambda j: j.generation)
        return jobs[-1] if jobs else None

    def srs(self, study_uid: str) -> list[str]:
        """The SOP Instance UID of every SR of the study the PACS received, as often as it
        came."""
        return [
            r.sop_instance_uid
            for r in self.pacs.received
            if r.modality == "SR" and r.study_uid == study_uid
        ]

    def sr_written_at(self, study_uid: str) -> float | None:
        """When the study's first SR file was written at the PACS (epoch s)."""
        for item in self.pacs.received:
            if item.modality == "SR" and item.study_uid == study_uid:
                return item.path.stat().st_mtime
        return None

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(
                f"serve exited with {self.process.returncode}:\n{self.log()[-4000:]}"
            )


@contextmanager
def serve(root: Path, timeout: float) -> Iterator[Served]:
    """``onfh-dlr serve`` sending to a receiving PACS, once both its workers are ready."""
    port, pacs_port = free_port(), free_port()
    env = service_environment(dict(os.environ), root / "service", port, pacs_port)
    env["ONFH_SERIES_TIMEOUT"] = "4"  # as the reliability test: close the series sooner
    root.mkdir(parents=True, exist_ok=True)
    log_path = root / "serve.log"
    db: StateDB | None = None
    try:
        with (
            Receiver(root / "pacs", pacs_port, ae_title=PACS_AE) as pacs,
            serve_process(env, log_path) as process,
        ):
            if not wait_for_echo("127.0.0.1", port, SERVICE_AE, timeout, calling_ae=MODALITY_AE):
                raise RuntimeError(
                    f"serve's listener did not answer C-ECHO:\n{log_path.read_text()}"
                )
            db = StateDB.for_settings(None, root / "service")
            served = Served(process, log_path, port, pacs, db)
            poll(lambda: served.log().count(" ready.") >= 2, timeout, "both workers to be ready")
            yield served
    finally:
        if db is not None:
            db.dispose()


@dataclass(frozen=True)
class Study:
    """One phantom study on disk."""

    slices: list[Path]
    study_uid: str
    series_uid: str


def write_study(root: Path, seed: int, index: int) -> Study:
    """A two-hip phantom study (the right hip with early ONFH in every other one)."""
    phantom = generate_study(seed, index, (index % 2 == 0, False))
    datasets = write_series(phantom, root / f"study-{index}")
    return Study(
        sorted((root / f"study-{index}").glob("*.dcm")),
        str(datasets[0].StudyInstanceUID),
        str(datasets[0].SeriesInstanceUID),
    )


def push(served: Served, study: Study) -> None:
    statuses = store_files(
        study.slices,
        host="127.0.0.1",
        port=served.port,
        called_ae=SERVICE_AE,
        calling_ae=MODALITY_AE,
    )
    refused = [s for s in statuses if s not in STORED_STATUSES]
    if refused:
        raise RuntimeError(f"{len(refused)} instances refused (status 0x{refused[0]:04X})")


def wait_finished(served: Served, study: Study, timeout: float) -> Job:
    found: list[Job] = []

    def finished() -> bool:
        served.check_alive()
        job = served.job(study.series_uid)
        if job is not None and job.state in FINISHED:
            found.append(job)
            return True
        return False

    poll(finished, timeout, f"the job of {study.series_uid} to finish", every=0.2)
    return found[0]


def requeued_by(detail: str) -> RequeuedBy:
    """Who requeued the job, from the wording of its ``requeued`` event.

    The wordings are ``onfh_dlr.cli.supervisor`` (serve reaping its child) and
    ``onfh_dlr.liveness`` (a liveness pass: the pid gone, no heartbeat, offline); the
    state DB keeps only the text, so this is the one place that reads it.
    """
    if "killed by signal" in detail or " exited with " in detail:
        return RequeuedBy.SERVE_REAPER
    if detail.startswith("worker process ") and " is gone" in detail:
        return RequeuedBy.PID_GONE
    if detail.startswith("no heartbeat from worker"):
        return RequeuedBy.NO_HEARTBEAT
    if "went offline" in detail:
        return RequeuedBy.WENT_OFFLINE
    return RequeuedBy.UNKNOWN


def crash_round(
    served: Served, study: Study, *, settle: float, grace: float, timeout: float
) -> CrashRound:
    """Push ``study``, kill the scoring worker while it scores it, time the recovery."""
    victim = served.worker_pid()
    if victim is None or not served.ready(victim):
        raise RuntimeError("no ready scoring worker to kill")
    push(served, study)

    def scoring() -> bool:
        served.check_alive()
        job = served.job(study.series_uid)
        return job is not None and job.state in {"running", *FINISHED}

    poll(scoring, timeout, "the study to be scored", every=0.05)
    time.sleep(settle)  # scoring takes seconds: the kill lands mid-study
    job = served.job(study.series_uid)
    if job is None or job.state != "running" or job.worker is None or job.worker.pid != victim:
        raise RuntimeError(f"the kill would not land mid-study: {job}")
    killed = time.time()
    os.kill(victim, signal.SIGKILL)  # the worker's main process, as `kill -9 <pid>` does

    back: list[float] = []

    def restarted() -> bool:
        served.check_alive()
        pid = served.worker_pid()
        if pid is not None and pid != victim and served.ready(pid):
            back.append(time.time())
            return True
        return False

    poll(restarted, timeout, "the scoring worker to be back")
    arrived: list[float] = []

    def sr_arrived() -> bool:
        served.check_alive()
        at = served.sr_written_at(study.study_uid)
        if at is not None:
            arrived.append(at)
        return at is not None

    poll(sr_arrived, timeout, "the SR at the PACS")
    done = wait_finished(served, study, timeout)
    time.sleep(grace)  # a second SR, if one were sent, would have come by now
    srs = served.srs(study.study_uid)
    requeues = [e for e in served.db.events(study.series_uid) if e.stage == "requeued"]
    detail = requeues[0].detail if requeues else ""
    return CrashRound(
        killed_to_back=back[0] - killed,
        # The SR file can be written while the poll above still waits to see "ready.".
        back_to_sr=arrived[0] - back[0],
        killed_to_sr=arrived[0] - killed,
        killed_to_requeued=requeues[0].at - killed if requeues else None,
        requeued_by=requeued_by(detail) if requeues else RequeuedBy.NOT_REQUEUED,
        requeue_detail=detail,
        sr_received=len(srs),
        sr_distinct=len(set(srs)),
        job_state=done.state,
        attempts=done.attempts,
    )


def print_header() -> None:
    print(
        f"  {'round':5} {'kill>back':>10} {'back>SR':>8} {'kill>SR':>8} {'kill>requeue':>13}"
        f"  {'SRs':>3}  {'job':6} {'tries':>5}  requeued by"
    )


def print_row(k: int, r: CrashRound) -> None:
    requeue = "—" if r.killed_to_requeued is None else f"{r.killed_to_requeued:.2f}"
    print(
        f"  {k:5d} {r.killed_to_back:10.2f} {r.back_to_sr:8.2f} {r.killed_to_sr:8.2f}"
        f" {requeue:>13}  {r.sr_received:3d}  {r.job_state:6} {r.attempts:5d}"
        f"  {r.requeued_by.value} ({r.requeue_detail})",
        flush=True,
    )


def summarize(rounds: list[CrashRound]) -> None:
    """Median and max of each interval; the aim and whether every round had one result."""
    for name, values in (
        ("kill -> worker back", [r.killed_to_back for r in rounds]),
        ("worker back -> SR", [r.back_to_sr for r in rounds]),
        ("kill -> SR", [r.killed_to_sr for r in rounds]),
    ):
        print(f"{name:20} median {statistics.median(values):6.2f} s, max {max(values):6.2f} s")
    worst = max(r.back_to_sr for r in rounds)
    single = sum(r.exactly_one_result for r in rounds)
    print(
        f"aim: worker back -> SR <= {BACK_TO_SR_AIM:g} s"
        f" ({'met' if worst <= BACK_TO_SR_AIM else 'NOT met'}: max {worst:.2f} s);"
        f" exactly one SR and the job done in {single} of {len(rounds)} rounds"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="studies whose worker is killed")
    parser.add_argument("--seed", type=int, default=2200, help="phantom cohort seed")
    parser.add_argument("--settle", type=float, default=0.3, help="running -> kill, seconds")
    parser.add_argument("--grace", type=float, default=3.0, help="wait for a second SR, s")
    parser.add_argument("--timeout", type=float, default=300.0, help="per wait, seconds")
    parser.add_argument("--work", type=Path, default=None, help="keep files and logs here")
    parser.add_argument("--json", type=Path, default=None, help="also write the rounds here")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    os.environ["TCP_NODELAY"] = "1"  # every process started below inherits it
    with tempfile.TemporaryDirectory(prefix="crash-bench-") as tmp:
        root = (args.work or Path(tmp)).resolve()
        print(f"writing {args.rounds + 1} phantom studies ...", flush=True)
        warm, *studies = [
            write_study(root / "studies", args.seed, k) for k in range(args.rounds + 1)
        ]
        started = time.monotonic()
        with serve(root / f"serve-{time.time_ns()}", args.timeout) as served:
            print(f"serve up, both workers ready, in {time.monotonic() - started:.1f} s")
            try:
                push(served, warm)
                poll(
                    lambda: served.sr_written_at(warm.study_uid) is not None,
                    args.timeout,
                    "the warm-up study's SR",
                )
                wait_finished(served, warm, args.timeout)
                print("warm-up study's SR arrived; seconds per round:", flush=True)
                print_header()
                rounds = []
                for k, study in enumerate(studies, start=1):
                    rounds.append(
                        crash_round(
                            served,
                            study,
                            settle=args.settle,
                            grace=args.grace,
                            timeout=args.timeout,
                        )
                    )
                    print_row(k, rounds[-1])
            except BaseException:
                print(served.log()[-4000:], file=sys.stderr)
                raise
    summarize(rounds)
    if args.json:
        write_record(CrashRecord(rounds), args.json)


if __name__ == "__main__":
    main()
