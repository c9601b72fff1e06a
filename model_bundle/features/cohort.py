"""Cohorts: the cohort CSV, the per-series loop and the cohort runner with its pool.

:class:`SeriesJob` is all hips of one series; :func:`read_cohort` groups a cohort CSV's
rows into jobs. :func:`per_hip` is the per-series loop (one load, one segmentation,
every failure a reason on that hip) and :func:`run_cohort` the cohort runner with its
process pool, shared by the three batch commands (``features``, ``train``,
``evaluate``); :func:`cohort_features` runs :func:`run_series_job` over a cohort.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from torch import nn

from model_bundle.features.deep import build_resnet18
from model_bundle.features.hip import FeatureSpec, hip_features, series_rois
from model_bundle.features.radiomics import load_params
from model_bundle.imaging import HipROI, HipSearch, LoadedSeries, Side, load_series
from onfh_dlr.errors import ConfigurationError, OnfhError
from onfh_dlr.pools import process_pool

log = logging.getLogger(__name__)

J = TypeVar("J")
R = TypeVar("R")
T = TypeVar("T")


@dataclass(frozen=True)
class SeriesJob:
    """All hips of one series (one load, one segmentation for both sides)."""

    image: Path
    mask: Path | None
    hips: tuple[dict[str, str], ...]  # the cohort rows of this series


def reason_of(exc: Exception) -> str:
    """The reason recorded on a hip's row for an error."""
    return f"{type(exc).__name__}: {exc}"


def job_rois(series: LoadedSeries, job: SeriesJob) -> HipSearch:
    """A job's ROIs: its Mask (a DICOM-SEG) when it has one, else auto-segmentation."""
    return series_rois(series, job.mask)


def per_hip(
    job: SeriesJob,
    compute: Callable[[LoadedSeries, HipROI, dict[str, str]], T],
    failed: Callable[[dict[str, str], str, str], T],
    *,
    rois: Callable[[LoadedSeries, SeriesJob], HipSearch] = job_rois,
) -> list[T]:
    """Run ``compute`` on every hip of a series: one load, one ROI search for all hips.

    A failure to load the series or search it, a hip whose head was not found (its own
    reason; the other hip is still computed), a hip without an ROI, and an
    :class:`~onfh_dlr.errors.OnfhError` from ``compute`` each become
    ``failed(row, reason, roi_source)`` (``roi_source`` empty when there is no ROI).
    Left/right warnings of the search are logged.
    """
    try:
        series = load_series(job.image)
        found = rois(series, job)
    except OnfhError as exc:
        return [failed(row, reason_of(exc), "") for row in job.hips]
    for warning in found.warnings:
        log.warning("%s: %s", job.image, warning.message)
    out = []
    for row in job.hips:
        text = row.get("Side", "")
        side = Side(text) if text in tuple(Side) else None
        roi = found.rois.get(side) if side is not None else None
        if roi is None:
            why = found.failures.get(side) if side is not None else None
            reason = reason_of(why) if why is not None else f"no ROI for side {text!r}"
            out.append(failed(row, reason, ""))
            continue
        try:
            out.append(compute(series, roi, row))
        except OnfhError as exc:
            out.append(failed(row, reason_of(exc), roi.source))
    return out


def run_cohort(
    jobs: Sequence[J],
    work: Callable[[J], R],
    *,
    workers: int = 1,
    initializer: Callable[..., object] | None = None,
    initargs: tuple[object, ...] = (),
    on_result: Callable[[R], None] | None = None,
) -> Iterator[R]:
    """``work(job)`` for every job, in job order, in ``workers`` processes.

    The one cohort runner of ``features``, training and ``evaluate``. With more than
    one worker, ``work`` and ``initializer`` must be picklable (module-level functions
    or :func:`functools.partial` of them) and run in spawned processes, each of which
    calls ``initializer(*initargs)`` once; with one, everything runs here.
    """
    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        for job in jobs:
            result = work(job)
            if on_result is not None:
                on_result(result)
            yield result
        return
    with process_pool(workers, initializer, initargs) as pool:
        for result in pool.map(work, jobs):
            if on_result is not None:
                on_result(result)
            yield result


@dataclass(frozen=True)
class HipRow:
    """One row of a feature table: a hip's features, or why it has none."""

    patient_id: str
    side: Side
    label: str
    roi_source: str
    status: str  # "ok" or "failed"
    reason: str
    values: dict[str, float] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)


