"""The results of the performance benches as typed records, and their JSON form.

Each bench of issue 16 (``ingest_speed.py``, ``result_latency.py``, ``throughput.py``,
``scoring_profile.py``, ``crash_recovery.py``) writes one of these records with ``--json PATH``;
``summary.py`` runs the benches as subprocesses and reads the records back into the same
dataclasses, so no bench's printed output is ever parsed. Imported by the scripts in
``bench/`` and by ``tests/test_bench_summary.py`` (by name: ``bench/`` is on their path).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any, TypeVar


class Scp(StrEnum):
    """A Storage SCP the ingest bench pushes to."""

    STORESCP = "storescp"
    ORTHANC = "orthanc"
    OURS = "ours"
    STORESCP_DEFAULT = "storescp-default"
    PYNETDICOM = "pynetdicom"


class Sender(StrEnum):
    """How the ingest bench pushes the instances."""

    STORESCU = "DCMTK storescu"
    STORESCU_CONCURRENT = "4 x DCMTK storescu"
    PYNETDICOM = "pynetdicom store_files"


@dataclass(frozen=True)
class IngestMedian:
    """Median seconds of one (sender, SCP) pair over the successful pushes."""

    sender: Sender
    scp: Scp
    median_seconds: float
    runs: list[float]


@dataclass(frozen=True)
class IngestRecord:
    """``ingest_speed.py``: the same push to each SCP, side by side."""

    instances: int
    megabytes: float
    repeats: int
    medians: list[IngestMedian]
    failed: list[str] = field(default_factory=list)

    def median(self, sender: Sender, scp: Scp) -> float | None:
        """The median seconds of ``sender`` -> ``scp``, or None without a successful push."""
        for entry in self.medians:
            if entry.sender == sender and entry.scp == scp:
                return entry.median_seconds
        return None


@dataclass(frozen=True)
class StudyTiming:
    """Where the time of one study went (seconds), from the state DB's timeline."""

    slices: int
    push: float
    end_to_close: float
    close_to_started: float
    started_to_scored: float
    scored_to_delivered: float
    close_to_sr: float


@dataclass(frozen=True)
class LatencyRecord:
    """``result_latency.py``: close -> SR per study, warm worker.

    ``at_once`` is 1 when each study is pushed after the previous one's SR arrived, else
    the number of studies pushed together in each round.
    """

    at_once: int
    rounds: int
    warm_up: StudyTiming
    studies: list[StudyTiming]


@dataclass(frozen=True)
class ProcessMemory:
    """Peak resident memory of one process of ``serve``'s tree."""

    role: str  # a display label (role_of in throughput.py), never parsed
    pid: int
    peak_bytes: int


@dataclass(frozen=True)
class ThroughputRecord:
    """``throughput.py``: studies/h through ``onfh-dlr serve``, memory per process."""

    studies: int
    concurrency: int
    cpus: int
    push_seconds: float
    elapsed_seconds: float
    job_states: dict[str, int]  # the state DB's job state -> how many jobs ended in it
    queue_seconds: list[float]
    scoring_seconds: list[float]
    delivery_seconds: list[float]
    memory: list[ProcessMemory]

    @property
    def studies_per_hour(self) -> float:
        return self.studies / self.elapsed_seconds * 3600


@dataclass(frozen=True)
class StepSeconds:
    """Median wall seconds of one scoring step per study."""

    step: str
    median_seconds: float


@dataclass(frozen=True)
class ScoringProfileRecord:
    """``scoring_profile.py``: where one study's scoring time goes, step by step."""

    bundle: str
    site: str
    studies: int
    total_seconds: float
    steps: list[StepSeconds]

    @property
    def other_seconds(self) -> float:
        """Time in no timed step (e.g. the pipeline's own glue)."""
        return max(0.0, self.total_seconds - sum(s.median_seconds for s in self.steps))


class RequeuedBy(StrEnum):
    """Who put a killed worker's job back to the queue, from its ``requeued`` event."""

    SERVE_REAPER = "serve reaped the dead worker"
    PID_GONE = "a liveness pass found its pid gone"  # serve's periodic one or the listener's
    NO_HEARTBEAT = "the listener missed its heartbeats"
    WENT_OFFLINE = "the listener saw it go offline"
    UNKNOWN = "a requeue event of unknown wording"
    NOT_REQUEUED = "no requeue event"


@dataclass(frozen=True)
class CrashRound:
    """One study whose scoring worker was killed with -9 while it scored (seconds)."""

    killed_to_back: float  # kill -> the restarted worker logs "ready."
    back_to_sr: float  # -> the study's SR file written at the PACS
    killed_to_sr: float
    killed_to_requeued: float | None  # -> the job's ``requeued`` event, if any
    requeued_by: RequeuedBy
    requeue_detail: str  # the event's own words, shown as they are
    sr_received: int  # SR objects of the study the PACS received, a re-send counted again
    sr_distinct: int  # distinct SR SOP Instance UIDs among them
    job_state: str  # the state DB's final job state (``done`` when all went well)
    attempts: int

    @property
    def exactly_one_result(self) -> bool:
        return self.sr_received == 1 and self.sr_distinct == 1 and self.job_state == "done"


@dataclass(frozen=True)
class CrashRecord:
    """``crash_recovery.py``: time to a result after ``kill -9`` of ``serve``'s worker."""

    rounds: list[CrashRound]


Record = IngestRecord | LatencyRecord | ThroughputRecord | ScoringProfileRecord | CrashRecord
R = TypeVar("R", IngestRecord, LatencyRecord, ThroughputRecord, ScoringProfileRecord, CrashRecord)


def write_record(record: Record, path: Path) -> None:
    """Write ``record`` as JSON to ``path`` (its folder is made if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataclasses.asdict(record), indent=2) + "\n", encoding="utf-8")


def read_record(kind: type[R], path: Path) -> R:
    """Read a record of type ``kind`` written by :func:`write_record`.

    Raises
    ------
    ValueError
        If the JSON does not have the record's fields and types.
    """
    value = _decode(kind, json.loads(path.read_text(encoding="utf-8")), kind.__name__)
    assert isinstance(value, kind)
    return value


def _decode(hint: Any, value: Any, where: str) -> Any:
    """``value`` (plain JSON) as the type ``hint`` of a record field."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object, got {value!r}")
        hints = typing.get_type_hints(hint)
        fields = {f.name for f in dataclasses.fields(hint)}
        unknown = set(value) - fields
        if unknown:
            raise ValueError(f"{where}: unknown fields {sorted(unknown)}")
        required = {
            f.name
            for f in dataclasses.fields(hint)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        if required - set(value):
            raise ValueError(f"{where}: missing fields {sorted(required - set(value))}")
        return hint(**{k: _decode(hints[k], v, f"{where}.{k}") for k, v in value.items()})
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _decode(inner, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_decode(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object, got {value!r}")
        key, item = typing.get_args(hint)
        return {_decode(key, k, where): _decode(item, v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(hint, type) and issubclass(hint, Enum):
        return hint(value)
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str) and type(value) is hint:
        return value
    raise ValueError(f"{where}: expected {hint}, got {value!r}")
