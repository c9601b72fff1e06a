"""What the listener's ``/metrics`` and ``/readyz`` read at request time."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from onfh_dlr.errors import BrokerError, StateDBError
from onfh_dlr.queue import queue_depth
from onfh_dlr.state import JOB_STATES, StateDB


class StateCollector(Collector):
    """Jobs by state (from the state DB) and the queue depth (from the broker), per scrape.

    Read at scrape time rather than counted, so that every listener and worker agrees and
    a restarted process reports the truth at once. A source that cannot be read is left
    out of that scrape (an absent series, not a wrong zero).
    """

    def __init__(self, db: StateDB, broker_url: str) -> None:
        self.db = db
        self.broker_url = broker_url

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            counts = self.db.job_counts()
        except StateDBError:
            counts = None
        if counts is not None:
            jobs = GaugeMetricFamily(
                "onfh_jobs", "Jobs in the state DB, by state.", labels=["state"]
            )
            for state in JOB_STATES:
                jobs.add_metric([state], counts.get(state, 0))
            yield jobs
        try:
            depth = queue_depth(self.broker_url)
        except BrokerError:
            return
        yield GaugeMetricFamily(
            "onfh_queue_depth", "Jobs waiting in the broker's queue.", value=depth
        )


def check_writable(directory: Path) -> None:
    """Raise unless a file can be created, written, synced and removed in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=directory, prefix=".ready-")
    try:
        os.write(fd, b"ok")
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(name)


__all__ = ["StateCollector", "check_writable"]
