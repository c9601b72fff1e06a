"""Who holds a running job, and requeueing the jobs of a dead worker (real SQLite, real
processes for the liveness checks)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy

from onfh_dlr.liveness import (
    Requeued,
    WorkerIdentity,
    process_alive,
    requeue_dead_local_workers,
    requeue_jobs,
    this_host,
)
from onfh_dlr.queue import DELIVER_TASK, SCORE_TASK
from onfh_dlr.state import StateDB, default_database_url


class _Sent(list[tuple[str, str]]):
    """The tasks handed to the broker, in order (the listener's and serve's sender)."""

    def __call__(self, task: str, job_id: str) -> None:
        self.append((task, job_id))

    def of(self, task: str) -> list[str]:
        return [job_id for name, job_id in self if name == task]


@pytest.fixture
def db(tmp_path: Path) -> StateDB:
    return StateDB.for_settings(None, tmp_path)


def _job(db: StateDB, tmp_path: Path, series: str) -> str:
    db.series_received(series_uid=series, study_uid="1.2.3", instances=20, at=100.0)
    job_id = db.admit_series(series, tmp_path / series)
    db.mark_enqueued(job_id)
    return job_id


def _scored(db: StateDB, tmp_path: Path, worker: WorkerIdentity) -> str:
    """Series 1.2.3.1 scored by ``worker``, its delivery to one PACS pending."""
    job_id = _job(db, tmp_path, "1.2.3.1")
    db.start_job(job_id, worker=worker)
    assert db.job_scored(
        job_id,
        sr_path=tmp_path / "sr.dcm",
        seg_path=None,
        sr_uid="1.2.3.1.9",
        result={},
        destinations=["PACS@h:104"],
    )
    return job_id


def _dead_pid() -> int:
    """The pid of a process that ran and was reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_started_job_records_the_worker_that_claimed_it(db: StateDB, tmp_path: Path) -> None:
    job_id = _job(db, tmp_path, "1.2.3.4")
    worker = WorkerIdentity("host-a", 4242, "onfh-worker-4242-abc@host-a")
    job = db.start_job(job_id, worker=worker)
    assert job is not None and job.worker == worker
    assert db.job(job_id) == job
    started = [e for e in db.events("1.2.3.4") if e.stage == "started"]
    assert [e.detail for e in started] == [worker.name]
    # a process' claimant is recorded when no worker is named
    db.claimant = WorkerIdentity("host-b", 7, "onfh-worker-7-def@host-b")
    other = _job(db, tmp_path, "1.2.3.5")
    claimed = db.start_job(other)
    assert claimed is not None and claimed.worker == db.claimant


def test_the_running_jobs_of_a_dead_worker_go_back_to_the_queue_with_the_reason(
    db: StateDB, tmp_path: Path
) -> None:
    dead = WorkerIdentity("host-a", 100, "onfh-worker-100-a@host-a")
    alive = WorkerIdentity("host-a", 200, "onfh-worker-200-b@host-a")
    elsewhere = WorkerIdentity("host-b", 100, "onfh-worker-100-c@host-b")
    held = _job(db, tmp_path, "1.2.3.1")
    other = _job(db, tmp_path, "1.2.3.2")
    remote = _job(db, tmp_path, "1.2.3.3")
    db.start_job(held, worker=dead)
    db.start_job(other, worker=alive)
    db.start_job(remote, worker=elsewhere)
    sent = _Sent()
    requeued = requeue_jobs(db, sent, host="host-a", pid=100, reason="worker killed")
    assert requeued == Requeued(scoring=(held,)) and sent == [(SCORE_TASK, held)]
    job = db.job(held)
    assert job is not None and job.state == "queued" and job.attempts == 1
    assert [(e.stage, e.detail) for e in db.events("1.2.3.1")][-1] == ("requeued", "worker killed")
    assert {j.state for j in (db.job(other), db.job(remote)) if j is not None} == {"running"}
    # nothing left to requeue for that worker; by Celery node name instead of pid
    assert not requeue_jobs(db, sent, host="host-a", pid=100, reason="again")
    offline = requeue_jobs(db, sent, host="", name=elsewhere.name, reason="offline")
    assert offline.scoring == (remote,)
    # the requeued job is claimed again by the next worker, its attempt counted
    again = db.start_job(held, worker=alive, max_attempts=3)
    assert again is not None and again.state == "running" and again.attempts == 2


