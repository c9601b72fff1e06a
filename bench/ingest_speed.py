"""Ingest of 400 MR instances: our listener vs DCMTK ``storescp`` and Orthanc, same push.

Run: ``.venv/bin/python bench/ingest_speed.py [--repeats 3] [--work DIR] [--json PATH]``.
Writes phantom studies until there are 400 MR instances (``--instances``; cached under
``--work``; default a temporary directory), then pushes the same 400 files to

* ``storescp`` (DCMTK, single process, writes every object to a directory, no fsync),
* Orthanc (Debian package) with ``SyncStorageArea: true`` (fsyncs each file) and its
  SQLite index, and
* ``python -m onfh_dlr listener`` as deployed (real Redis, SQLite state DB, spool that
  fsyncs each file and its directory before answering; series that look complete are
  closed into jobs at release, which is part of the push),

with three senders in turn: DCMTK ``storescu`` (one association), four ``storescu`` at
once (each a quarter of the files, as four modalities pushing together; the push lasts
until the last one returns) and pynetdicom (``worker.scu.store_files``, which sets
TCP_NODELAY on its socket). ``--pynetdicom-floor`` adds a bare pynetdicom Storage SCP (no
fsync, no tracker): the part of the listener's time that is pynetdicom's.

DCMTK >= 3.6.2 (and Orthanc, built on it) leaves Nagle's algorithm on unless
``TCP_NODELAY=1`` is in the environment; on loopback that stalls every C-STORE on a delayed
ACK (~40 ms, ~20 s for the 400). Every DCMTK tool and Orthanc here run with
``TCP_NODELAY=1`` (at their best); ``--dcmtk-default`` adds a storescp with DCMTK's
defaults as a second, slower reference. The listener sets TCP_NODELAY itself
(``listener.transport``).

Each SCP is started fresh, on an empty directory, before the clock starts; a push lasts
until the sender returns (every C-STORE answered, association released). Prints, per
sender, the median seconds of ``--repeats`` runs (order alternated), instances/s and the
ratios ours / storescp (aim <= 2x) and ours / Orthanc (aim <= 1.0x), all measured in the
same run. ``--json PATH`` also writes the medians as a ``bench_records.IngestRecord``
(read by ``summary.py``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench_records import IngestMedian, IngestRecord, Scp, Sender, write_record

from onfh_dlr.broker import free_port
from onfh_dlr.errors import OnfhError
from worker.scu import STORED_STATUSES, store_files, wait_for_echo

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from service_harness import MODALITY_AE, SERVICE_AE, Service

INSTANCES = 400
STORESCP_AE = "STORESCP"
ORTHANC_AE = "ORTHANC"
#: Concurrent senders in the "4 x storescu" push (``Sender.STORESCU_CONCURRENT``).
CONCURRENT = 4
#: DCMTK reads this at run time; "1" disables Nagle's algorithm on its sockets.
NODELAY = {"TCP_NODELAY": "1"}


@dataclass
class Push:
    """One timed push: whole sender run, and (pynetdicom) first-to-last answered C-STORE."""

    seconds: float
    stores_window: float | None = None


@dataclass
class Results:
    """Pushes per (sender, SCP)."""

    runs: dict[tuple[Sender, Scp], list[Push]] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)

    def add(self, sender: Sender, scp: Scp, push: Push) -> None:
        self.runs.setdefault((sender, scp), []).append(push)

    def record(self, count: int, megabytes: float, repeats: int) -> IngestRecord:
        """The medians as the typed record ``--json`` writes."""
        medians = [
            IngestMedian(sender, scp, statistics.median(seconds), seconds)
            for (sender, scp), pushes in self.runs.items()
            for seconds in [[p.seconds for p in pushes]]
        ]
        return IngestRecord(count, megabytes, repeats, medians, list(self.failed))


def make_instances(work: Path, count: int, seed: int) -> list[Path]:
    """``count`` phantom MR files in ``work/push<count>`` (made once, then reused)."""
    push_dir = work / f"push{count}"
    files = sorted(push_dir.glob("*.dcm")) if push_dir.is_dir() else []
    if len(files) == count:
        return files
    from phantom.cohort import generate_cohort

    shutil.rmtree(push_dir, ignore_errors=True)
    # 18 cases make the 400 (cohort directories are named by it, so a --work cache stays).
    cases, sources = max(1, round(18 * count / INSTANCES)), list[Path]()
    while len(sources) < count:
        cohort_dir = work / f"cohort-{seed}-{cases}"
        csv_path = cohort_dir / "cohort.csv"
        if not csv_path.exists():
            print(f"writing {cases} phantom studies to {cohort_dir} ...", flush=True)
            generate_cohort(cohort_dir, cases=cases, seed=seed, workers=os.cpu_count() or 1)
        rows = csv.DictReader(csv_path.read_text(encoding="utf-8").splitlines())
        series_dirs = dict.fromkeys(r["Image"] for r in rows)
        sources = [p for s in series_dirs for p in sorted((cohort_dir / s).glob("*.dcm"))]
        cases += 4
    push_dir.mkdir(parents=True)
    for i, source in enumerate(sources[:count]):
        target = push_dir / f"{i:04d}.dcm"
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
    return sorted(push_dir.glob("*.dcm"))


def file_system_of(path: Path) -> str:
    """The type of the file system ``path`` lives on (from /proc/mounts), or "?"."""
    best, kind = "", "?"
    resolved = str(path.resolve())
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    for line in mounts:
        parts = line.split()
        if len(parts) >= 3 and resolved.startswith(parts[1]) and len(parts[1]) > len(best):
            best, kind = parts[1], parts[2]
    return kind


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate a child process and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


#: What a started SCP offers: its port, its AE title, how many instances it holds.
ScpTarget = tuple[int, str, Callable[[], int]]
ScpRun = Iterator[ScpTarget]


def dcmtk_env(nodelay: bool) -> dict[str, str]:
    """The environment of a DCMTK tool, with or without ``TCP_NODELAY=1``."""
    env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
    return {**env, **NODELAY} if nodelay else env


@contextmanager
def storescp(root: Path, nodelay: bool) -> ScpRun:
    """A fresh ``storescp`` on a free port writing to ``root/out``: (port, AE, count)."""
    out = root / "out"
    out.mkdir(parents=True)
    port = free_port()
    with (root / "storescp.log").open("wb") as log:
        process = subprocess.Popen(
            ["storescp", "-dhl", "-aet", STORESCP_AE, "-od", str(out), str(port)],
            stdout=log,
            stderr=log,
            env=dcmtk_env(nodelay),
        )
        try:
            if not wait_for_echo(
                "127.0.0.1", port, STORESCP_AE, timeout=15, calling_ae=MODALITY_AE
            ):
                raise RuntimeError(f"storescp did not answer C-ECHO; see {root / 'storescp.log'}")
            yield port, STORESCP_AE, lambda: sum(1 for _ in out.iterdir())
        finally:
            stop(process)


@contextmanager
def orthanc(root: Path) -> ScpRun:
    """A fresh Orthanc with ``SyncStorageArea: true`` on free ports: (port, AE, count)."""
    binary = shutil.which("Orthanc")
    if binary is None:
        raise RuntimeError("Orthanc (Debian package orthanc) is required")
    root.mkdir(parents=True)
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "bench",
        "StorageDirectory": str(root / "db"),
        "IndexDirectory": str(root / "db"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": ORTHANC_AE,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "SyncStorageArea": True,  # fsync each file before answering, as our spool does
        "StorageCompression": False,
        "DicomCheckCalledAet": False,
        "Plugins": [],
    }
    (root / "orthanc.json").write_text(json.dumps(config, indent=2))

    def instances() -> int:
        url = f"http://127.0.0.1:{http_port}/statistics"
        with urllib.request.urlopen(url, timeout=30) as response:
            return int(json.loads(response.read())["CountInstances"])

    with (root / "orthanc.log").open("wb") as log:
        process = subprocess.Popen(
            [binary, str(root / "orthanc.json")], stdout=log, stderr=log, env=dcmtk_env(True)
        )
        try:
            if not wait_for_echo(
                "127.0.0.1", dicom_port, ORTHANC_AE, timeout=30, calling_ae=MODALITY_AE
            ):
                raise RuntimeError(f"Orthanc did not answer C-ECHO; see {root / 'orthanc.log'}")
            yield dicom_port, ORTHANC_AE, instances
        finally:
            stop(process)


#: A bare pynetdicom Storage SCP (the stand-in PACS: decodes, ``save_as``, no fsync).
_FLOOR_SCP = """
import sys, time
from pathlib import Path
from onfh_dlr.cli.receiver import Receiver
Receiver(Path(sys.argv[1]), int(sys.argv[2]), ae_title=sys.argv[3]).start()
while True:
    time.sleep(3600)
