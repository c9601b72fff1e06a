"""The STOW-RS side of delivery: POST result files to a DICOMweb ``/studies`` endpoint.

Uses dicomweb-client (its own HTTP retries off: the worker's delivery rounds retry with
backoff and dead-letter, exactly as for C-STORE destinations).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.errors import InvalidDicomError

from onfh_dlr.errors import DeliveryError, PermanentError

log = logging.getLogger(__name__)


def stow_files(
    url: str,
    paths: Sequence[Path],
    *,
    token: str | None = None,
    timeout: float = 30.0,
) -> None:
    """STOW-RS every file to ``<url>/studies`` in one request.

    Parameters
    ----------
    url
        The DICOMweb root (``http(s)://host:port/path``).
    paths
        DICOM files to send.
    token
        Bearer token for the ``Authorization`` header (none: no header).
    timeout
        Seconds to wait for the connection and for the answer.

    Raises
    ------
    DeliveryError
        The peer cannot be reached, answers an HTTP error, or refuses an instance
        (``FailedSOPSequence``).
    PermanentError
        A file cannot be read.
    """
    datasets = []
    for path in paths:
        try:
            datasets.append(pydicom.dcmread(path))
        except (OSError, InvalidDicomError) as exc:
            raise PermanentError(f"cannot read {path}: {exc}") from exc
    session = requests.Session()
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    client = DICOMwebClient(url=url, session=session, timeout=timeout)
    client.set_http_retry_params(retry=False)
    try:
        answer = client.store_instances(datasets)
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise DeliveryError(f"stow+{url}: HTTP {status}") from exc
    except (requests.RequestException, ValueError) as exc:
        raise DeliveryError(f"stow+{url}: {type(exc).__name__}: {exc}") from exc
    failed = list(getattr(answer, "FailedSOPSequence", []))
    if failed:
        reasons = ", ".join(
            f"{item.get('ReferencedSOPInstanceUID', '?')}: "
            f"0x{int(item.get('FailureReason', 0)):04X}"
            for item in failed
        )
        raise DeliveryError(f"stow+{url}: {len(failed)} of {len(paths)} refused ({reasons})")
    log.info("delivered %d objects to stow+%s", len(paths), url)


__all__ = ["stow_files"]
