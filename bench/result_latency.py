"""Seconds from series close to the SR at the destination, for two-hip studies.

Run: ``.venv/bin/python bench/result_latency.py [--studies 5 | --at-once 4 --rounds 3]
[--work DIR] [--json PATH]``. Starts the service as the integration tests do (real Redis,
``python -m onfh_dlr listener`` and ``worker`` processes, a receiving Storage SCP as the
destination PACS), pushes a warm-up study and waits for its SR (the worker's pool process
loads the bundle at start-up; the first job pays the remaining imports), then pushes
``--studies`` further phantom studies one at a time, each after the previous one's SR
arrived, so that none waits in the queue.
With ``--at-once N`` it pushes instead ``--rounds`` rounds of N studies together (N threads,
one association each, released at once), waits for all N SRs, then starts the next round:
several modalities finishing a series at the same moment.

Per study it prints the push, and from the state DB's timeline (``closed``, ``started``,
``scored``, ``delivered``) and the SR file's arrival at the PACS: end of push -> close,
close -> started, started -> scored, scored -> delivered (SEG then SR over one association)
and close -> SR at the PACS, then the median and max of the last (the issue's aim: <= 10 s).
``--json PATH`` also writes every study's timing as a ``bench_records.LatencyRecord`` (read
by ``summary.py``). ``TCP_NODELAY=1`` is set for every process, as the other benches do.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pydicom
from bench_records import LatencyRecord, StudyTiming, write_record

from phantom.cohort import generate_cohort
from worker.scu import STORED_STATUSES, store_files

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from service_harness import MODALITY_AE, SERVICE_AE, Service

FINISHED = {"done", "failed", "dead_letter"}
STAGES = ("closed", "started", "scored", "delivered")


@dataclass(frozen=True)
class Study:
    """One phantom study on disk."""

    seed: int
    slices: list[Path]
    study_uid: str
    series_uid: str
    truth: str  # e.g. "R=1 L=0"


def make_study(root: Path, seed: int, onfh: bool) -> Study:
    """Write one phantom study (both hips in one coronal series)."""
    cohort = generate_cohort(root / str(seed), cases=1, seed=seed, onfh_fraction=float(onfh))
    rows = list(csv.DictReader(cohort.open(encoding="utf-8")))
    slices = sorted((cohort.parent / rows[0]["Image"]).glob("*.dcm"))
    first = pydicom.dcmread(slices[0], stop_before_pixels=True)
    truth = " ".join(f"{r['Side']}={r['Label']}" for r in rows)
    return Study(seed, slices, str(first.StudyInstanceUID), str(first.SeriesInstanceUID), truth)


def wait_for_sr(service: Service, study: Study, timeout: float) -> float:
    """Wait for the study's SR at the PACS; return when its file was written (epoch s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for item in service.pacs.received:
            if item.modality == "SR" and item.study_uid == study.study_uid:
                return item.path.stat().st_mtime
        srs = sum(r.modality == "SR" for r in service.pacs.received)
        service.pacs.wait_for("SR", count=srs + 1, timeout=0.5)
        for role, process in service.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"the {role} exited: {service.log(role)}")
    raise RuntimeError(
        f"no SR for study seed {study.seed} within {timeout:.0f} s; jobs: "
        f"{service.jobs_of(study.series_uid)}\n--- worker\n{service.log('worker')}"
    )


def push_study(service: Service, study: Study) -> tuple[float, float]:
    """Push one study over one association; when the push began and ended (epoch s)."""
    start = time.time()
    statuses = store_files(
        study.slices,
        host="127.0.0.1",
        port=service.port,
        called_ae=SERVICE_AE,
        calling_ae=MODALITY_AE,
    )
    pushed = time.time()
    refused = [s for s in statuses if s not in STORED_STATUSES]
    if refused:
        raise RuntimeError(f"{len(refused)} instances refused (status 0x{refused[0]:04X})")
    return start, pushed


def run_study(service: Service, study: Study, timeout: float) -> StudyTiming:
    """Push one study, wait for its SR and its job to finish, read the timeline."""
    start, pushed = push_study(service, study)
    return timing_of(service, study, start, pushed, timeout)


def run_round(service: Service, studies: list[Study], timeout: float) -> list[StudyTiming]:
    """Push ``studies`` together, one thread and association each; wait for every SR."""
    # The barrier releases every sender at once, so no push gets a head start while the
    # others are still building their association.
    barrier = threading.Barrier(len(studies))

    def send(study: Study) -> tuple[float, float]:
        barrier.wait()
        return push_study(service, study)

    with ThreadPoolExecutor(max_workers=len(studies)) as pool:
        pushes = [f.result() for f in [pool.submit(send, study) for study in studies]]
    return [
        timing_of(service, study, start, pushed, timeout)
        for study, (start, pushed) in zip(studies, pushes, strict=True)
    ]


def timing_of(
    service: Service, study: Study, start: float, pushed: float, timeout: float
) -> StudyTiming:
    """Wait for a pushed study's SR and its job to finish; read the timeline."""
    sr_at = wait_for_sr(service, study, timeout)
    job = service.wait_for_job(study.series_uid, FINISHED, timeout=timeout)
    if job.state != "done":
        raise RuntimeError(f"job {job.id} ended {job.state}: {job.reason}")
    at: dict[str, float] = {}
    for event in service.db.events(study.series_uid):
        if event.job_id == job.id:
            at.setdefault(event.stage, event.at)
    missing = [s for s in STAGES if s not in at]
    if missing:
        raise RuntimeError(f"job {job.id}: no {', '.join(missing)} event")
    return StudyTiming(
        slices=len(study.slices),
        push=pushed - start,
        end_to_close=at["closed"] - pushed,
        close_to_started=at["started"] - at["closed"],
        started_to_scored=at["scored"] - at["started"],
        scored_to_delivered=at["delivered"] - at["scored"],
        close_to_sr=sr_at - at["closed"],
    )