def test_a_dead_workers_scored_jobs_with_a_delivery_pending_are_delivered_again(
    db: StateDB, tmp_path: Path
) -> None:
    scorer = WorkerIdentity("host-a", 100, "onfh-worker-100-a@host-a")
    deliverer = WorkerIdentity("host-a", 300, "onfh-delivery-300-d@host-a")

    def scored(series: str) -> str:
        job_id = _job(db, tmp_path, series)
        db.start_job(job_id, worker=scorer)
        assert db.job_scored(
            job_id,
            sr_path=tmp_path / "sr.dcm",
            seg_path=None,
            sr_uid=f"{series}.9",
            result={},
            destinations=["PACS@h:104"],
        )
        return job_id

    undelivered = scored("1.2.3.1")  # the scorer died before its delivery task was sent
    delivering = scored("1.2.3.2")  # the delivery worker died while it sent
    delivered = scored("1.2.3.3")  # nothing left to do
    db.delivery_attempted(delivered, "PACS@h:104", ok=True)
    db.settle_job(delivered)
    db.claimant = deliverer
    db.hold_for_delivery(delivering)
    assert db.holding_worker_pids("host-a") == {100, 300}
    sent = _Sent()
    gone = requeue_jobs(db, sent, host="host-a", pid=100, reason="scorer killed")
    assert gone == Requeued(delivery=(undelivered,)) and sent == [(DELIVER_TASK, undelivered)]
    gone = requeue_jobs(db, sent, host="host-a", pid=300, reason="deliverer killed")
    assert gone == Requeued(delivery=(delivering,))
    for job_id, reason in ((undelivered, "scorer killed"), (delivering, "deliverer killed")):
        job = db.job(job_id)
        assert job is not None and job.state == "scored"
        (event,) = [e for e in db.events(job.series_uid) if e.stage == "redelivered"]
        assert event.detail == reason
    # Nobody holds them until a delivery worker takes the new task and names itself.
    assert db.holding_worker_pids("host-a") == set()
    db.hold_for_delivery(undelivered)
    assert db.holding_worker_pids("host-a") == {300}


def test_a_death_two_watches_notice_redelivers_once(db: StateDB, tmp_path: Path) -> None:
    # The supervisor, the pid check and the Celery events can all see one worker die;
    # the second to act finds nothing left (CI once saw two "redelivered" events).
    job_id = _scored(db, tmp_path, WorkerIdentity("host-a", 100, "onfh-worker-100-a@host-a"))
    sent = _Sent()
    by_pid = requeue_jobs(db, sent, host="host-a", pid=100, reason="pid gone")
    by_name = requeue_jobs(
        db, sent, host="host-a", name="onfh-worker-100-a@host-a", reason="offline"
    )
    assert by_pid == Requeued(delivery=(job_id,)) and by_name == Requeued()
    assert sent == [(DELIVER_TASK, job_id)]
    assert [e.detail for e in db.events("1.2.3.1") if e.stage == "redelivered"] == ["pid gone"]


def test_a_redelivery_the_broker_cannot_take_is_tried_again_by_the_next_watch(
    db: StateDB, tmp_path: Path
) -> None:
    from onfh_dlr.errors import BrokerError

    job_id = _scored(db, tmp_path, WorkerIdentity("host-a", 100, "n@host-a"))

    def broker_down(_task: str, _job_id: str) -> None:
        raise BrokerError("connection refused")

    requeue_jobs(db, broker_down, host="host-a", pid=100, reason="gone")
    assert db.holding_worker_pids("host-a") == {100}  # given back for the next watch
    sent = _Sent()
    assert requeue_jobs(db, sent, host="host-a", pid=100, reason="gone").delivery == (job_id,)
    assert sent == [(DELIVER_TASK, job_id)]


