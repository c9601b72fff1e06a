"""The spool: durable, idempotent, atomic storage of received instances; UID checks."""

from __future__ import annotations

import errno
import os
import time
import warnings
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import MRImageStorage

from listener.spool import TMP_DIR, Spool, StoredInstance
from listener.uids import check_uid, is_valid_uid
from onfh_dlr.errors import InvalidUIDError, SpoolError, SpoolFullError

STUDY, SERIES, SOP = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2", "1.2.3.4.5"


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    "uid", ["0", "1.2.840.10008.1.1", "1.0.2", "2.25." + "1" * 59, "1.2.3\x00", "1.2.3 "]
)
def test_valid_uids(uid: str) -> None:
    assert is_valid_uid(uid)
    assert check_uid(uid) == uid.rstrip("\x00 ")


@pytest.mark.parametrize(
    "uid",
    [
        "",
        None,
        "../../etc",
        "1.2/../x",
        "1.2.3/4",
        "1.02.3",
        "01.2",
        "1..2",
        ".1.2",
        "1.2.",
        "1.2.a",
        "1.2.3\n4",
        "1" + ".1" * 32,  # 65 characters
        "\\\\server\\share",
    ],
)
def test_invalid_uids(uid: str | None) -> None:
    assert not is_valid_uid(uid)
    with pytest.raises(InvalidUIDError):
        check_uid(uid, "SOPInstanceUID")


def test_store_writes_file_atomically(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    result = spool.store(STUDY, SERIES, SOP, [b"head", b"-body"])
    assert result.path == tmp_path / "spool" / STUDY / SERIES / f"{SOP}.dcm"
    assert result.path.read_bytes() == b"head-body"
    assert not result.duplicate and not result.replaced
    assert list((tmp_path / "spool" / TMP_DIR).iterdir()) == []
    assert list(spool.instances()) == [result.path]


def test_resend_is_idempotent(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    first = spool.store(STUDY, SERIES, SOP, [b"same"])
    mtime = first.path.stat().st_mtime_ns
    again = spool.store(STUDY, SERIES, SOP, [b"sa", b"me"])
    assert again.duplicate and not again.replaced
    assert again.path == first.path and first.path.stat().st_mtime_ns == mtime
    assert _files(tmp_path) == [first.path]


def test_resend_with_other_bytes_replaces(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.store(STUDY, SERIES, SOP, [b"old"])
    result = spool.store(STUDY, SERIES, SOP, [b"newer bytes"])
    assert result.duplicate and result.replaced
    assert result.path.read_bytes() == b"newer bytes"
    assert _files(tmp_path) == [result.path]


@pytest.mark.parametrize(
    ("study", "series", "sop"),
    [("../../etc", SERIES, SOP), (STUDY, "1.2/../x", SOP), (STUDY, SERIES, "../../passwd")],
)
def test_invalid_uid_never_reaches_a_path(
    tmp_path: Path, study: str, series: str, sop: str
) -> None:
    spool = Spool(tmp_path / "spool")
    with pytest.raises(InvalidUIDError):
        spool.store(study, series, sop, [b"x"])
    assert _files(tmp_path) == []


def test_stale_temp_files_removed_on_open(tmp_path: Path) -> None:
    tmp = tmp_path / TMP_DIR
    tmp.mkdir()
    stale, fresh = tmp / "crashed.part", tmp / "writing.part"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    spool = Spool(tmp_path)
    assert not stale.exists()
    assert fresh.exists()  # perhaps another listener's write in progress
    assert list(spool.instances()) == []  # a temp file is never an instance
    assert spool.clean_temp() == 1 and not fresh.exists()


def test_instances_ignores_foreign_files(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    good = spool.store(STUDY, SERIES, SOP, [b"x"]).path
    (tmp_path / STUDY / SERIES / "notes.txt").write_text("x")
    (tmp_path / STUDY / SERIES / "bad.name.dcm").write_text("x")
    (tmp_path / "lost+found").mkdir()
    assert list(spool.instances()) == [good]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_full_disk_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    spool = Spool(tmp_path)

    def full(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr("listener.spool.os.fsync", full)
    with pytest.raises(SpoolFullError):
        spool.store(STUDY, SERIES, SOP, [b"x" * 1000])
    assert _files(tmp_path) == []


def test_other_io_error_is_a_spool_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path)

    def broken(src: str, dst: Path) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr("listener.spool.os.replace", broken)
    with pytest.raises(SpoolError) as info:
        spool.store(STUDY, SERIES, SOP, [b"x"])
    assert not isinstance(info.value, SpoolFullError)
    assert _files(tmp_path) == []


def _header() -> Dataset:
    ds = Dataset()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = STUDY, SERIES, SOP
    ds.SOPClassUID = MRImageStorage
    ds.Modality = "MR"
    return ds


def test_load_reads_a_spooled_instance_back(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    ds = _header()
    ds.Rows = ds.Columns = 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = b"\x00\x01"
    path = tmp_path / "x.dcm"
    ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=True)
    stored = spool.store(STUDY, SERIES, SOP, [path.read_bytes()]).path
    instance = spool.load(stored)
    assert (instance.study_uid, instance.series_uid, instance.sop_instance_uid) == (
        STUDY,
        SERIES,
        SOP,
    )
    assert instance.sop_class_uid == MRImageStorage and "PixelData" not in instance.header
    assert instance.received_at == pytest.approx(stored.stat().st_mtime)


def test_from_header_checks_uids(tmp_path: Path) -> None:
    instance = StoredInstance.from_header(tmp_path / "x.dcm", _header(), calling_ae="PACS")
    assert instance.calling_ae == "PACS" and not instance.duplicate
    bad = _header()
    with warnings.catch_warnings():  # pydicom warns about the invalid UI value, as it should
        warnings.simplefilter("ignore")
        bad.SeriesInstanceUID = "1.2/../x"
    with pytest.raises(InvalidUIDError):
        StoredInstance.from_header(tmp_path / "x.dcm", bad)
