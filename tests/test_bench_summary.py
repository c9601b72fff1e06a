"""The performance summary's table (bench/summary.py), built from hand-made bench records."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from bench_records import (
    CrashRecord,
    CrashRound,
    IngestMedian,
    IngestRecord,
    LatencyRecord,
    ProcessMemory,
    RequeuedBy,
    ScoringProfileRecord,
    Scp,
    Sender,
    StepSeconds,
    StudyTiming,
    ThroughputRecord,
    read_record,
    write_record,
)
from summary import (
    Absence,
    Machine,
    Met,
    Results,
    Row,
    build_rows,
    notes,
    render_markdown,
    render_text,
    training_seconds_of,
)


def timing(close_to_sr: float) -> StudyTiming:
    return StudyTiming(24, 0.3, 0.1, 0.05, close_to_sr - 0.5, 0.2, close_to_sr)


def ingest() -> IngestRecord:
    def median(sender: Sender, scp: Scp, seconds: float) -> IngestMedian:
        return IngestMedian(sender, scp, seconds, [seconds])

    return IngestRecord(
        instances=400,
        megabytes=80.0,
        repeats=1,
        medians=[
            median(Sender.STORESCU, Scp.OURS, 1.0),
            median(Sender.STORESCU, Scp.STORESCP, 0.4),  # ours 2.5x: aim <= 2x not met
            median(Sender.STORESCU, Scp.ORTHANC, 1.25),  # ours 0.8x: aim <= 1x met
            median(Sender.STORESCU_CONCURRENT, Scp.OURS, 0.9),
            median(Sender.STORESCU_CONCURRENT, Scp.STORESCP, 0.6),
            # no successful push of four senders to Orthanc in this run
        ],
    )


def crash_round(back_to_sr: float, srs: int = 1, state: str = "done") -> CrashRound:
    return CrashRound(
        killed_to_back=1.5,
        back_to_sr=back_to_sr,
        killed_to_sr=back_to_sr + 1.5,
        killed_to_requeued=0.6,
        requeued_by=RequeuedBy.SERVE_REAPER,
        requeue_detail="worker (pid 4242) killed by signal 9; requeued at once",
        sr_received=srs,
        sr_distinct=min(srs, 1),
        job_state=state,
        attempts=2,
    )


def full_results(
    training: float | Absence = 900.0, crash: CrashRecord | Absence | None = None
) -> Results:
    return Results(
        ingest=ingest(),
        latency=LatencyRecord(1, 3, timing(4.0), [timing(2.0), timing(2.5), timing(6.0)]),
        at_once=LatencyRecord(4, 1, timing(3.0), [timing(2.9)] * 4),
        throughput=ThroughputRecord(
            studies=12,
            concurrency=2,
            cpus=2,
            push_seconds=5.0,
            elapsed_seconds=36.0,  # 1,200 studies/h
            job_states={"done": 10, "failed": 2},
            queue_seconds=[1.0],
            scoring_seconds=[5.0],
            delivery_seconds=[0.2],
            memory=[
                ProcessMemory("scoring pool process", 11, 700 * 2**20),
                ProcessMemory("scoring pool process", 12, 900 * 2**20),
                ProcessMemory("redis", 10, 20 * 2**20),
            ],
        ),
        profile=ScoringProfileRecord(
            "model_bundle/demo", "ge-3t", 2, 4.0, [StepSeconds("radiomics", 3.0)]
        ),
        crash=CrashRecord([crash_round(12.0), crash_round(20.0), crash_round(75.0)])
        if crash is None
        else crash,
        training_seconds=training,
    )


def row(rows: list[Row], measure: str) -> Row:
    (found,) = [r for r in rows if r.measure == measure]
    return found


def test_ingest_rows_put_each_peer_beside_ours_with_the_ratio_against_its_aim() -> None:
    rows = build_rows(full_results())
    storescp = row(rows, "ingest 400 MR, 1 sender (storescu), vs storescp")
    orthanc = row(rows, "ingest 400 MR, 1 sender (storescu), vs Orthanc")
    assert storescp.ratio == pytest.approx(2.5)
    assert storescp.met is Met.NO
    assert orthanc.ratio == pytest.approx(0.8)
    assert orthanc.met is Met.YES
    assert orthanc.cells() == (
        "ingest 400 MR, 1 sender (storescu), vs Orthanc",
        "1.00 s",
        "Orthanc 1.25 s",
        "0.80x",
        "≤ 1x",
        "yes",
    )


def test_a_peer_without_a_successful_push_gives_no_ratio_and_no_verdict() -> None:
    rows = build_rows(full_results())
    orthanc = row(rows, "ingest 400 MR, 4 concurrent senders (storescu), vs Orthanc")
    assert orthanc.ratio is None
    assert orthanc.met is Met.UNKNOWN
    assert orthanc.cells()[1:4] == ("0.90 s", "Orthanc: no successful push", "—")


def test_latency_median_and_max_are_judged_against_3_and_5_seconds() -> None:
    rows = build_rows(full_results())
    median = row(rows, "close → SR, one study at a time: median")
    worst = row(rows, "close → SR, one study at a time: max")
    assert (median.ours, median.met) == (2.5, Met.YES)
    assert (worst.ours, worst.met) == (6.0, Met.NO)
    at_once = row(rows, "close → SR, 4 studies at once: median")
    assert at_once.met is Met.YES
    assert median.detail == "3 studies"
    assert at_once.detail == "4 studies, 1 round"


def test_throughput_below_2000_per_hour_is_not_met_and_memory_is_the_largest_per_role() -> None:
    rows = build_rows(full_results())
    (throughput,) = [r for r in rows if r.measure.startswith("throughput")]
    assert throughput.ours == pytest.approx(1200.0)
    assert throughput.met is Met.NO
    assert "2 failed" in throughput.cells()[1]
    pool = row(rows, "peak memory: scoring pool process, largest of 2")
    assert pool.ours == 900 * 2**20
    assert pool.met is Met.NO_AIM
    assert pool.cells()[1] == "900 MiB"


def test_scoring_steps_show_their_share_and_the_rest_is_other() -> None:
    rows = build_rows(full_results())
    assert row(rows, "  scoring step: radiomics").cells()[1] == "3.00 s (75%)"
    assert row(rows, "  scoring step: other").ours == pytest.approx(1.0)


def test_training_time_is_judged_against_20_minutes() -> None:
    assert row(build_rows(full_results(900.0)), "training, demo cohort").met is Met.YES
    slow = row(build_rows(full_results(1500.0)), "training, demo cohort")
    assert slow.met is Met.NO
    assert slow.cells()[1:] == ("25.0 min", "—", "—", "≤ 20 min", "NO")


def test_skipped_failed_and_unmeasured_parts_keep_their_rows_and_say_why() -> None:
    results = Results(
        ingest=Absence.SKIPPED,
        latency=Absence.FAILED,
        at_once=Absence.SKIPPED,
        throughput=Absence.FAILED,
        profile=Absence.SKIPPED,
        crash=Absence.FAILED,
        training_seconds=Absence.NOT_MEASURED,
    )
    rows = build_rows(results)
    assert all(r.ours is None for r in rows)
    assert all(r.met in (Met.UNKNOWN, Met.NO_AIM) for r in rows)
    assert row(rows, "ingest 400 MR, 1 sender (storescu), vs Orthanc").cells()[1] == (
        "skipped (--skip)"
    )
    assert row(rows, "close → SR, one study at a time: max").cells()[1] == (
        "bench failed (see its output)"
    )
    assert row(rows, "results per killed study").cells()[1] == "bench failed (see its output)"
    training = row(rows, "training, demo cohort")
    assert training.cells()[1] == "not measured in this run"
    assert training.met is Met.UNKNOWN


def test_training_seconds_come_from_the_bundle_metrics_only_when_recorded(
    tmp_path: Path,
) -> None:
    assert training_seconds_of(tmp_path) is Absence.NOT_MEASURED
    (tmp_path / "metrics.json").write_text(json.dumps({"cv_auc": {}}))
    assert training_seconds_of(tmp_path) is Absence.NOT_MEASURED
    (tmp_path / "metrics.json").write_text(json.dumps({"training_seconds": 1234}))
    assert training_seconds_of(tmp_path) == 1234.0


def test_text_and_markdown_tables_have_one_line_per_measure() -> None:
    rows = build_rows(full_results())
    machine = Machine("2026-12-07 10:00 UTC", 2, "AMD EPYC", (0.5, 0.4, 0.3), (1.0, 0.6, 0.4))
    markdown = render_markdown(rows, machine).splitlines()
    assert markdown[0].startswith("Measured 2026-12-07 10:00 UTC, 2 CPUs (AMD EPYC)")
    table = [line for line in markdown if line.startswith("| ")]
    assert len(table) == len(rows) + 2  # the header and its rule
    assert table[0] == "| measure | onfh-dlr | peer | ratio | aim | met? |"
    assert len(render_text(rows).splitlines()) == len(rows) + 1


def test_a_record_reads_back_equal_and_a_foreign_record_is_refused(tmp_path: Path) -> None:
    record = full_results().throughput
    assert isinstance(record, ThroughputRecord)
    write_record(record, tmp_path / "throughput.json")
    assert read_record(ThroughputRecord, tmp_path / "throughput.json") == record
    with pytest.raises(ValueError, match="unknown fields"):
        read_record(LatencyRecord, tmp_path / "throughput.json")
    write_record(ingest(), tmp_path / "ingest.json")
    assert read_record(IngestRecord, tmp_path / "ingest.json") == ingest()


def test_after_a_kill_worker_back_to_sr_is_judged_against_60_seconds() -> None:
    rows = build_rows(full_results())
    median = row(rows, "after kill -9 of the worker: worker back → SR, median")
    worst = row(rows, "after kill -9 of the worker: worker back → SR, max")
    assert (median.ours, median.met, median.detail) == (20.0, Met.YES, "3 rounds")
    assert worst.cells()[1:] == ("75.00 s", "—", "—", "≤ 60 s", "NO")


def test_one_sr_per_killed_study_meets_exactly_one_and_a_duplicate_does_not() -> None:
    single = row(build_rows(full_results()), "results per killed study")
    assert single.cells()[1:] == (
        "1 (per round: 1, 1, 1; jobs: 3 done)",
        "—",
        "—",
        "exactly 1",
        "yes",
    )
    twice = CrashRecord([crash_round(10.0), crash_round(10.0, srs=2)])
    duplicate = row(build_rows(full_results(crash=twice)), "results per killed study")
    assert (duplicate.ours, duplicate.met) == (2.0, Met.NO)
    lost = CrashRecord([crash_round(10.0, srs=0, state="failed"), crash_round(10.0)])
    none = row(build_rows(full_results(crash=lost)), "results per killed study")
    assert (none.ours, none.met) == (0.0, Met.NO)
    assert none.detail == "per round: 0, 1; jobs: 1 done, 1 failed"


def test_the_crash_note_says_who_requeued_the_killed_workers_job() -> None:
    gone = dataclasses.replace(crash_round(10.0), requeued_by=RequeuedBy.PID_GONE)
    (note,) = [
        n
        for n in notes(full_results(crash=CrashRecord([crash_round(10.0), gone])))
        if n.startswith("crash:")
    ]
    assert "serve reaped the dead worker (1 round)" in note
    assert "a liveness pass found its pid gone (1 round)" in note


def test_a_crash_record_reads_back_equal_with_its_enum_and_missing_requeue(
    tmp_path: Path,
) -> None:
    unrequeued = dataclasses.replace(
        crash_round(10.0),
        killed_to_requeued=None,
        requeued_by=RequeuedBy.NOT_REQUEUED,
        requeue_detail="",
    )
    record = CrashRecord([crash_round(10.0), unrequeued])
    write_record(record, tmp_path / "crash.json")
    assert read_record(CrashRecord, tmp_path / "crash.json") == record
