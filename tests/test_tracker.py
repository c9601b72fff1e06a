"""The series tracker on a real SQLite state DB and a real spool of phantom files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest
from service_harness import CohortMaker

from listener.rules import AdmissionRules
from listener.spool import StoredInstance
from listener.tracker import SeriesTracker
from onfh_dlr.errors import BrokerError
from onfh_dlr.state import StateDB


@pytest.fixture(scope="module")
def phantom(phantom_cohort: CohortMaker) -> tuple[list[Path], Path]:
    (study,) = phantom_cohort(1, 3, onfh_fraction=1.0).studies
    return study.slices, study.seg


def spooled(spool: Path, path: Path) -> StoredInstance:
    """Copy a file into the spool layout and describe it as the SCP would."""
    header = pydicom.dcmread(path, stop_before_pixels=True)
    target = spool / str(header.StudyInstanceUID) / str(header.SeriesInstanceUID)
    target.mkdir(parents=True, exist_ok=True)
    dest = target / f"{header.SOPInstanceUID}.dcm"
    shutil.copyfile(path, dest)
    return StoredInstance.from_header(dest, header, calling_ae="MR1")


class Broker:
    """The tracker's enqueue target: records job ids, or refuses while 'down'."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.down = False

    def __call__(self, job_id: str) -> None:
        if self.down:
            raise BrokerError("broker down")
        self.sent.append(job_id)


def tracker_for(db: StateDB, broker: Broker) -> SeriesTracker:
    return SeriesTracker(db, AdmissionRules(), broker, series_timeout=3600, sweep_interval=0)


def test_a_complete_series_closes_at_release_and_its_job_is_sent(
    tmp_path: Path, phantom: tuple[list[Path], Path]
) -> None:
    files, _ = phantom
    db, broker = StateDB.for_settings(None, tmp_path), Broker()
    tracker = tracker_for(db, broker)
    stored = [spooled(tmp_path / "spool", f) for f in files]
    for instance in stored:
        tracker.instance_stored(instance)
    tracker.association_released("MR1", frozenset({stored[0].series_uid}))
    (job,) = db.jobs()
    assert broker.sent == [job.id] and job.state == "queued"
    row = db.series(stored[0].series_uid)
    assert row is not None and row.state == "admitted" and row.instances == len(files)


def test_a_job_the_broker_refuses_stays_pending_until_a_sweep_sends_it(
    tmp_path: Path, phantom: tuple[list[Path], Path]
) -> None:
    files, _ = phantom
    db, broker = StateDB.for_settings(None, tmp_path), Broker()
    tracker = tracker_for(db, broker)
    broker.down = True
    stored = [spooled(tmp_path / "spool", f) for f in files]
    for instance in stored:
        tracker.instance_stored(instance)
    tracker.association_released("MR1", frozenset({stored[0].series_uid}))
    (job,) = db.jobs()
    assert job.state == "pending" and broker.sent == []
    assert tracker.sweep() == 0
    broker.down = False
    assert tracker.sweep() == 1
    assert broker.sent == [job.id]


def test_a_series_stays_open_while_the_state_db_is_down_and_closes_after(
    tmp_path: Path, phantom: tuple[list[Path], Path]
) -> None:
    files, _ = phantom
    db, broker = StateDB.for_settings(None, tmp_path), Broker()
    tracker = tracker_for(db, broker)
    stored = [spooled(tmp_path / "spool", f) for f in files]
    for instance in stored[:-1]:
        tracker.instance_stored(instance)
    # A database that refuses connections (nothing listens on port 1).
    tracker.db = StateDB("postgresql+psycopg://onfh@127.0.0.1:1/onfh?connect_timeout=2")
    tracker.instance_stored(stored[-1])  # logged, not raised: the file is durable
    tracker.association_released("MR1", frozenset({stored[0].series_uid}))
    assert tracker.open_series == [stored[0].series_uid]
    tracker.db = db
    tracker.association_released("MR1", frozenset({stored[0].series_uid}))
    assert tracker.open_series == []
    (job,) = db.jobs()
    assert broker.sent == [job.id]


def test_a_restart_recovers_open_series_but_does_not_rescore_a_linked_seg(
    tmp_path: Path, phantom: tuple[list[Path], Path]
) -> None:
    files, seg = phantom
    db, broker = StateDB.for_settings(None, tmp_path), Broker()
    spool = tmp_path / "spool"
    tracker = tracker_for(db, broker)
    tracker.instance_stored(spooled(spool, seg))
    stored = [spooled(spool, f) for f in files]
    for instance in stored:
        tracker.instance_stored(instance)
    tracker.association_released("MR1", frozenset({stored[0].series_uid}))
    (job,) = db.jobs()
    assert job.seg_path is not None and job.seg_path.name.endswith(".dcm")

    restarted = tracker_for(db, broker)
    assert restarted.recover(spool) == 1  # the SEG's own series directory is read
    assert restarted.open_series == []  # but nothing is re-opened or scored again
    assert len(db.jobs()) == 1 and broker.sent == [job.id]

    # A series whose last instances arrived after the listener died is re-opened.
    middle = stored[len(stored) // 2]
    late = tmp_path / "late.dcm"
    shutil.copyfile(middle.path, late)
    ds = pydicom.dcmread(late)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(middle.path.parent / f"{ds.SOPInstanceUID}.dcm")
    again = tracker_for(db, broker)
    again.recover(spool)
    assert again.open_series == [stored[0].series_uid]
