"""One table of issue 16's performance figures, with the peers' figures beside them.

Run: ``.venv/bin/python bench/summary.py [--skip
ingest,latency,at-once,throughput,profile,crash] [--repeats N] [--studies N] [--at-once 4]
[--crash-rounds N] [--bundle model_bundle/demo]
[--training-seconds S] [--markdown PATH] [--work DIR]``.

Runs each bench in a fresh process with ``--json`` (their own output shows as it runs) and
reads back the typed records of ``bench_records``; nothing of their printed output is
parsed. Then prints one table, a row per measure, with the columns onfh-dlr, peer (DCMTK
storescp / Orthanc, measured in the same run), ratio, aim and met?:

1. ingest of 400 MR instances, one and four concurrent ``storescu`` senders
   (``ingest_speed.py``; ``--repeats`` pushes per SCP);
2. series close -> SR at the PACS, one study at a time (``result_latency.py --studies``)
   and ``--at-once`` studies together (``--at-once N --rounds`` ``--repeats``);
3. studies/h through ``onfh-dlr serve`` and peak memory per process (``throughput.py``);
4. where a study's scoring time goes (``scoring_profile.py``);
5. time to a result after ``kill -9`` of ``serve``'s scoring worker mid-study: worker back
   -> SR at the PACS, and SRs per killed study (``crash_recovery.py --rounds``
   ``--crash-rounds``);
6. training time of the demo cohort: not re-run here (tens of minutes); from
   ``--training-seconds`` or the bundle's ``metrics.json`` ``training_seconds`` field.

``--repeats`` and ``--studies`` default to each bench's own sizes. Above the table: the
date, ``os.cpu_count()``, the CPU model and the load average (before and after: other work
on the machine slows every figure; the ratios are side by side, the absolute ones are not).
``--markdown PATH`` writes the same table in Markdown, for the README. Every process gets
``TCP_NODELAY=1`` (DCMTK's tools and Orthanc read it; ours set it on their sockets anyway).
The exit status is 1 if a bench failed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from pathlib import Path

from bench_records import (
    CrashRecord,
    IngestRecord,
    LatencyRecord,
    R,
    ScoringProfileRecord,
    Scp,
    Sender,
    ThroughputRecord,
    read_record,
)

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

#: Issue 16's aims.
TRAINING_AIM_SECONDS = 20 * 60
LATENCY_MEDIAN_AIM = 3.0
LATENCY_MAX_AIM = 5.0
THROUGHPUT_AIM = 2000.0
CRASH_BACK_TO_SR_AIM = 60.0
CRASH_RESULTS_AIM = 1.0
#: The senders the summary pushes with: one modality, four at once.
INGEST_SENDERS = (Sender.STORESCU, Sender.STORESCU_CONCURRENT)


class Part(StrEnum):
    """A part of the summary, as ``--skip`` names it."""

    INGEST = "ingest"
    LATENCY = "latency"
    AT_ONCE = "at-once"
    THROUGHPUT = "throughput"
    PROFILE = "profile"
    CRASH = "crash"
    TRAINING = "training"


class Absence(StrEnum):
    """Why a part has no figures in this run."""

    SKIPPED = "skipped (--skip)"
    FAILED = "bench failed (see its output)"
    NOT_MEASURED = "not measured in this run"


class Unit(Enum):
    """How a figure is shown; durations are held in seconds."""

    SECONDS = "s"
    MINUTES = "min"
    PER_HOUR = "studies/h"
    MEBIBYTES = "MiB"
    COUNT = ""

    def show(self, value: float) -> str:
        if self is Unit.SECONDS:
            return f"{value:.2f} s"
        if self is Unit.MINUTES:
            return f"{value / 60:.1f} min"
        if self is Unit.PER_HOUR:
            return f"{value:,.0f} studies/h"
        if self is Unit.COUNT:
            return f"{value:g}"
        return f"{value / 2**20:,.0f} MiB"

    def show_limit(self, limit: float) -> str:
        """An aim's limit, without the figures' decimals (``3 s``, ``20 min``)."""
        if self is Unit.SECONDS:
            return f"{limit:g} s"
        if self is Unit.MINUTES:
            return f"{limit / 60:g} min"
        return self.show(limit)


class Bound(Enum):
    """Which side of the limit meets the aim."""

    AT_MOST = "≤"
    AT_LEAST = "≥"
    EXACTLY = "exactly"


@dataclass(frozen=True)
class Aim:
    """An aim of issue 16, on our figure or (``on_ratio``) on ours / peer."""

    bound: Bound
    limit: float  # in the row's unit's base (seconds, studies/h) or a ratio
    on_ratio: bool = False

    def met_by(self, value: float) -> bool:
        if self.bound is Bound.EXACTLY:
            return value == self.limit
        return value <= self.limit if self.bound is Bound.AT_MOST else value >= self.limit

    def show(self, unit: Unit) -> str:
        shown = f"{self.limit:g}x" if self.on_ratio else unit.show_limit(self.limit)
        return f"{self.bound.value} {shown}"


class Met(StrEnum):
    """The met? column."""

    YES = "yes"
    NO = "NO"
    NO_AIM = ""
    UNKNOWN = "—"


@dataclass(frozen=True)
class Row:
    """One measure: our figure, the peer's from the same run, the aim."""

    measure: str
    unit: Unit
    ours: float | None
    peer: float | None = None
    peer_name: str = ""
    aim: Aim | None = None
    detail: str = ""  # shown after our figure, e.g. a step's share of the total
    missing: str = ""  # why there is no figure

    @property
    def ratio(self) -> float | None:
        if self.ours is None or self.peer is None or self.peer == 0:
            return None
        return self.ours / self.peer

    @property
    def met(self) -> Met:
        if self.aim is None:
            return Met.NO_AIM
        value = self.ratio if self.aim.on_ratio else self.ours
        if value is None:
            return Met.UNKNOWN
        return Met.YES if self.aim.met_by(value) else Met.NO

    def cells(self) -> tuple[str, str, str, str, str, str]:
        """measure, onfh-dlr, peer, ratio, aim, met?"""
        if self.ours is None:
            ours = self.missing or str(Absence.NOT_MEASURED)
        else:
            ours = self.unit.show(self.ours) + (f" ({self.detail})" if self.detail else "")
        peer = "—"
        if self.peer is not None:
            peer = f"{self.peer_name} {self.unit.show(self.peer)}".strip()
        elif self.peer_name:
            peer = self.peer_name
        ratio = "—" if self.ratio is None else f"{self.ratio:.2f}x"
        aim = "—" if self.aim is None else self.aim.show(self.unit)
        return self.measure, ours, peer, ratio, aim, self.met.value


