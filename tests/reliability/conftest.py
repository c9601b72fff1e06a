"""The reliability suite's scale: reduced in CI, full by hand (``make reliability``).

``RELIABILITY_SCALE=full`` runs every fault at the size the issue states (20 worker kills,
10,000 fuzz cases, a 60 s broker outage, a 5 minute destination outage); without it each
runs a reduced number of cases that keeps CI within its budget.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Scale:
    """How many cases each fault runs."""

    full: bool
    worker_kills: int
    fuzz_datasets: int
    fuzz_pdus: int
    broker_outage_s: float
    destination_outage_s: float
    studies: int


FULL = Scale(True, 20, 10_000, 2_000, 60.0, 300.0, 6)
REDUCED = Scale(False, 3, 1_000, 200, 12.0, 20.0, 3)


@pytest.fixture(scope="session")
def scale() -> Scale:
    return FULL if os.environ.get("RELIABILITY_SCALE", "").lower() == "full" else REDUCED
