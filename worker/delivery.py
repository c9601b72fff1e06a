"""Sending results to a destination by C-STORE, and the retry schedule."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from onfh_dlr.errors import DeliveryError
from onfh_dlr.settings import Destination
from worker.scu import STORED_STATUSES, store_files

log = logging.getLogger(__name__)


def backoff_delay(attempt: int, *, base: float, cap: float) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): ``base * 2**(attempt-1)``, capped."""
    return float(min(cap, base * 2 ** max(0, attempt - 1)))


def send_files(
    destination: Destination,
    paths: Sequence[Path],
    *,
    calling_ae: str,
    timeout: float = 30.0,
) -> None:
    """C-STORE each file to ``destination`` in one association.

    Raises
    ------
    DeliveryError
        The association failed or a store was not answered with a success or warning.
    PermanentError
        A file to send cannot be read (a damaged outputs directory).
    """
    statuses = store_files(
        paths,
        host=destination.host,
        port=destination.port,
        called_ae=destination.ae_title,
        calling_ae=calling_ae,
        timeout=timeout,
    )
    for path, code in zip(paths, statuses, strict=True):
        if code not in STORED_STATUSES:
            text = "no response" if code < 0 else f"status 0x{code:04X}"
            raise DeliveryError(f"{destination}: C-STORE of {path.name} failed ({text})")
    log.info("delivered %d objects to %s", len(paths), destination)


__all__ = ["backoff_delay", "send_files"]
