"""Seconds from series close to the SR at the destination, for two-hip studies.

Run: ``.venv/bin/python bench/result_latency.py [--studies 5] [--work DIR]``. Starts the
service as the integration tests do (real Redis, ``python -m onfh_dlr listener`` and
``worker`` processes, a receiving Storage SCP as the destination PACS), pushes a warm-up
study and waits for its SR (the worker's pool process loads the bundle at start-up; the
first job pays the remaining imports), then pushes ``--studies`` further phantom studies
one at a time, each after the previous one's SR arrived, so that none waits in the queue.

Per study it prints the push, and from the state DB's timeline (``closed``, ``started``,
``scored``, ``delivered``) and the SR file's arrival at the PACS: end of push -> close,
close -> started, started -> scored, scored -> delivered (SEG then SR over one association)
and close -> SR at the PACS, then the median and max of the last (the issue's aim: <= 10 s).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pydicom

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


@dataclass(frozen=True)
class Timing:
    """Where the time of one study went (seconds)."""

    slices: int
    push: float
    end_to_close: float
    close_to_started: float
    started_to_scored: float
    scored_to_delivered: float
    close_to_sr: float


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


def run_study(service: Service, study: Study, timeout: float) -> Timing:
    """Push one study, wait for its SR and its job to finish, read the timeline."""
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
    return Timing(
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


def print_row(name: str, study: Study, t: Timing) -> None:
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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="latency-bench-") as tmp:
        root = args.work or Path(tmp)
        print(f"writing {args.studies + 1} phantom studies ...", flush=True)
        studies = [
            make_study(root / "studies", args.seed + k, onfh=k % 2 == 0)
            for k in range(args.studies + 1)
        ]
        service = Service(root / f"service-{time.time_ns()}")
        try:
            started = time.monotonic()
            service.start()
            print(f"service up (listener answers C-ECHO) in {time.monotonic() - started:.1f} s")
            print("seconds per study (state DB timeline; SR: file written at the PACS):")
            print_header()
            warm = run_study(service, studies[0], args.timeout)
            print_row("warm-up", studies[0], warm)
            timings = []
            for k, study in enumerate(studies[1:], start=1):
                timings.append(run_study(service, study, args.timeout))
                print_row(f"study {k}", study, timings[-1])
        finally:
            service.stop()
        summarize(warm, timings)


def summarize(warm: Timing, timings: list[Timing]) -> None:
    """Median and max of close -> SR."""
    if timings:
        latency = [t.close_to_sr for t in timings]
        scoring = [t.started_to_scored for t in timings]
        print(
            f"close -> SR at the PACS over {len(timings)} studies: median"
            f" {statistics.median(latency):.2f} s, max {max(latency):.2f} s (aim <= 10 s);"
            f" of which scoring (started -> scored): median {statistics.median(scoring):.2f} s"
        )
    print(f"warm-up study (first job of the worker): close -> SR {warm.close_to_sr:.2f} s")


if __name__ == "__main__":
    main()
