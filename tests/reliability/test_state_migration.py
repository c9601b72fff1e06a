"""A PostgreSQL state DB from before the worker columns gains them in place (SQLite:
``tests/test_worker_liveness.py``)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from test_storage_faults import PrivateCluster

from onfh_dlr.liveness import WorkerIdentity
from onfh_dlr.state import StateDB


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    if shutil.which("runuser") is None:
        pytest.fail("runuser is required: run `make system-deps`")
    made = PrivateCluster(password="pg-" + os.urandom(12).hex())
    try:
        yield made.init()
    finally:
        made.destroy()


def test_a_postgres_jobs_table_without_the_worker_columns_gains_them_keeping_its_rows(
    cluster: PrivateCluster, tmp_path: Path
) -> None:
    db = StateDB(cluster.url)
    db.create_schema()
    db.series_received(series_uid="1.2.3.1", study_uid="1.2.3", instances=3, at=1.0)
    job_id = db.admit_series("1.2.3.1", tmp_path)
    db.dispose()
    old = sqlalchemy.create_engine(cluster.url)
    with old.begin() as connection:  # the jobs table as the release before this one had it
        for column in ("worker_host", "worker_pid", "worker_name"):
            connection.execute(sqlalchemy.text(f"ALTER TABLE jobs DROP COLUMN {column}"))
    old.dispose()
    first, second = StateDB(cluster.url), StateDB(cluster.url)
    first.create_schema()
    second.create_schema()  # a second process starting: finds the columns, adds none
    job = second.job(job_id)
    assert job is not None and job.worker is None and job.state == "pending"
    worker = WorkerIdentity("host-a", 41, "onfh-worker-41-abc@host-a")
    claimed = first.start_job(job_id, worker=worker)
    assert claimed is not None and claimed.worker == worker
    assert first.holding_worker_pids("host-a") == {41}
    assert first.requeue_jobs_of(host="host-a", pid=41, reason="gone") == ([job_id], [])
    first.dispose()
    second.dispose()