COLUMNS = ("measure", "onfh-dlr", "peer", "ratio", "aim", "met?")


@dataclass(frozen=True)
class Results:
    """What one summary run has: a record per bench, or why not."""

    ingest: IngestRecord | Absence
    latency: LatencyRecord | Absence
    at_once: LatencyRecord | Absence
    throughput: ThroughputRecord | Absence
    profile: ScoringProfileRecord | Absence
    crash: CrashRecord | Absence
    training_seconds: float | Absence


@dataclass(frozen=True)
class Machine:
    """Where and when the figures were measured."""

    date: str
    cpus: int | None
    cpu_model: str
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]

    def describe(self) -> str:
        def load(values: tuple[float, float, float]) -> str:
            return " / ".join(f"{v:.2f}" for v in values)

        return (
            f"{self.date}, {self.cpus} CPUs ({self.cpu_model}), load average (1/5/15 min)"
            f" {load(self.load_before)} before, {load(self.load_after)} after"
        )


# --- rows -------------------------------------------------------------------------------


def plural(count: int, one: str, many: str = "") -> str:
    """``1 study``, ``2 studies``."""
    return f"{count} {one if count == 1 else (many or one + 's')}"


_SENDER_LABELS = {
    Sender.STORESCU: "1 sender (storescu)",
    Sender.STORESCU_CONCURRENT: "4 concurrent senders (storescu)",
    Sender.PYNETDICOM: "1 sender (pynetdicom)",
}
#: Peer SCP -> (name in the peer column, aim on ours / peer).
_INGEST_PEERS = {
    Scp.STORESCP: ("storescp", Aim(Bound.AT_MOST, 2.0, on_ratio=True)),
    Scp.ORTHANC: ("Orthanc", Aim(Bound.AT_MOST, 1.0, on_ratio=True)),
}