def test_a_job_the_broker_cannot_take_stays_pending_for_the_sweeper(
    db: StateDB, tmp_path: Path
) -> None:
    from onfh_dlr.errors import BrokerError

    job_id = _job(db, tmp_path, "1.2.3.1")
    db.start_job(job_id, worker=WorkerIdentity("h", 1, "n@h"))

    def broker_down(_task: str, _job_id: str) -> None:
        raise BrokerError("connection refused")

    assert requeue_jobs(db, broker_down, host="h", pid=1, reason="gone").scoring == (job_id,)
    job = db.job(job_id)
    assert job is not None and job.state == "pending"
    assert db.jobs_to_enqueue(requeue_after=900) == [job_id]


def test_jobs_of_a_local_worker_whose_process_is_gone_are_requeued_and_a_live_ones_are_not(
    db: StateDB, tmp_path: Path
) -> None:
    host = this_host()
    gone, here = _dead_pid(), os.getpid()
    lost = _job(db, tmp_path, "1.2.3.1")
    kept = _job(db, tmp_path, "1.2.3.2")
    # same host name, another container (pid namespace): its pids mean nothing here
    other = _job(db, tmp_path, "1.2.3.3")
    db.start_job(lost, worker=WorkerIdentity(host, gone, f"w-{gone}@{host}"))
    db.start_job(kept, worker=WorkerIdentity(host, here, f"w-{here}@{host}"))
    container = f"{socket.gethostname()}/pid:[1]"
    db.start_job(other, worker=WorkerIdentity(container, gone, f"w-{gone}@c"))
    sent = _Sent()
    assert requeue_dead_local_workers(db, sent) == Requeued(scoring=(lost,))
    assert sent == [(SCORE_TASK, lost)]
    for job_id in (kept, other):
        job = db.job(job_id)
        assert job is not None and job.state == "running"


def test_a_zombie_process_counts_as_dead_and_a_running_one_as_alive() -> None:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert process_alive(process.pid)
        process.kill()
        deadline = time.monotonic() + 10
        while process_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)  # dead, not yet reaped: a zombie until wait() below
        assert not process_alive(process.pid)
    finally:
        process.kill()
        process.wait()
    assert not process_alive(process.pid)


def test_a_jobs_table_from_before_the_worker_columns_gains_them_with_old_rows_unclaimed(
    tmp_path: Path,
) -> None:
    url = default_database_url(tmp_path)
    db = StateDB(url)
    db.create_schema()
    job_id = _job(db, tmp_path, "1.2.3.1")
    db.dispose()
    old = sqlalchemy.create_engine(url)
    with old.begin() as connection:
        for column in ("worker_host", "worker_pid", "worker_name"):
            connection.execute(sqlalchemy.text(f"ALTER TABLE jobs DROP COLUMN {column}"))
    old.dispose()
    db = StateDB(url)
    db.create_schema()
    db.create_schema()  # idempotent: the second pass finds the columns
    job = db.job(job_id)
    assert job is not None and job.worker is None and job.state == "queued"
    worker = WorkerIdentity("h", 5, "n@h")
    claimed = db.start_job(job_id, worker=worker)
    assert claimed is not None and claimed.worker == worker


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_watch_requeues_a_silent_or_offline_worker_once_it_has_listened_long_enough(
    db: StateDB, tmp_path: Path
) -> None:
    from onfh_dlr.liveness import WorkerWatch
    from onfh_dlr.queue import make_celery

    clock = _Clock()
    sent = _Sent()
    app = make_celery("redis://127.0.0.1:1/0")  # never connected: events are fed below
    watch = WorkerWatch(app, db, sent, expiry=15.0, clock=clock)
    quiet = WorkerIdentity("host-x", 1, "onfh-worker-1-a@host-x")
    busy = WorkerIdentity("host-y", 2, "onfh-worker-2-b@host-y")
    leaving = WorkerIdentity("host-z", 3, "onfh-worker-3-c@host-z")
    jobs = {w.name: _job(db, tmp_path, f"1.2.3.{w.pid}") for w in (quiet, busy, leaving)}
    for worker in (quiet, busy, leaving):
        db.start_job(jobs[worker.name], worker=worker)
    watch.listening_since = clock.now
    for worker in (quiet, busy, leaving):
        watch.on_event({"type": "worker-heartbeat", "hostname": worker.name})
    clock.now += 10
    for worker in (busy, leaving):
        watch.on_event({"type": "worker-heartbeat", "hostname": worker.name})
    assert not watch.check()  # nobody silent for 15 s yet
    clock.now += 10  # quiet: 20 s silent; the others 10 s
    assert watch.check().scoring == (jobs[quiet.name],)
    job = db.job(jobs[quiet.name])
    assert job is not None and job.state == "queued"
    assert sent.of(SCORE_TASK) == [jobs[quiet.name]]
    (event,) = [e for e in db.events("1.2.3.1") if e.stage == "requeued"]
    assert "no heartbeat from worker onfh-worker-1-a@host-x" in event.detail
    # a worker-offline event requeues at once
    watch.on_event({"type": "worker-offline", "hostname": leaving.name})
    assert sent.of(SCORE_TASK) == [jobs[quiet.name], jobs[leaving.name]]
    # nothing while the watch is cut off from the broker, or has not listened for a
    # full expiry since it reconnected
    clock.now += 60
    watch.listening_since = None
    assert not watch.check()
    watch.listening_since = clock.now - 5
    assert not watch.check()
    job = db.job(jobs[busy.name])
    assert job is not None and job.state == "running"
    clock.now += 10  # busy's last heartbeat is 80 s old, the watch listened for 15 s
    assert watch.check().scoring == (jobs[busy.name],)


