"""Per-hip feature vectors: the one path from a series to features, for training and serving.

:func:`hip_features` is the computation (a loaded series and an ROI in, named values
out). :func:`series_rois` picks the ROI source (a DICOM-SEG when given, else
auto-segmentation). :func:`cohort_features` runs a cohort table with parallel workers
and turns every failure into a recorded reason on that hip's row.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from torch import nn

from model_bundle.autoseg import auto_rois
from model_bundle.deep import DEEP_FEATURE_NAMES, build_resnet18, deep_features, deep_input
from model_bundle.preprocess import resample_isotropic, resample_labels, zscore
from model_bundle.radiomics import FEATURE_NAMES, extract_radiomics, load_params
from model_bundle.roi import HipROI, Side
from model_bundle.seg_roi import rois_from_seg
from model_bundle.series import LoadedSeries, load_series
from onfh_dlr.errors import ConfigurationError, OnfhError, SegmentationError
from onfh_dlr.pools import process_pool

log = logging.getLogger(__name__)

#: Columns of a feature table before the feature values.
ID_COLUMNS = ("PatientID", "Side", "Label", "roi_source", "status", "reason")


@dataclass(frozen=True)
class FeatureSpec:
    """Which features to compute.

    ``radiomics`` is ``None`` for all 1,197 (else the selective subset); ``deep`` turns
    the 512 ResNet18 features on, with backbone weights from ``weights`` (a bundle's
    safetensors file or a torchvision ImageNet ``.pth``) or a seeded random init.
    """

    radiomics: tuple[str, ...] | None = None
    deep: bool = True
    weights: Path | None = None
    seed: int = 0
    params_file: Path | None = None
    threads: int | None = None  # torch threads for the forward pass (1 per worker process)

    @property
    def names(self) -> tuple[str, ...]:
        """Feature columns, in output order."""
        rad = self.radiomics if self.radiomics is not None else FEATURE_NAMES
        return tuple(rad) + (DEEP_FEATURE_NAMES if self.deep else ())


def series_rois(series: LoadedSeries, seg: Path | None) -> dict[Side, HipROI]:
    """ROIs of both hips: from ``seg`` when given, else auto-segmented."""
    if seg is None:
        return auto_rois(series)
    found = rois_from_seg(seg, series)
    out: dict[Side, HipROI] = {}
    for roi in found.values():
        out[roi.side] = roi
    return out


#: mm of image kept around a hip's ROI for the deep-feature input.
HIP_MARGIN = 40.0


def hip_region(
    image: sitk.Image, mask: sitk.Image, margin: float = HIP_MARGIN
) -> tuple[sitk.Image, sitk.Image]:
    """Crop image and mask to the ROI's bounding box grown by ``margin`` mm per side."""
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(mask)
    if not stats.HasLabel(1):
        raise SegmentationError("the ROI is empty")
    x, y, z, sx, sy, sz = stats.GetBoundingBox(1)
    grow = [int(np.ceil(margin / sp)) for sp in image.GetSpacing()]
    size = image.GetSize()
    lo = [max(0, v - g) for v, g in zip((x, y, z), grow, strict=True)]
    hi = [min(n, v + s + g) for v, s, g, n in zip((x, y, z), (sx, sy, sz), grow, size, strict=True)]
    extent = [h - lo_ for h, lo_ in zip(hi, lo, strict=True)]
    return sitk.RegionOfInterest(image, extent, lo), sitk.RegionOfInterest(mask, extent, lo)


def preprocessed(series: LoadedSeries, roi: HipROI) -> tuple[sitk.Image, sitk.Image]:
    """The deep-feature input: the hip's region at 1 mm isotropic, z-scored, and its ROI.

    Only the ROI's box plus :data:`HIP_MARGIN` is resampled (B-spline over the whole
    field of view costs seconds), and the z-score statistics come from that region, so
    they describe the hip, not how much air or bladder the field of view holds.
    """
    image, mask = hip_region(series.image, roi.mask)
    iso = resample_isotropic(image, 1.0, interpolator="bspline")
    return zscore(iso), resample_labels(mask, iso)


def hip_features(
    series: LoadedSeries,
    roi: HipROI,
    spec: FeatureSpec,
    *,
    model: nn.Module | None = None,
    params: dict[str, object] | None = None,
) -> dict[str, float]:
    """All features of one hip, named as in :attr:`FeatureSpec.names`.

    Radiomics run on the series image as loaded (the parameter file resamples and
    normalises); deep features on the preprocessed image. ``model`` is required when
    ``spec.deep`` is set (build it once per process with :func:`build_resnet18`).
    """
    values = extract_radiomics(series.image, roi.mask, params, features=spec.radiomics)
    if spec.deep:
        if model is None:
            raise ConfigurationError("deep features need a model (build_resnet18)")
        image, mask = preprocessed(series, roi)
        vector = deep_features(model, deep_input(image, mask), num_threads=spec.threads)[0]
        values.update(zip(DEEP_FEATURE_NAMES, (float(v) for v in vector), strict=True))
    return values


