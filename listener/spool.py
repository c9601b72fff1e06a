"""The spool: durable storage of received instances, as received.

Layout: ``<root>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``. An
instance is written to a temporary file under ``<root>/.tmp/``, flushed and ``fsync``-ed,
renamed into place and its directory ``fsync``-ed; only then is it an instance. So a crash
leaves either the whole file or none, and only ``*.dcm`` files outside ``.tmp`` are ever
read as instances. Temporary files left by a crash are removed when a :class:`Spool` is
opened.

The SCP overlaps the slow half with its checks: :meth:`Spool.begin` writes and fsyncs the
temporary file in a writer thread while the handler decodes and checks the dataset, and
:meth:`Spool.commit` waits for that fsync, renames and fsyncs the directory; the C-STORE is
answered only after ``commit`` returns. A refused instance's temporary file is discarded.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from listener.uids import check_uid, is_valid_uid
from onfh_dlr.errors import MissingAttributeError, SpoolError, SpoolFullError
from onfh_dlr.settings import Transport

log = logging.getLogger(__name__)

#: Name of the directory (inside the spool root) that holds files being written.
TMP_DIR = ".tmp"
_TMP_SUFFIX = ".part"
_FULL_ERRNOS = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


@dataclass(frozen=True)
class StoreResult:
    """What :meth:`Spool.store` did.

    ``duplicate`` is true when an instance with this SOP Instance UID was already in
    the spool; ``replaced`` is true when its bytes differed and the new ones replaced it.
    """

    path: Path
    duplicate: bool = False
    replaced: bool = False


@dataclass(frozen=True)
class StoredInstance:
    """A durable instance, as handed to the tracker (the SCP's ``Intake``).

    ``header`` is the dataset without its pixel data (sequences such as
    ReferencedSeriesSequence or the functional groups are kept).
    """

    path: Path
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    calling_ae: str
    duplicate: bool
    header: Dataset = field(repr=False, compare=False)
    received_at: float
    replaced: bool = False
    transport: Transport = Transport.DIMSE
    peer_address: str = ""  # the STOW-RS client's IP address; "" for C-STORE

    @classmethod
    def from_header(
        cls,
        path: Path,
        header: Dataset,
        *,
        calling_ae: str = "",
        received_at: float | None = None,
        duplicate: bool = False,
        replaced: bool = False,
    ) -> StoredInstance:
        """Build the record of an instance from its header (e.g. a spool file read back).

        Raises
        ------
        MissingAttributeError
            If a UID is missing.
        InvalidUIDError
            If a UID is not a valid DICOM UID.
        """
        uids = {}
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
            value = header.get(keyword)
            if value is None or str(value) == "":
                raise MissingAttributeError(f"{path.name}: {keyword} is missing")
            uids[keyword] = check_uid(value, keyword)
        return cls(
            path=path,
            study_uid=uids["StudyInstanceUID"],
            series_uid=uids["SeriesInstanceUID"],
            sop_instance_uid=uids["SOPInstanceUID"],
            sop_class_uid=uids["SOPClassUID"],
            calling_ae=calling_ae,
            duplicate=duplicate,
            header=header,
            received_at=time.time() if received_at is None else received_at,
            replaced=replaced,
        )


@dataclass(frozen=True)
class PendingWrite:
    """An instance's bytes on their way to a fsynced temporary file (:meth:`Spool.begin`).

    ``size`` and ``parts`` let :meth:`Spool.commit` compare with a stored duplicate.
    """

    future: Future[str] = field(repr=False)
    parts: Sequence[bytes] = field(repr=False)


def _fsync_dir(path: Path) -> None:
    # A rename or a new entry is durable only once its directory is synced.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _same_content(path: Path, parts: Sequence[bytes]) -> bool:
    try:
        if path.stat().st_size != sum(len(p) for p in parts):
            return False
        return path.read_bytes() == b"".join(parts)
    except OSError:
        return False  # unreadable: rewrite it


class Spool:
    """Durable, idempotent storage of received instances under ``root``.

    Parameters
    ----------
    root
        The spool directory (``data_dir / "spool"``); created if missing.
    stale_temp_age
        Temporary files older than this (seconds) are removed on opening. A write takes
        well under a second, so an old temporary file is a crash's leftover; younger ones
        are kept because other listeners may share the spool volume.

    Raises
    ------
    SpoolError
        If the spool directory cannot be created.
    """

    def __init__(
        self, root: Path, *, stale_temp_age: float = 600.0, writer_threads: int = 4
    ) -> None:
        self.root = Path(root)
        # fsync releases the GIL: writes of concurrent associations overlap each other
        # and the handlers' parsing.
        self._writers = ThreadPoolExecutor(writer_threads, thread_name_prefix="spool-write")
        self.tmp_dir = self.root / TMP_DIR
        try:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(f"cannot create spool directory {self.tmp_dir}: {exc}") from exc
        removed = self.clean_temp(older_than=stale_temp_age)
        if removed:
            log.warning("removed %d temporary file(s) left in %s by a crash", removed, self.tmp_dir)

    def path_for(self, study_uid: str, series_uid: str, sop_instance_uid: str) -> Path:
        """Where an instance lives in the spool.

        Raises
        ------
        InvalidUIDError
            If a UID is not a valid DICOM UID (so no UID can escape the spool).
        """
        study = check_uid(study_uid, "StudyInstanceUID")
        series = check_uid(series_uid, "SeriesInstanceUID")
        sop = check_uid(sop_instance_uid, "SOPInstanceUID")
        return self.root / study / series / f"{sop}.dcm"

    def begin(self, parts: Sequence[bytes]) -> PendingWrite:
        """Start writing ``parts`` to a temporary file and fsyncing it, in a writer thread.

        Follow with :meth:`commit` (the instance is accepted) or :meth:`discard`.
        """
        return PendingWrite(self._writers.submit(self._write_temp, parts), parts)

    def commit(
        self, pending: PendingWrite, study_uid: str, series_uid: str, sop_instance_uid: str
    ) -> StoreResult:
        """Finish a :meth:`begin`: as :meth:`store`, with the bytes given to ``begin``.

        Returns only once the instance is on stable storage (its fsynced file renamed into
        place and the directory fsynced). Raises as :meth:`store`; the temporary file is
        removed on any failure and when the instance is an identical duplicate.
        """
        try:
            target = self.path_for(study_uid, series_uid, sop_instance_uid)
        except Exception:
            self.discard(pending)
            raise
        duplicate = target.exists()
        if duplicate and _same_content(target, pending.parts):
            self.discard(pending)
            return StoreResult(target, duplicate=True, replaced=False)
        try:
            tmp_path = pending.future.result()
        except OSError as exc:
            raise self._error(target, exc) from exc
        self._finish(tmp_path, target)
        return StoreResult(target, duplicate=duplicate, replaced=duplicate)

    def discard(self, pending: PendingWrite) -> None:
        """Drop a :meth:`begin` whose instance is refused: its temporary file is removed."""

        def remove(future: Future[str]) -> None:
            if future.exception() is None:
                with contextlib.suppress(OSError):
                    os.unlink(future.result())

        pending.future.add_done_callback(remove)

    def _write_temp(self, parts: Sequence[bytes]) -> str:
        """Write ``parts`` to a new temporary file and fsync it; its path. Removed on failure."""
        fd, tmp_path = tempfile.mkstemp(dir=self.tmp_dir, prefix="instance.", suffix=_TMP_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as fh:
                for part in parts:
                    fh.write(part)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp_path)
            raise
        return tmp_path

    def _finish(self, tmp_path: str, target: Path) -> None:
        """Rename a fsynced temporary file to ``target`` and fsync its directory."""
        try:
            self._make_dirs(target.parent)
            # os.replace is an atomic rename that also replaces an existing (older) copy.
            os.replace(tmp_path, target)
            _fsync_dir(target.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp_path)
            raise self._error(target, exc) from exc

    def _error(self, target: Path, exc: OSError) -> SpoolError:
        if exc.errno in _FULL_ERRNOS:
            return SpoolFullError(f"spool {self.root} is full: {exc.strerror}")
        return SpoolError(f"cannot write {target.name} to spool {self.root}: {exc}")

    def store(
        self, study_uid: str, series_uid: str, sop_instance_uid: str, parts: Sequence[bytes]
    ) -> StoreResult:
        """Write one instance durably; return only once it is on stable storage.

        Parameters
        ----------
        study_uid, series_uid, sop_instance_uid
            The instance's UIDs (checked).
        parts
            The file's bytes, in pieces that are written one after the other (preamble
            and file meta, then the dataset as received).

        Returns
        -------
        StoreResult
            The path, and whether the instance was a duplicate (and was replaced).

        Raises
        ------
        InvalidUIDError
            If a UID is not a valid DICOM UID; nothing is written.
        SpoolFullError
            If the file system is full or over quota; the temporary file is removed.
        SpoolError
            For any other I/O error; the temporary file is removed.
        """
        target = self.path_for(study_uid, series_uid, sop_instance_uid)
        duplicate = target.exists()
        if duplicate and _same_content(target, parts):
            return StoreResult(target, duplicate=True, replaced=False)
        try:
            tmp_path = self._write_temp(parts)
        except OSError as exc:
            raise self._error(target, exc) from exc
        self._finish(tmp_path, target)
        return StoreResult(target, duplicate=duplicate, replaced=duplicate)

    def _make_dirs(self, directory: Path) -> None:
        missing: list[Path] = []
        current = directory
        while not current.exists() and current != self.root:
            missing.append(current)
            current = current.parent
        for path in reversed(missing):
            with contextlib.suppress(FileExistsError):  # another association made it
                path.mkdir()
            _fsync_dir(path.parent)

    def clean_temp(self, older_than: float = 0.0) -> int:
        """Remove temporary files older than ``older_than`` seconds; return how many."""
        removed = 0
        now = time.time()
        try:
            entries = list(self.tmp_dir.iterdir())
        except OSError:
            return 0
        for entry in entries:
            try:
                if entry.is_file() and now - entry.stat().st_mtime >= older_than:
                    entry.unlink()
                    removed += 1
            except OSError as exc:
                log.warning("cannot remove temporary file %s: %s", entry, exc)
        return removed

    def instances(self) -> Iterator[Path]:
        """The instance files in the spool (``*.dcm`` under valid UID directories)."""
        for study in sorted(self.root.iterdir()):
            if not (study.is_dir() and is_valid_uid(study.name)):
                continue  # .tmp and anything that is not ours
            for series in sorted(study.iterdir()):
                if not (series.is_dir() and is_valid_uid(series.name)):
                    continue
                for path in sorted(series.glob("*.dcm")):
                    if path.is_file() and is_valid_uid(path.stem):
                        yield path

    def load(self, path: Path) -> StoredInstance:
        """Read a spooled instance's header back (e.g. to rebuild state after a restart).

        Raises
        ------
        SpoolError
            If the file cannot be read or parsed.
        MissingAttributeError, InvalidUIDError
            If its UIDs are missing or invalid.
        """
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
            received_at = path.stat().st_mtime
        except (OSError, ValueError, InvalidDicomError) as exc:
            raise SpoolError(f"cannot read spooled instance {path}: {exc}") from exc
        return StoredInstance.from_header(path, header, received_at=received_at)


__all__ = ["TMP_DIR", "PendingWrite", "Spool", "StoreResult", "StoredInstance"]
