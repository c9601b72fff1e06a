"""The worker: scores a series and builds the SEG and SR sent back to the PACS.

Public names are re-exported here but imported on first use (PEP 562): importing a
light module such as ``worker.scu`` (the demo and tests do) loads neither torch,
PyRadiomics nor highdicom.

What lives here: scoring (``pipeline``), the SEG and SR (``seg_output``, ``sr_output``),
jobs and delivery with retries (``jobs``, ``delivery``), the SCU (``scu``: C-STORE and
C-ECHO), STOW-RS out (``stow``), the Celery tasks and the worker process (``tasks``,
``main``). It imports the kernel ``onfh_dlr``, ``model_bundle`` and nothing else of the
project (never ``listener``); only ``onfh_dlr.cli`` and tests import it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "DEFAULT_SERIES_NUMBER_BASE": "pipeline",
    "OutputUIDs": "pipeline",
    "ScoredStudy": "pipeline",
    "output_uids": "pipeline",
    "score_series": "pipeline",
    "validate_outputs": "pipeline",
    "write_outputs": "pipeline",
    "SEGMENT_LABELS": "seg_output",
    "OutputDevice": "seg_output",
    "build_segmentation": "seg_output",
    "ReportedHip": "sr_output",
    "build_report": "sr_output",
    "read_report": "sr_output",
    "DeliveryRound": "jobs",
    "WorkerContext": "jobs",
    "deliver_job": "jobs",
    "score_job": "jobs",
    "backoff_delay": "delivery",
    "send_files": "delivery",
    "build_worker_app": "main",
    "run_worker": "main",
}

if TYPE_CHECKING:
    from worker.delivery import backoff_delay as backoff_delay
    from worker.delivery import send_files as send_files
    from worker.jobs import DeliveryRound as DeliveryRound
    from worker.jobs import WorkerContext as WorkerContext
    from worker.jobs import deliver_job as deliver_job
    from worker.jobs import score_job as score_job
    from worker.main import build_worker_app as build_worker_app
    from worker.main import run_worker as run_worker
    from worker.pipeline import (
        DEFAULT_SERIES_NUMBER_BASE as DEFAULT_SERIES_NUMBER_BASE,
    )
    from worker.pipeline import OutputUIDs as OutputUIDs
    from worker.pipeline import ScoredStudy as ScoredStudy
    from worker.pipeline import output_uids as output_uids
    from worker.pipeline import score_series as score_series
    from worker.pipeline import validate_outputs as validate_outputs
    from worker.pipeline import write_outputs as write_outputs
    from worker.seg_output import SEGMENT_LABELS as SEGMENT_LABELS
    from worker.seg_output import OutputDevice as OutputDevice
    from worker.seg_output import build_segmentation as build_segmentation
    from worker.sr_output import ReportedHip as ReportedHip
    from worker.sr_output import build_report as build_report
    from worker.sr_output import read_report as read_report

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"worker.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