_COHORT_COLUMNS = frozenset({"PatientID", "Side", "Label", "Image", "Mask"})


def _extra(row: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in row.items() if k not in _COHORT_COLUMNS}


def _failed(row: dict[str, str], reason: str, source: str = "") -> HipRow:
    return HipRow(
        row.get("PatientID", ""),
        Side.parse(row.get("Side", "")),
        row.get("Label", ""),
        source,
        "failed",
        reason,
        {},
        _extra(row),
    )


_WORKER_MODEL: nn.Module | None = None


def _worker_model(spec: FeatureSpec) -> nn.Module | None:
    # One backbone per process, built on first use: building costs ~0.5 s and 50 MB.
    global _WORKER_MODEL
    if spec.deep and _WORKER_MODEL is None:
        _WORKER_MODEL = build_resnet18(spec.weights, seed=spec.seed)
    return _WORKER_MODEL


def run_series_job(job: SeriesJob, spec: FeatureSpec) -> list[HipRow]:
    """Features of every hip of one series; failures become rows with a reason."""
    params = load_params(spec.params_file)

    def compute(series: LoadedSeries, roi: HipROI, row: dict[str, str]) -> HipRow:
        model = _worker_model(spec)
        values = hip_features(series, roi, spec, model=model, params=params)
        return HipRow(
            row.get("PatientID", ""),
            roi.side,
            row.get("Label", ""),
            roi.source,
            "ok",
            "",
            values,
            _extra(row),
        )

    return per_hip(job, compute, _failed)


def read_cohort(path: Path) -> list[SeriesJob]:
    """Group a cohort CSV's rows by series; relative paths resolve against the CSV.

    Raises
    ------
    onfh_dlr.errors.ConfigurationError
        No rows, a missing column, or a row (numbered from 1 after the header) with
        fewer or more cells than the header, a Side other than L or R, or no Image.
    """
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ConfigurationError(f"{path}: no rows")
    missing = {"PatientID", "Side", "Image"} - set(rows[0])
    if missing:
        raise ConfigurationError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    groups: dict[tuple[Path, Path | None], list[dict[str, str]]] = {}
    for number, row in enumerate(rows, start=1):
        # csv.DictReader fills a short row's last cells with None and puts a long row's
        # extra cells under the key None.
        if None in row or None in row.values():
            raise ConfigurationError(
                f"{path}: row {number} does not have one cell per column of the header"
            )
        if row["Side"] not in tuple(Side):
            raise ConfigurationError(
                f"{path}: row {number}: Side must be L or R, not {row['Side']!r}"
            )
        if not row["Image"].strip():
            raise ConfigurationError(f"{path}: row {number} has no Image")
        image = (path.parent / row["Image"]).resolve()
        mask_text = (row.get("Mask") or "").strip()
        mask = (path.parent / mask_text).resolve() if mask_text else None
        groups.setdefault((image, mask), []).append(row)
    return [SeriesJob(image, mask, tuple(hips)) for (image, mask), hips in groups.items()]


def series_job(image: Path, seg: Path | None, patient_id: str = "") -> SeriesJob:
    """A job for both hips of one series directory."""
    rows = tuple(
        {"PatientID": patient_id, "Side": side.value, "Label": ""}
        for side in (Side.RIGHT, Side.LEFT)
    )
    return SeriesJob(image, seg, rows)


def cohort_features(
    jobs: Sequence[SeriesJob],
    spec: FeatureSpec,
    *,
    workers: int = 1,
    on_rows: Callable[[list[HipRow]], None] | None = None,
) -> Iterator[HipRow]:
    """Features of every hip of every job, in job order; ``workers`` processes."""
    if workers > 1:
        # Each process gets one core's worth of torch threads: two OpenMP pools on two
        # cores slow each other down several times over.
        spec = dataclasses.replace(spec, threads=spec.threads or 1)
    work = functools.partial(run_series_job, spec=spec)
    for rows in run_cohort(jobs, work, workers=workers, on_result=on_rows):
        yield from rows


__all__ = [
    "HipRow",
    "SeriesJob",
    "cohort_features",
    "job_rois",
    "per_hip",
    "read_cohort",
    "reason_of",
    "run_cohort",
    "run_series_job",
    "series_job",
]
