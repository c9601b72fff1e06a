"""Fixtures every test folder shares: the live service and phantom cohorts.

``service``
    A listener, a worker, their Redis and a receiving PACS (``service_harness.Service``),
    started once per test module. A module that needs other settings overrides the
    ``service_settings`` fixture (``ONFH_*`` names, lower case, without the prefix)::

        @pytest.fixture(scope="module")
        def service_settings() -> dict[str, str]:
            return {"series_timeout": "3", "delivery_retries": "1"}

``phantom_cohort``
    ``phantom_cohort(cases, seed, onfh_fraction=0.5)``: a phantom cohort generated once per
    test session for each distinct argument set and shared by every test that asks for
    it. Treat it as read-only: a test that changes files copies them first.

``scale``
    The reliability suite's scale: reduced in CI, full by hand (``make reliability``).
    ``RELIABILITY_SCALE=full`` runs every fault at the size the issue states (20 worker
    kills, 10,000 fuzz cases, 2,000 malformed STOW-RS requests, a 60 s broker outage, a 5
    minute destination outage); without it each runs a reduced number of cases that keeps
    CI within its budget.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

# First, before anything loads numpy or torch: the CPU kernels the exact-number tests need.
import numeric_kernels  # noqa: F401
import pytest
from service_harness import Cohort, CohortMaker, Service, studies_of

from phantom.cohort import generate_cohort


@pytest.fixture(scope="session")
def phantom_cohort(tmp_path_factory: pytest.TempPathFactory) -> CohortMaker:
    made: dict[tuple[int, int, float], Cohort] = {}

    def make(cases: int, seed: int, onfh_fraction: float = 0.5) -> Cohort:
        key = (cases, seed, onfh_fraction)
        if key not in made:
            root = tmp_path_factory.mktemp(f"phantom-{cases}-{seed}")
            csv = generate_cohort(root, cases=cases, seed=seed, onfh_fraction=onfh_fraction)
            made[key] = Cohort(csv, studies_of(csv))
        return made[key]

    return make


@pytest.fixture(scope="module")
def service_settings() -> dict[str, str]:
    """The module's service settings beyond the harness' defaults (override per module)."""
    return {}


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, service_settings: dict[str, str]
) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("service"), **service_settings)
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


@dataclass(frozen=True)
class Scale:
    """How many cases each reliability fault runs."""

    full: bool
    worker_kills: int
    fuzz_datasets: int
    fuzz_pdus: int
    broker_outage_s: float
    destination_outage_s: float
    studies: int
    fuzz_stow: int  # malformed STOW-RS requests (tests/reliability/test_fuzz_stow.py)


FULL = Scale(True, 20, 10_000, 2_000, 60.0, 300.0, 6, 2_000)
REDUCED = Scale(False, 3, 1_000, 200, 12.0, 20.0, 3, 300)


@pytest.fixture(scope="session")
def scale() -> Scale:
    return FULL if os.environ.get("RELIABILITY_SCALE", "").lower() == "full" else REDUCED
