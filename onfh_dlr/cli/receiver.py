"""A small receiving Storage SCP: the stand-in PACS of the demo and the tests.

It accepts any storage SOP class, writes each object to ``directory/<SOPInstanceUID>.dcm``
and keeps a list of what it received, so the demo can wait for the SR and tests can check
what arrived. It is deliberately separate from the listener: the results must cross a
real association to a different application entity.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Received:
    """One object the receiver stored."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    modality: str


class Receiver:
    """A Storage SCP in a background thread.

    Parameters
    ----------
    directory
        Where received objects are written.
    port
        TCP port on 127.0.0.1 (or ``host``).
    ae_title
        The receiver's AE title.
    """

    def __init__(
        self, directory: Path, port: int, *, ae_title: str = "PACS", host: str = "127.0.0.1"
    ) -> None:
        self.directory = directory
        self.port = port
        self.host = host
        self.ae_title = ae_title
        self._received: list[Received] = []
        self._cond = threading.Condition()
        self._server: Any = None

    def start(self) -> Receiver:
        self.directory.mkdir(parents=True, exist_ok=True)
        ae = AE(ae_title=self.ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context(Verification)
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_ECHO, lambda _e: 0x0000),
        ]
        self._server = ae.start_server((self.host, self.port), block=False, evt_handlers=handlers)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def received(self) -> list[Received]:
        with self._cond:
            return list(self._received)

    def wait_for(self, modality: str, count: int = 1, timeout: float = 60.0) -> list[Received]:
        """Block until ``count`` objects of ``modality`` (e.g. "SR") arrived; return them."""
        with self._cond:
            self._cond.wait_for(
                lambda: sum(r.modality == modality for r in self._received) >= count, timeout
            )
            return [r for r in self._received if r.modality == modality]

    def _on_store(self, event: Any) -> int:
        try:
            ds: Dataset = event.dataset
            ds.file_meta = event.file_meta
            path = self.directory / f"{ds.SOPInstanceUID}.dcm"
            ds.save_as(path, enforce_file_format=True)
            item = Received(
                path=path,
                sop_class_uid=str(ds.SOPClassUID),
                sop_instance_uid=str(ds.SOPInstanceUID),
                study_uid=str(ds.StudyInstanceUID),
                series_uid=str(ds.SeriesInstanceUID),
                modality=str(ds.get("Modality", "")),
            )
        except Exception:
            log.exception("receiver could not store an object")
            return 0xA700
        with self._cond:
            self._received.append(item)
            self._cond.notify_all()
        return 0x0000


__all__ = ["Received", "Receiver"]
