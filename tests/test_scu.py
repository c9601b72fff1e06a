"""The delivery SCU against a real pynetdicom Storage SCP that misbehaves."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dicom_factory import SeriesSpec, make_series, write_datasets
from pynetdicom import AE, evt
from pynetdicom.sop_class import MRImageStorage  # type: ignore[attr-defined]

from onfh_dlr.broker import free_port
from onfh_dlr.errors import DeliveryError
from worker.scu import store_files


@pytest.fixture()
def aborting_scp() -> Iterator[int]:
    """A Storage SCP that stores two instances and aborts the association on the third."""
    stored: list[str] = []

    def on_store(event: Any) -> int:
        stored.append(event.request.AffectedSOPInstanceUID)
        if len(stored) == 3:
            event.assoc.abort()
        return 0x0000

    ae = AE(ae_title="ABORTS")
    ae.add_supported_context(MRImageStorage, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    assert server is not None
    try:
        yield port
    finally:
        server.shutdown()


def test_a_push_the_peer_aborts_says_it_was_aborted_and_after_how_many(
    aborting_scp: int, tmp_path: Path
) -> None:
    files = write_datasets(make_series(SeriesSpec(n_slices=5)).datasets, tmp_path)
    with pytest.raises(DeliveryError) as raised:
        store_files(
            files,
            host="127.0.0.1",
            port=aborting_scp,
            called_ae="ABORTS",
            calling_ae="ONFH",
            timeout=5,
        )
    # How many objects the sender got out before it noticed is pynetdicom's timing (3 or
    # 4); that the peer aborted, and that the last one has no response, is not.
    message = str(raised.value)
    assert re.fullmatch(
        rf"ABORTS@127\.0\.0\.1:{aborting_scp}: association aborted after [34] objects "
        r"\(last status no response\)",
        message,
    ), message