"""


@contextmanager
def pynetdicom_floor(root: Path) -> ScpRun:
    """``onfh_dlr.cli.receiver.Receiver`` in its own process: what pynetdicom alone costs."""
    out, port, ae = root / "out", free_port(), "FLOOR"
    root.mkdir(parents=True)
    with (root / "floor.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", _FLOOR_SCP, str(out), str(port), ae], stdout=log, stderr=log
        )
        try:
            if not wait_for_echo("127.0.0.1", port, ae, timeout=30, calling_ae=MODALITY_AE):
                raise RuntimeError(f"pynetdicom SCP did not answer C-ECHO; see {root}/floor.log")
            yield port, ae, lambda: sum(1 for _ in out.glob("*.dcm"))
        finally:
            stop(process)


@contextmanager
def our_listener(root: Path) -> ScpRun:
    """A fresh listener process (and its Redis) on an empty data dir: (port, AE, count)."""
    # No timeout close during a push: series close at release (complete) or stay open.
    service = Service(root, series_timeout="600")
    root.mkdir(parents=True)
    try:
        service.redis.start()
        service.start_process("listener")
        if not wait_for_echo(
            "127.0.0.1", service.port, SERVICE_AE, timeout=30, calling_ae=MODALITY_AE
        ):
            raise RuntimeError(f"listener did not start: {service.log('listener')}")
        spool = service.data_dir / "spool"
        yield service.port, SERVICE_AE, lambda: sum(1 for _ in spool.glob("*/*/*.dcm"))
    finally:
        service.stop()


def push_storescu(files: list[Path], port: int, called_ae: str) -> Push:
    """Push the directory of ``files`` with DCMTK storescu (one association)."""
    return push_storescu_parallel([files[0].parent], port, called_ae)


def parts_of(files: list[Path], count: int) -> list[Path]:
    """``count`` directories of hard links, each a contiguous quarter of ``files``."""
    root = files[0].parent.with_name(f"{files[0].parent.name}-{count}parts")
    size = -(-len(files) // count)
    parts = [root / f"part{i}" for i in range(count)]
    if all(p.is_dir() for p in parts) and sum(len(list(p.iterdir())) for p in parts) == len(files):
        return parts
    shutil.rmtree(root, ignore_errors=True)
    for i, part in enumerate(parts):
        part.mkdir(parents=True)
        for path in files[i * size : (i + 1) * size]:
            try:
                os.link(path, part / path.name)
            except OSError:
                shutil.copyfile(path, part / path.name)
    return parts


def push_storescu_parallel(directories: list[Path], port: int, called_ae: str) -> Push:
    """One storescu per directory, all at once; lasts until the last one returns."""
    args = ["storescu", "-aet", MODALITY_AE, "-aec", called_ae, "+sd", "127.0.0.1", str(port)]
    start = time.perf_counter()
    processes = [
        subprocess.Popen(
            [*args, str(directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=dcmtk_env(True),
        )
        for directory in directories
    ]
    errors = [p.communicate()[1] for p in processes]
    seconds = time.perf_counter() - start
    for process, error in zip(processes, errors, strict=True):
        if process.returncode != 0:
            raise RuntimeError(f"storescu failed ({process.returncode}): {error.decode()[-2000:]}")
    return Push(seconds)


def push_storescu_concurrent(files: list[Path], port: int, called_ae: str) -> Push:
    """Four storescu at once, each a quarter of ``files``."""
    return push_storescu_parallel(parts_of(files, CONCURRENT), port, called_ae)


def push_pynetdicom(files: list[Path], port: int, called_ae: str) -> Push:
    """Push ``files`` with ``store_files`` (reads them all, then one association)."""
    answered: list[float] = []
    start = time.perf_counter()
    statuses = store_files(
        files,
        host="127.0.0.1",
        port=port,
        called_ae=called_ae,
        calling_ae=MODALITY_AE,
        on_file=lambda _p, _s: answered.append(time.perf_counter()),
    )
    seconds = time.perf_counter() - start
    refused = [s for s in statuses if s not in STORED_STATUSES]
    if refused:
        raise RuntimeError(f"{len(refused)} instances refused (status 0x{refused[0]:04X})")
    return Push(seconds, answered[-1] - answered[0])


SenderFunction = Callable[[list[Path], int, str], Push]


#: The senders, by name.
SENDERS: dict[Sender, SenderFunction] = {
    Sender.STORESCU: push_storescu,
    Sender.STORESCU_CONCURRENT: push_storescu_concurrent,
    Sender.PYNETDICOM: push_pynetdicom,
}


#: The SCPs: name -> (label, how to start one fresh under a directory).
SCPS: dict[Scp, tuple[str, Callable[[Path], AbstractContextManager[ScpTarget]]]] = {
    Scp.STORESCP: ("DCMTK storescp, TCP_NODELAY=1", lambda root: storescp(root, nodelay=True)),
    Scp.ORTHANC: ("Orthanc, SyncStorageArea", orthanc),
    Scp.OURS: ("onfh-dlr listener", our_listener),
    Scp.STORESCP_DEFAULT: (
        "DCMTK storescp, defaults",
        lambda root: storescp(root, nodelay=False),
    ),
    Scp.PYNETDICOM: ("bare pynetdicom SCP, no fsync", pynetdicom_floor),
}


#: The issue's aims, per reference SCP.
AIMS = {Scp.STORESCP: "  (aim <= 2x)", Scp.ORTHANC: "  (aim <= 1.0x)"}


def run_once(files: list[Path], root: Path, sender: SenderFunction, scp: Scp) -> Push:
    """Start ``scp`` fresh under ``root``, push ``files`` with ``sender``, check, stop."""
    with SCPS[scp][1](root) as (port, ae, stored):
        push = sender(files, port, ae)
        if stored() != len(files):
            raise RuntimeError(f"{scp} holds {stored()} of {len(files)} instances after the push")
    return push


def report(
    results: Results, sender_names: list[Sender], scps: list[Scp], count: int, megabytes: float
) -> None:
    """Print medians, instances/s and ratios per sender."""
    for sender in sender_names:
        runs = {scp: results.runs.get((sender, scp), []) for scp in scps}
        print(f"\nsender: {sender}")
        if not all(runs.values()):
            missing = ", ".join(scp for scp in scps if not runs[scp])
            print(f"  no successful push to {missing}: no ratios")
            continue
        med = {scp: statistics.median(p.seconds for p in runs[scp]) for scp in scps}
        for scp in scps:
            each = ", ".join(f"{p.seconds:.2f}" for p in runs[scp])
            print(
                f"  {SCPS[scp][0]:30} {med[scp]:6.2f} s  {count / med[scp]:5.0f} inst/s"
                f"  {megabytes / med[scp]:6.1f} MB/s  (runs: {each})"
            )
        for ref in scps:
            if ref != Scp.OURS:
                ratio = med[Scp.OURS] / med[ref]
                aim = AIMS.get(ref, "")
                print(f"  ratio ours / {SCPS[ref][0]}: {ratio:.2f}x{aim}")
        windows = {scp: [p.stores_window for p in runs[scp] if p.stores_window] for scp in scps}
        if all(windows.values()) and Scp.STORESCP in windows:
            w = {scp: statistics.median(v) for scp, v in windows.items() if v}
            print(
                f"  C-STORE answers 1 -> {count} only (no file reading, association set-up or"
                " release): "
                + ", ".join(f"{scp} {w[scp]:.2f} s" for scp in scps)
                + f"; ratio ours / storescp {w[Scp.OURS] / w[Scp.STORESCP]:.2f}x"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None, help="cache of the phantom files")
    parser.add_argument("--seed", type=int, default=400)
    parser.add_argument(
        "--instances", type=int, default=INSTANCES, help="how many MR instances a push holds"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the medians here")
    parser.add_argument(
        "--dcmtk-default",
        action="store_true",
        help="also time storescp with DCMTK's defaults (Nagle on; ~20 s a push)",
    )
    parser.add_argument(
        "--pynetdicom-floor",
        action="store_true",
        help="also time a bare pynetdicom Storage SCP (onfh_dlr.cli.receiver, no fsync)",
    )
    parser.add_argument(
        "--senders",
        default=",".join(SENDERS),
        help=f"comma-separated sender names (default: all): {', '.join(SENDERS)}",
    )
    args = parser.parse_args()
    for tool in ("storescp", "storescu", "Orthanc"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is required (DCMTK, Orthanc)")
    push_with = {Sender(name): SENDERS[Sender(name)] for name in args.senders.split(",")}
    scps = [Scp.STORESCP, Scp.ORTHANC, Scp.OURS]
    scps += [Scp.STORESCP_DEFAULT] if args.dcmtk_default else []
    scps += [Scp.PYNETDICOM] if args.pynetdicom_floor else []
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        work = args.work or Path(tmp) / "work"
        files = make_instances(work, args.instances, args.seed)
        megabytes = sum(f.stat().st_size for f in files) / 1e6
        runs_dir = Path(tmp) / "runs"
        results = Results()
        n = 0
        for repeat in range(args.repeats):
            order = scps if repeat % 2 == 0 else scps[::-1]
            for sender, send in push_with.items():
                for scp in order:
                    n += 1
                    try:
                        push = run_once(files, runs_dir / f"{n:03d}-{scp}", send, scp)
                    except (RuntimeError, OnfhError) as exc:
                        # Counted and shown, not a median: e.g. pynetdicom's SCU stalls now
                        # and then on storescp until its 30 s DIMSE timeout.
                        results.failed.append(f"{sender} -> {scp}: {exc}")
                        print(f"  run {n:2d}: {sender:22} -> {scp:16} FAILED: {exc}", flush=True)
                        continue
                    results.add(sender, scp, push)
                    print(
                        f"  run {n:2d}: {sender:22} -> {scp:16} {push.seconds:6.2f} s", flush=True
                    )
        print(
            f"\ningest of {len(files)} MR instances ({megabytes:.1f} MB, phantom coronal T2-FS)"
            f" on 127.0.0.1, median of {args.repeats}; {os.cpu_count()} CPUs, load average"
            f" {os.getloadavg()[0]:.1f} at the end (other work on the machine slows every SCP;"
            " the ratios are measured side by side)"
        )
        print(
            f"output directories on {file_system_of(runs_dir)}. storescp writes each object and"
            " answers (no fsync); Orthanc fsyncs each file (SyncStorageArea) and indexes it in"
            " SQLite; our listener fsyncs each file and its directory before answering, records"
            " the series in SQLite and, at release, closes complete series into jobs on Redis."
            " Every DCMTK tool and Orthanc run with TCP_NODELAY=1; the listener and the"
            " pynetdicom sender set it on their sockets."
        )
        report(results, list(push_with), scps, len(files), megabytes)
        for failure in results.failed:
            print(f"failed push (not in the medians): {failure}")
        if args.json:
            write_record(results.record(len(files), megabytes, args.repeats), args.json)


if __name__ == "__main__":
    main()