def ingest_rows(ingest: IngestRecord | Absence) -> list[Row]:
    """Per sender, our listener against storescp and against Orthanc."""
    if isinstance(ingest, Absence):
        instances, senders = 400, list(INGEST_SENDERS)
    else:
        instances = ingest.instances
        senders = [s for s in Sender if any(m.sender == s for m in ingest.medians)]
    rows = []
    for sender in senders:
        for scp, (name, aim) in _INGEST_PEERS.items():
            measure = f"ingest {instances} MR, {_SENDER_LABELS[sender]}, vs {name}"
            if isinstance(ingest, Absence):
                rows.append(Row(measure, Unit.SECONDS, None, aim=aim, missing=ingest))
                continue
            ours, peer = ingest.median(sender, Scp.OURS), ingest.median(sender, scp)
            peer_name = name if peer is not None else f"{name}: no successful push"
            rows.append(
                Row(measure, Unit.SECONDS, ours, peer, peer_name, aim, missing="no successful push")
            )
    return rows


def latency_rows(latency: LatencyRecord | Absence, label: str) -> list[Row]:
    """Median and max of close -> SR, and the worker's first study."""
    median_aim = Aim(Bound.AT_MOST, LATENCY_MEDIAN_AIM)
    max_aim = Aim(Bound.AT_MOST, LATENCY_MAX_AIM)
    if isinstance(latency, Absence) or not latency.studies:
        missing = latency if isinstance(latency, Absence) else Absence.NOT_MEASURED
        return [
            Row(
                f"close → SR, {label}: median", Unit.SECONDS, None, aim=median_aim, missing=missing
            ),
            Row(f"close → SR, {label}: max", Unit.SECONDS, None, aim=max_aim, missing=missing),
        ]
    seconds = [t.close_to_sr for t in latency.studies]
    count = plural(len(seconds), "study", "studies")
    if latency.at_once > 1:
        count += ", " + plural(latency.rounds, "round")
    median = statistics.median(seconds)
    rows = [
        Row(f"close → SR, {label}: median", Unit.SECONDS, median, aim=median_aim, detail=count),
        Row(f"close → SR, {label}: max", Unit.SECONDS, max(seconds), aim=max_aim),
    ]
    if latency.at_once == 1:
        # The warm-up study, pushed alone to a fresh worker: "the first study after a worker
        # start no slower than the rest" (the at-once run's warm-up measures the same).
        first = latency.warm_up.close_to_sr
        rows.append(Row(f"close → SR, {label}: worker's first study", Unit.SECONDS, first))
    return rows


def throughput_rows(throughput: ThroughputRecord | Absence) -> list[Row]:
    """Studies/h through serve, and peak memory per role of serve's processes."""
    aim = Aim(Bound.AT_LEAST, THROUGHPUT_AIM)
    if isinstance(throughput, Absence):
        return [
            Row("throughput through serve", Unit.PER_HOUR, None, aim=aim, missing=throughput),
            Row("peak memory per process", Unit.MEBIBYTES, None, missing=throughput),
        ]
    ended = ", ".join(f"{n} {state}" for state, n in sorted(throughput.job_states.items()))
    rows = [
        Row(
            f"throughput through serve, {plural(throughput.studies, 'study', 'studies')},"
            f" {plural(throughput.concurrency, 'scoring process', 'scoring processes')}",
            Unit.PER_HOUR,
            throughput.studies_per_hour,
            aim=aim,
            detail=f"jobs: {ended}",
        )
    ]
    peak: dict[str, int] = {}
    count: dict[str, int] = {}
    for memory in throughput.memory:
        peak[memory.role] = max(peak.get(memory.role, 0), memory.peak_bytes)
        count[memory.role] = count.get(memory.role, 0) + 1
    for role in sorted(peak):
        several = f", largest of {count[role]}" if count[role] > 1 else ""
        rows.append(Row(f"peak memory: {role}{several}", Unit.MEBIBYTES, float(peak[role])))
    return rows


