"""Studies per hour through ``onfh-dlr serve`` on this machine, and memory per process.

Run: ``.venv/bin/python bench/throughput.py [--studies 12] [--concurrency 2] [--sites
ge-3t,philips-3t,canon-stir-1.5t,siemens-1.5t] [--json PATH]``. Writes two-hip phantom
studies of several site profiles (auto-ROI, as a PACS routes them: no SEG), starts ``serve``
as an administrator does (its embedded Redis, listener, scoring worker with
``--concurrency`` pool processes, delivery worker) with a receiving Storage SCP as the
destination, pushes a warm-up study and waits for its SR, then pushes every study back to
back, one association each, and waits until every job has finished. It prints:

- studies/h: the studies divided by the time from the first push to the last job's end;
- per study, from the state DB's timeline: close -> started (queue), started -> scored,
  scored -> delivered; and how each job ended;
- the peak resident memory of every process of ``serve``'s tree, sampled every 0.5 s.

``--json PATH`` also writes these as a ``bench_records.ThroughputRecord`` (read by
``summary.py``).

``TCP_NODELAY=1`` is set for every process (DCMTK peers read it; ours sets it anyway).
Where a study's CPU time goes step by step: ``bench/scoring_profile.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import psutil
from bench_records import ProcessMemory, ThroughputRecord, write_record

from onfh_dlr.broker import free_port
from onfh_dlr.cli.demo import (
    MODALITY_AE,
    PACS_AE,
    SERVICE_AE,
    running_service,
    service_environment,
)
from onfh_dlr.cli.receiver import Receiver
from onfh_dlr.state import StateDB
from phantom.dicom_writer import write_series
from phantom.generator import generate_study
from worker.scu import STORED_STATUSES, store_files, wait_for_echo

FINISHED = {"done", "failed", "dead_letter"}


def write_studies(root: Path, count: int, sites: list[str], seed: int) -> list[list[Path]]:
    """``count`` two-hip studies, sites in turn, about a third with one ONFH hip."""
    studies = []
    for k in range(count):
        folder = root / f"study-{k}"
        onfh = (k % 3 == 0, k % 3 == 1)
        write_series(generate_study(seed, k, onfh, site=sites[k % len(sites)]), folder)
        studies.append(sorted(folder.glob("*.dcm")))
    return studies


def role_of(process: psutil.Process) -> str:
    """A short name for a process of serve's tree."""
    line = " ".join(process.cmdline())
    parent = process.parent()
    if "onfh_dlr worker" in line and parent and "onfh_dlr worker" in " ".join(parent.cmdline()):
        # Celery's prefork pool processes are forks of the worker: same command line.
        return "scoring pool process"
    for needle, role in (
        ("redis-server", "redis"),
        ("onfh_dlr listener", "listener"),
        ("delivery", "delivery worker"),
        ("onfh_dlr worker", "scoring worker (parent)"),
        ("serve", "serve (supervisor)"),
    ):
        if needle in line:
            return role
    return process.name()