COLUMNS = (
    "slices",
    "truth",
    "push",
    "end>close",
    "close>start",
    "start>scored",
    "scored>deliv",
    "close>SR",
)


def print_header() -> None:
    print(f"  {'':8} {COLUMNS[0]:>6}  {COLUMNS[1]:9}" + "".join(f" {c:>12}" for c in COLUMNS[2:]))


def print_row(name: str, study: Study, t: StudyTiming) -> None:
    values = (
        t.push,
        t.end_to_close,
        t.close_to_started,
        t.started_to_scored,
        t.scored_to_delivered,
        t.close_to_sr,
    )
    print(
        f"  {name:8} {t.slices:6d}  {study.truth:9}" + "".join(f" {v:12.2f}" for v in values),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--studies", type=int, default=5)
    parser.add_argument("--seed", type=int, default=700, help="seed of the first study")
    parser.add_argument("--work", type=Path, default=None, help="keep files and logs here")
    parser.add_argument("--timeout", type=float, default=240.0, help="per study, seconds")
    parser.add_argument(
        "--at-once",
        type=int,
        default=1,
        help="push this many studies together in each round (1: one at a time, --studies)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of --at-once studies")
    parser.add_argument("--json", type=Path, default=None, help="also write the timings here")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="scoring pool processes (ONFH_WORKER_CONCURRENCY; default: serve's own)",
    )
    args = parser.parse_args()
    if args.at_once < 1 or args.rounds < 1:
        parser.error("--at-once and --rounds must be at least 1")
    os.environ["TCP_NODELAY"] = "1"  # every process started below inherits it
    at_once = args.at_once
    count = args.studies if at_once == 1 else at_once * args.rounds
    with tempfile.TemporaryDirectory(prefix="latency-bench-") as tmp:
        root = args.work or Path(tmp)
        print(f"writing {count + 1} phantom studies ...", flush=True)
        studies = [
            make_study(root / "studies", args.seed + k, onfh=k % 2 == 0) for k in range(count + 1)
        ]
        settings = {} if args.concurrency is None else {"worker_concurrency": str(args.concurrency)}
        service = Service(root / f"service-{time.time_ns()}", **settings)
        try:
            started = time.monotonic()
            service.start()
            print(f"service up (listener answers C-ECHO) in {time.monotonic() - started:.1f} s")
            print("seconds per study (state DB timeline; SR: file written at the PACS):")
            print_header()
            warm = run_study(service, studies[0], args.timeout)
            print_row("warm-up", studies[0], warm)
            timings = []
            if at_once == 1:
                for k, study in enumerate(studies[1:], start=1):
                    timings.append(run_study(service, study, args.timeout))
                    print_row(f"study {k}", study, timings[-1])
            else:
                for r in range(args.rounds):
                    group = studies[1 + r * at_once : 1 + (r + 1) * at_once]
                    for k, (study, timing) in enumerate(
                        zip(group, run_round(service, group, args.timeout), strict=True), start=1
                    ):
                        timings.append(timing)
                        print_row(f"r{r + 1} #{k}", study, timing)
        finally:
            service.stop()
        if at_once == 1:
            summarize(warm, timings)
        else:
            summarize_at_once(warm, timings, at_once, args.rounds)
        if args.json:
            rounds = len(timings) if at_once == 1 else args.rounds
            write_record(LatencyRecord(at_once, rounds, warm, timings), args.json)


def summarize_at_once(
    warm: StudyTiming, timings: list[StudyTiming], at_once: int, rounds: int
) -> None:
    """Median and max of close -> SR over every study of every round."""
    latency = [t.close_to_sr for t in timings]
    queue = [t.close_to_started for t in timings]
    print(
        f"close -> SR at the PACS, {at_once} studies at once, {rounds} round"
        f"{'s' if rounds != 1 else ''}: median"
        f" {statistics.median(latency):.2f} s, max {max(latency):.2f} s (aim: median <= 3 s,"
        f" max <= 5 s); of which waiting in the queue (close -> started): median"
        f" {statistics.median(queue):.2f} s, max {max(queue):.2f} s"
    )
    print(f"warm-up study (first job of the worker): close -> SR {warm.close_to_sr:.2f} s")


def summarize(warm: StudyTiming, timings: list[StudyTiming]) -> None:
    """Median and max of close -> SR."""
    if timings:
        latency = [t.close_to_sr for t in timings]
        scoring = [t.started_to_scored for t in timings]
        print(
            f"close -> SR at the PACS over {len(timings)} studies: median"
            f" {statistics.median(latency):.2f} s, max {max(latency):.2f} s"
            " (aim: median <= 3 s, max <= 5 s);"
            f" of which scoring (started -> scored): median {statistics.median(scoring):.2f} s"
        )
    print(f"warm-up study (first job of the worker): close -> SR {warm.close_to_sr:.2f} s")


if __name__ == "__main__":
    main()