def profile_rows(profile: ScoringProfileRecord | Absence) -> list[Row]:
    """Median seconds per scoring step of one study, with its share of the total."""
    if isinstance(profile, Absence):
        return [Row("scoring one study, per step", Unit.SECONDS, None, missing=profile)]
    total = profile.total_seconds

    def share(seconds: float) -> str:
        return f"{seconds / total:.0%}" if total > 0 else ""

    rows = [
        Row(
            f"scoring one study ({profile.site}, 1 thread): total",
            Unit.SECONDS,
            total,
            detail=f"median of {profile.studies}",
        )
    ]
    steps = [(s.step, s.median_seconds) for s in profile.steps]
    for step, seconds in [*steps, ("other", profile.other_seconds)]:
        rows.append(Row(f"  scoring step: {step}", Unit.SECONDS, seconds, detail=share(seconds)))
    return rows


CRASH_LABEL = "after kill -9 of the worker"


def crash_rows(crash: CrashRecord | Absence) -> list[Row]:
    """Worker back -> SR (median, max) after a kill mid-study, and SRs per killed study."""
    sr_aim = Aim(Bound.AT_MOST, CRASH_BACK_TO_SR_AIM)
    results_aim = Aim(Bound.EXACTLY, CRASH_RESULTS_AIM)
    median_name = f"{CRASH_LABEL}: worker back → SR, median"
    max_name = f"{CRASH_LABEL}: worker back → SR, max"
    results_name = "results per killed study"
    if isinstance(crash, Absence) or not crash.rounds:
        missing = crash if isinstance(crash, Absence) else Absence.NOT_MEASURED
        return [
            Row(median_name, Unit.SECONDS, None, aim=sr_aim, missing=missing),
            Row(max_name, Unit.SECONDS, None, aim=sr_aim, missing=missing),
            Row(results_name, Unit.COUNT, None, aim=results_aim, missing=missing),
        ]
    seconds = [r.back_to_sr for r in crash.rounds]
    counts = [r.sr_received for r in crash.rounds]
    # The count farthest from one speaks for the run: a single duplicate (or a lost SR)
    # breaks the aim however many rounds were fine.
    worst = max(counts, key=lambda c: (abs(c - CRASH_RESULTS_AIM), c))
    ended = ", ".join(
        f"{sum(r.job_state == state for r in crash.rounds)} {state}"
        for state in sorted({r.job_state for r in crash.rounds})
    )
    per_round = ", ".join(str(c) for c in counts)
    return [
        Row(
            median_name,
            Unit.SECONDS,
            statistics.median(seconds),
            aim=sr_aim,
            detail=plural(len(seconds), "round"),
        ),
        Row(max_name, Unit.SECONDS, max(seconds), aim=sr_aim),
        Row(
            results_name,
            Unit.COUNT,
            float(worst),
            aim=results_aim,
            detail=f"per round: {per_round}; jobs: {ended}",
        ),
    ]


def training_row(training_seconds: float | Absence) -> Row:
    """Training time of the demo cohort (not run by the summary)."""
    aim = Aim(Bound.AT_MOST, TRAINING_AIM_SECONDS)
    if isinstance(training_seconds, Absence):
        return Row("training, demo cohort", Unit.MINUTES, None, aim=aim, missing=training_seconds)
    return Row("training, demo cohort", Unit.MINUTES, training_seconds, aim=aim)