class MemorySampler(threading.Thread):
    """Peak RSS per process of a tree, sampled every 0.5 s."""

    def __init__(self, root_pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(root_pid)
        self.peak: dict[int, tuple[str, int]] = {}
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            try:
                tree = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for process in tree:
                try:
                    rss = process.memory_info().rss
                    role = role_of(process)
                except psutil.Error:
                    continue
                if rss > self.peak.get(process.pid, ("", 0))[1]:
                    self.peak[process.pid] = (role, rss)


def push(files: list[Path], port: int) -> None:
    statuses = store_files(
        files, host="127.0.0.1", port=port, called_ae=SERVICE_AE, calling_ae=MODALITY_AE
    )
    refused = [s for s in statuses if s not in STORED_STATUSES]
    if refused:
        raise RuntimeError(f"{len(refused)} instances refused (status 0x{refused[0]:04X})")


def wait_jobs(db: StateDB, series: int, timeout: float) -> float:
    """Wait until ``series`` series have a finished job and none is pending; when (epoch)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = db.jobs(limit=10_000)
        finished = [j for j in jobs if j.state in FINISHED]
        if len({j.series_uid for j in finished}) >= series and len(finished) == len(jobs):
            return max(j.finished_at or 0.0 for j in finished)
        time.sleep(0.2)
    raise RuntimeError(f"jobs not finished within {timeout:.0f} s: {db.jobs(limit=10_000)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--studies", type=int, default=12)
    parser.add_argument("--concurrency", type=int, default=2, help="scoring pool processes")
    parser.add_argument("--sites", default="ge-3t,philips-3t,canon-stir-1.5t,siemens-1.5t")
    parser.add_argument("--seed", type=int, default=1600)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    sites = args.sites.split(",")
    os.environ["TCP_NODELAY"] = "1"
    with tempfile.TemporaryDirectory(prefix="throughput-bench-") as tmp:
        root = Path(tmp)
        print(f"writing {args.studies + 1} phantom studies ({', '.join(sites)}) ...", flush=True)
        warm, *studies = write_studies(root / "studies", args.studies + 1, sites, args.seed)
        port, pacs_port = free_port(), free_port()
        env = service_environment(dict(os.environ), root / "service", port, pacs_port)
        env["ONFH_WORKER_CONCURRENCY"] = str(args.concurrency)
        with (
            Receiver(root / "pacs", pacs_port, ae_title=PACS_AE) as pacs,
            (root / "serve.log").open("wb") as serve_log,
            running_service(env, serve_log) as serve,
        ):
            sampler = MemorySampler(serve.pid)
            sampler.start()
            try:
                if not wait_for_echo("127.0.0.1", port, SERVICE_AE, 120, calling_ae=MODALITY_AE):
                    raise RuntimeError("serve's listener did not answer C-ECHO")
                push(warm, port)
                pacs.wait_for("SR", timeout=args.timeout)
                db = StateDB.for_settings(None, root / "service")
                wait_jobs(db, 1, args.timeout)
                start = time.time()
                for files in studies:
                    push(files, port)
                pushed = time.time()
                end = wait_jobs(db, args.studies + 1, args.timeout)
                result = record(db, args, start, pushed, end, sampler)
                report(result)
                if args.json:
                    write_record(result, args.json)
            except BaseException:
                print((root / "serve.log").read_text(errors="replace")[-4000:], file=sys.stderr)
                raise
            finally:
                sampler.stopped.set()


def record(
    db: StateDB,
    args: argparse.Namespace,
    start: float,
    pushed: float,
    end: float,
    sampler: MemorySampler,
) -> ThroughputRecord:
    """The run's figures, from the state DB's timeline and the memory samples."""
    jobs = [j for j in db.jobs(limit=10_000) if (j.created_at or 0.0) >= start - 1.0]
    queue, scoring, delivery = [], [], []
    for job in jobs:
        at: dict[str, float] = {}
        for event in db.events(job.series_uid):
            if event.job_id == job.id:
                at.setdefault(event.stage, event.at)
        if {"closed", "started", "scored", "delivered"} <= set(at):
            queue.append(at["started"] - at["closed"])
            scoring.append(at["scored"] - at["started"])
            delivery.append(at["delivered"] - at["scored"])
    states: dict[str, int] = defaultdict(int)
    for job in jobs:
        states[job.state] += 1
    return ThroughputRecord(
        studies=args.studies,
        concurrency=args.concurrency,
        cpus=os.cpu_count() or 1,
        push_seconds=pushed - start,
        elapsed_seconds=end - start,
        job_states=dict(states),
        queue_seconds=queue,
        scoring_seconds=scoring,
        delivery_seconds=delivery,
        memory=[ProcessMemory(role, pid, rss) for pid, (role, rss) in sampler.peak.items()],
    )


def report(result: ThroughputRecord) -> None:
    """Print studies/h, queue/scoring/delivery per study and peak memory per process."""
    print(
        f"{result.studies} studies pushed in {result.push_seconds:.1f} s, all finished"
        f" {result.elapsed_seconds:.1f} s after the first push:"
        f" {result.studies_per_hour:.0f} studies/h"
        f" ({result.concurrency} scoring pool processes, {result.cpus} cores);"
        f" jobs {result.job_states}"
    )
    for name, values in (
        ("queue", result.queue_seconds),
        ("scoring", result.scoring_seconds),
        ("delivery", result.delivery_seconds),
    ):
        if values:
            print(f"  {name:9} median {statistics.median(values):6.2f} s, max {max(values):6.2f} s")
    print("peak resident memory per process:")
    for role, rss in sorted((m.role, m.peak_bytes) for m in result.memory):
        print(f"  {role:26} {rss / 2**20:7.0f} MiB")


if __name__ == "__main__":
    main()