def test_the_watch_hears_a_real_worker_and_requeues_its_job_once_its_heartbeats_stop(
    tmp_path: Path,
) -> None:
    """A delivery worker (no bundle: quick to start) on a real broker; its job is recorded
    under another host, so only its Celery heartbeats can tell that it died."""
    import threading

    from onfh_dlr.broker import EmbeddedRedis
    from onfh_dlr.liveness import WorkerWatch
    from onfh_dlr.queue import make_celery

    data = tmp_path / "data"
    db = StateDB.for_settings(None, data)
    with EmbeddedRedis(tmp_path / "broker", password="secret") as broker:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ONFH_")}
        env.update(ONFH_BROKER_URL=broker.url, ONFH_DATA_DIR=str(data))
        log = (tmp_path / "worker.log").open("wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "onfh_dlr", "worker", "--delivery-only"],
            env=env,
            stdout=log,
            stderr=log,
        )
        stop = threading.Event()
        sent = _Sent()
        watch = WorkerWatch(make_celery(broker.url), db, sent, expiry=5.0)
        thread = threading.Thread(target=watch.run, args=(stop, 0.5), daemon=True)
        thread.start()
        try:
            prefix = f"onfh-delivery-{worker.pid}-"
            deadline = time.monotonic() + 90
            while not any(n.startswith(prefix) for n in watch.last_seen):
                assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
                assert worker.poll() is None, (tmp_path / "worker.log").read_text()
                time.sleep(0.2)
            (name,) = [n for n in watch.last_seen if n.startswith(prefix)]
            job_id = _job(db, tmp_path, "1.2.3.1")
            db.start_job(job_id, worker=WorkerIdentity("a-host-elsewhere", worker.pid, name))
            time.sleep(6)  # past the expiry: the worker is alive, its heartbeats keep coming
            job = db.job(job_id)
            assert job is not None and job.state == "running" and sent == []
            worker.kill()
            worker.wait(10)
            killed = time.monotonic()
            while not sent:
                assert time.monotonic() - killed < 30, "the watch did not requeue the job"
                time.sleep(0.2)
            assert sent == [(SCORE_TASK, job_id)]
            (event,) = [e for e in db.events("1.2.3.1") if e.stage == "requeued"]
            assert f"no heartbeat from worker {name}" in event.detail
        finally:
            stop.set()
            if worker.poll() is None:
                worker.kill()
                worker.wait(10)
            log.close()
    db.dispose()