def build_rows(results: Results, at_once: int = 4) -> list[Row]:
    """Every row of the summary table, in the issue's order.

    Parameters
    ----------
    results
        A record per bench, or why it has none.
    at_once
        The studies per round of the at-once latency run, for its label when it is absent.
    """
    if isinstance(results.at_once, LatencyRecord):
        at_once = results.at_once.at_once
    return [
        *ingest_rows(results.ingest),
        *latency_rows(results.latency, "one study at a time"),
        *latency_rows(results.at_once, f"{at_once} studies at once"),
        *throughput_rows(results.throughput),
        *profile_rows(results.profile),
        *crash_rows(results.crash),
        training_row(results.training_seconds),
    ]


def notes(results: Results) -> list[str]:
    """What a reader of the table must know that no row says."""
    lines = []
    if isinstance(results.ingest, IngestRecord):
        pushes = plural(results.ingest.repeats, "push", "pushes")
        lines.append(
            f"ingest: median of {pushes} per SCP of the same"
            f" {results.ingest.instances} instances ({results.ingest.megabytes:.1f} MB);"
            " storescp does not fsync, Orthanc (SyncStorageArea) and our listener do."
        )
        lines += [f"ingest push failed (not in the medians): {f}" for f in results.ingest.failed]
    if isinstance(results.crash, CrashRecord) and results.crash.rounds:
        rounds = results.crash.rounds
        by = "; ".join(
            f"{who.value} ({plural(sum(r.requeued_by is who for r in rounds), 'round')})"
            for who in dict.fromkeys(r.requeued_by for r in rounds)
        )
        to_back = statistics.median(r.killed_to_back for r in rounds)
        to_sr = statistics.median(r.killed_to_sr for r in rounds)
        lines.append(
            f"crash: the scoring worker's main process killed with SIGKILL mid-study in"
            f" {plural(len(rounds), 'round')}; kill → worker back median {to_back:.2f} s,"
            f" kill → SR median {to_sr:.2f} s; requeued: {by}."
        )
    return lines


# --- rendering --------------------------------------------------------------------------