@dataclass(frozen=True)
class HipRow:
    """One row of a feature table: a hip's features, or why it has none."""

    patient_id: str
    side: str
    label: str
    roi_source: str
    status: str  # "ok" or "failed"
    reason: str
    values: dict[str, float] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SeriesJob:
    """All hips of one series (one load, one segmentation for both sides)."""

    image: Path
    mask: Path | None
    hips: tuple[dict[str, str], ...]  # the cohort rows of this series


def _failed(row: dict[str, str], reason: str, source: str = "") -> HipRow:
    extra = {
        k: v for k, v in row.items() if k not in {"PatientID", "Side", "Label", "Image", "Mask"}
    }
    return HipRow(
        row.get("PatientID", ""),
        row.get("Side", ""),
        row.get("Label", ""),
        source,
        "failed",
        reason,
        {},
        extra,
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
    try:
        series = load_series(job.image)
        rois = series_rois(series, job.mask)
    except OnfhError as exc:
        return [_failed(row, f"{type(exc).__name__}: {exc}") for row in job.hips]
    model = _worker_model(spec)
    params = load_params(spec.params_file)
    out = []
    for row in job.hips:
        side = row.get("Side", "")
        roi = next((r for s, r in rois.items() if s == side), None)
        if roi is None:
            out.append(_failed(row, f"no ROI for side {side!r}"))
            continue
        try:
            values = hip_features(series, roi, spec, model=model, params=params)
        except OnfhError as exc:
            out.append(_failed(row, f"{type(exc).__name__}: {exc}", roi.source))
            continue
        extra = {
            k: v for k, v in row.items() if k not in {"PatientID", "Side", "Label", "Image", "Mask"}
        }
        out.append(
            HipRow(
                row.get("PatientID", ""),
                side,
                row.get("Label", ""),
                roi.source,
                "ok",
                "",
                values,
                extra,
            )
        )
    return out


def read_cohort(path: Path) -> list[SeriesJob]:
    """Group a cohort CSV's rows by series; relative paths resolve against the CSV."""
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ConfigurationError(f"{path}: no rows")
    missing = {"PatientID", "Side", "Image"} - set(rows[0])
    if missing:
        raise ConfigurationError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    groups: dict[tuple[Path, Path | None], list[dict[str, str]]] = {}
    for row in rows:
        if row["Side"] not in ("L", "R"):
            raise ConfigurationError(f"{path}: Side must be L or R, not {row['Side']!r}")
        image = (path.parent / row["Image"]).resolve()
        mask_text = (row.get("Mask") or "").strip()
        mask = (path.parent / mask_text).resolve() if mask_text else None
        groups.setdefault((image, mask), []).append(row)
    return [SeriesJob(image, mask, tuple(hips)) for (image, mask), hips in groups.items()]


def series_job(image: Path, seg: Path | None, patient_id: str = "") -> SeriesJob:
    """A job for both hips of one series directory."""
    rows = tuple({"PatientID": patient_id, "Side": side, "Label": ""} for side in ("R", "L"))
    return SeriesJob(image, seg, rows)


def _run(args: tuple[SeriesJob, FeatureSpec]) -> list[HipRow]:
    return run_series_job(*args)


def cohort_features(
    jobs: Sequence[SeriesJob],
    spec: FeatureSpec,
    *,
    workers: int = 1,
    on_rows: Callable[[list[HipRow]], None] | None = None,
) -> Iterator[HipRow]:
    """Features of every hip of every job, in job order; ``workers`` processes."""
    if workers <= 1:
        for job in jobs:
            rows = run_series_job(job, spec)
            if on_rows is not None:
                on_rows(rows)
            yield from rows
        return
    # Each process gets one core's worth of torch threads: two OpenMP pools on two cores
    # slow each other down several times over.
    spec = dataclasses.replace(spec, threads=spec.threads or 1)
    with process_pool(workers) as pool:
        for rows in pool.map(_run, [(job, spec) for job in jobs]):
            if on_rows is not None:
                on_rows(rows)
            yield from rows


def write_feature_table(path: Path, rows: Sequence[HipRow], spec: FeatureSpec) -> None:
    """Write rows as CSV: identity columns, carried-through columns, then the features."""
    extra_cols: list[str] = []
    for row in rows:
        extra_cols += [k for k in row.extra if k not in extra_cols]
    names = spec.names
    tmp = path.with_suffix(path.suffix + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*ID_COLUMNS, *extra_cols, *names])
        for row in rows:
            ident = [row.patient_id, row.side, row.label, row.roi_source, row.status, row.reason]
            extras = [row.extra.get(c, "") for c in extra_cols]
            feats = [repr(row.values[n]) if n in row.values else "" for n in names]
            writer.writerow([*ident, *extras, *feats])
    tmp.replace(path)


__all__ = [
    "ID_COLUMNS",
    "FeatureSpec",
    "HipRow",
    "SeriesJob",
    "cohort_features",
    "hip_features",
    "preprocessed",
    "read_cohort",
    "run_series_job",
    "series_job",
    "series_rois",
    "write_feature_table",
]
