"""Sending results to a destination (C-STORE or STOW-RS), and the retry schedule."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from onfh_dlr.errors import DeliveryError
from onfh_dlr.settings import Destination, Transport
from worker.scu import STORED_STATUSES, store_files
from worker.stow import stow_files

log = logging.getLogger(__name__)


def backoff_delay(attempt: int, *, base: float, cap: float) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): ``base * 2**(attempt-1)``, capped."""
    return float(min(cap, base * 2 ** max(0, attempt - 1)))


def send_files(
    destination: Destination,
    paths: Sequence[Path],
    *,
    calling_ae: str,
    token: str | None = None,
    timeout: float = 30.0,
) -> None:
    """Send every file to ``destination``: C-STORE in one association, or STOW-RS in one
    request (with ``token`` as bearer token).

    Raises
    ------
    DeliveryError
        The association or request failed, or an object was not stored (a C-STORE
        status other than success or warning; a STOW-RS failure reason).
    PermanentError
        A file to send cannot be read (a damaged outputs directory).
    """
    if destination.transport is Transport.STOW_RS:
        stow_files(destination.url, paths, token=token, timeout=timeout)
        return
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