def render_text(rows: Sequence[Row]) -> str:
    """The table as aligned columns for a terminal."""
    table = [COLUMNS, *(r.cells() for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    )


def render_markdown(rows: Sequence[Row], machine: Machine, extra: Sequence[str] = ()) -> str:
    """The table in Markdown, headed by when and where it was measured."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.strip().replace("|", "\\|") for c in cells) + " |"

    out = [f"Measured {machine.describe()}.", "", line(COLUMNS), line(["---"] * len(COLUMNS))]
    out += [line(r.cells()) for r in rows]
    if extra:
        out += ["", *(f"- {e}" for e in extra)]
    return "\n".join(out) + "\n"


# --- the run ----------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or "unknown"."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "unknown"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        # x86 says "model name"; some ARM kernels only "Hardware" or "Processor".
        if key.strip() in ("model name", "Hardware", "Processor") and value.strip():
            return value.strip()
    return "unknown"


def training_seconds_of(bundle: Path) -> float | Absence:
    """``training_seconds`` from the bundle's metrics.json, if it records it."""
    try:
        metrics = json.loads((bundle / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return Absence.NOT_MEASURED
    value = metrics.get("training_seconds") if isinstance(metrics, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return Absence.NOT_MEASURED


def bench_environment() -> dict[str, str]:
    """Our environment with TCP_NODELAY=1, and this checkout first on the import path."""
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def run_bench(kind: type[R], script: str, args: list[str], json_path: Path) -> R | Absence:
    """Run ``bench/script`` in a fresh process with ``--json``; its record, or FAILED."""
    command = [sys.executable, str(BENCH / script), *args, "--json", str(json_path)]
    print(f"\n=== {shlex.join(command[1:])}", flush=True)
    json_path.unlink(missing_ok=True)
    returncode = subprocess.run(command, cwd=ROOT, env=bench_environment(), check=False).returncode
    if returncode != 0 or not json_path.exists():
        print(f"=== {script} failed (exit {returncode})", flush=True)
        return Absence.FAILED
    try:
        return read_record(kind, json_path)
    except ValueError as exc:
        print(f"=== {script} wrote an unreadable record: {exc}", flush=True)
        return Absence.FAILED


def parse_skip(text: str) -> set[Part]:
    """``--skip ingest,throughput`` as parts; raises ValueError on an unknown name."""
    return {Part(name.strip()) for name in text.split(",") if name.strip()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--skip", default="", help=f"comma-separated parts: {', '.join(p.value for p in Part)}"
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="ingest pushes per SCP; at-once rounds"
    )
    parser.add_argument(
        "--studies", type=int, default=None, help="studies of latency, throughput and profile"
    )
    parser.add_argument("--at-once", type=int, default=4, help="studies pushed together")
    parser.add_argument(
        "--crash-rounds", type=int, default=None, help="studies whose worker is killed (3)"
    )
    parser.add_argument(
        "--instances", type=int, default=None, help="MR instances per ingest push (400)"
    )
    parser.add_argument("--bundle", type=Path, default=ROOT / "model_bundle" / "demo")
    parser.add_argument("--training-seconds", type=float, default=None)
    parser.add_argument("--markdown", type=Path, default=None, help="write the table here too")
    parser.add_argument(
        "--work", type=Path, default=None, help="keep the records (and the ingest files) here"
    )
    args = parser.parse_args()
    try:
        skip = parse_skip(args.skip)
    except ValueError as exc:
        parser.error(f"--skip: {exc}")
    load_before = os.getloadavg()
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    bundle = args.bundle.resolve()
    repeats = [] if args.repeats is None else ["--repeats", str(args.repeats)]
    studies = [] if args.studies is None else ["--studies", str(args.studies)]
    with tempfile.TemporaryDirectory(prefix="bench-summary-") as tmp:
        work = (args.work or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)

        def run(part: Part, kind: type[R], script: str, bench_args: list[str]) -> R | Absence:
            if part in skip:
                return Absence.SKIPPED
            return run_bench(kind, script, bench_args, work / f"{part.value}.json")

        ingest_args = [*repeats, "--senders", ",".join(INGEST_SENDERS)]
        ingest_args += [] if args.instances is None else ["--instances", str(args.instances)]
        ingest_args += ["--work", str(work / "ingest")] if args.work else []
        rounds = [] if args.repeats is None else ["--rounds", str(args.repeats)]
        training: float | Absence = Absence.SKIPPED
        if Part.TRAINING not in skip:
            training = (
                args.training_seconds
                if args.training_seconds is not None
                else training_seconds_of(bundle)
            )
        results = Results(
            ingest=run(Part.INGEST, IngestRecord, "ingest_speed.py", ingest_args),
            latency=run(Part.LATENCY, LatencyRecord, "result_latency.py", studies),
            at_once=run(
                Part.AT_ONCE,
                LatencyRecord,
                "result_latency.py",
                ["--at-once", str(args.at_once), *rounds],
            ),
            throughput=run(Part.THROUGHPUT, ThroughputRecord, "throughput.py", studies),
            profile=run(
                Part.PROFILE,
                ScoringProfileRecord,
                "scoring_profile.py",
                [*studies, "--bundle", str(bundle)],
            ),
            crash=run(
                Part.CRASH,
                CrashRecord,
                "crash_recovery.py",
                [] if args.crash_rounds is None else ["--rounds", str(args.crash_rounds)],
            ),
            training_seconds=training,
        )
    machine = Machine(date, os.cpu_count(), cpu_model(), load_before, os.getloadavg())
    rows = build_rows(results, args.at_once)
    extra = notes(results)
    print(f"\nissue 16 performance summary, measured {machine.describe()}\n")
    print(render_text(rows))
    if extra:
        print("\n" + "\n".join(extra))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(render_markdown(rows, machine, extra), encoding="utf-8")
        print(f"\nMarkdown table written to {args.markdown}")
    failed = [name for name, value in vars(results).items() if value is Absence.FAILED]
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
