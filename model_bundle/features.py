"""Per-hip feature vectors: the one path from a series to features, for training and serving.

:func:`hip_inputs` is the computation every caller shares (a loaded series and an ROI
in; the radiomics values and the network input out) and :func:`hip_features` adds the
deep features; training (:mod:`model_bundle.dataset`), ``onfh-dlr features``,
``onfh-dlr evaluate`` (:mod:`model_bundle.external`) and serving
(:class:`model_bundle.serving.BundleModel`) all call them. :func:`series_rois` picks
the ROI source (a DICOM-SEG when given, else auto-segmentation) for every caller,
including the worker. :func:`per_hip` is the per-series loop (one load, one
segmentation, every failure a reason on that hip) and :func:`run_cohort` the cohort
runner with its process pool, shared by the three batch commands.

Imported by the rest of ``model_bundle``, ``worker`` and ``onfh_dlr.cli``.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from torch import nn

from model_bundle.deep import DEEP_FEATURE_NAMES, build_resnet18, deep_features, deep_input
from model_bundle.imaging import (
    HipROI,
    LoadedSeries,
    Side,
    auto_rois,
    load_series,
    resample_isotropic,
    resample_labels,
    rois_from_seg,
    zscore,
)
from model_bundle.radiomics import FEATURE_NAMES, extract_radiomics, load_params
from onfh_dlr.errors import ConfigurationError, OnfhError, SegmentationError
from onfh_dlr.pools import process_pool

log = logging.getLogger(__name__)

F32 = NDArray[np.float32]
J = TypeVar("J")
R = TypeVar("R")
T = TypeVar("T")

#: Columns of a feature table before the feature values.
ID_COLUMNS = ("PatientID", "Side", "Label", "roi_source", "status", "reason")

#: mm of image kept around a hip's ROI for the deep-feature input.
HIP_MARGIN = 40.0


@dataclass(frozen=True)
class Preprocessing:
    """How a hip becomes the network input; a bundle's ``preprocessing.json`` ``deep_input``.

    The defaults are what training has always used. Interpolation (B-spline), the
    z-score over the hip region and the slice choice (largest ROI area) are fixed in
    code; a bundle that asks for anything else is refused rather than served differently.
    """

    region_margin_mm: float = HIP_MARGIN
    resample_mm: float = 1.0
    crop_margin: float = 0.15
    size: int = 224

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Preprocessing:
        """Read a bundle's ``deep_input`` object (ConfigurationError if unsupported)."""
        fixed = {
            "interpolator": "bspline",
            "normalisation": "z-score over the hip region",
            "slice": "coronal slice with the largest ROI area",
        }
        for key, value in fixed.items():
            if key in data and data[key] != value:
                raise ConfigurationError(
                    f"preprocessing {key} {data[key]!r} is not supported (only {value!r})"
                )
        try:
            return cls(
                region_margin_mm=_number(data.get("region_margin_mm", HIP_MARGIN)),
                resample_mm=_number(data.get("resample_mm", 1.0)),
                crop_margin=_number(data.get("crop_margin", 0.15)),
                size=int(_number(data.get("size", 224))),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"preprocessing parameters unreadable: {exc}") from exc


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{value!r} is not a number")
    return float(value)


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
    preprocessing: Preprocessing = Preprocessing()

    @property
    def names(self) -> tuple[str, ...]:
        """Feature columns, in output order."""
        rad = self.radiomics if self.radiomics is not None else FEATURE_NAMES
        return tuple(rad) + (DEEP_FEATURE_NAMES if self.deep else ())


SegSource = Path | str | Dataset | hd.seg.Segmentation


def series_rois(series: LoadedSeries, seg: SegSource | None) -> dict[Side, HipROI]:
    """ROIs of both hips: from ``seg`` when given, else auto-segmented.

    The one ROI-source choice of training, ``features``, ``evaluate`` and the worker.
    """
    if seg is None:
        return auto_rois(series)
    return rois_from_seg(seg, series)


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


def preprocessed(
    series: LoadedSeries, roi: HipROI, preprocessing: Preprocessing = Preprocessing()
) -> tuple[sitk.Image, sitk.Image]:
    """The deep-feature input: the hip's region at 1 mm isotropic, z-scored, and its ROI.

    Only the ROI's box plus the region margin is resampled (B-spline over the whole
    field of view costs seconds), and the z-score statistics come from that region, so
    they describe the hip, not how much air or bladder the field of view holds.
    """
    image, mask = hip_region(series.image, roi.mask, preprocessing.region_margin_mm)
    iso = resample_isotropic(image, preprocessing.resample_mm, interpolator="bspline")
    return zscore(iso), resample_labels(mask, iso)


@dataclass(frozen=True)
class HipInputs:
    """What the models read from one hip: named radiomics and the network input."""

    radiomics: dict[str, float]
    network_input: F32 | None  # (3, size, size); None when not asked for


def hip_inputs(
    series: LoadedSeries,
    roi: HipROI,
    *,
    params: Mapping[str, object] | None = None,
    radiomics: Sequence[str] | None = None,
    network_input: bool = True,
    preprocessing: Preprocessing = Preprocessing(),
) -> HipInputs:
    """The radiomics values and the network input of one hip: the shared feature path.

    Radiomics run on the series image as loaded (``params`` resample and normalise;
    ``None`` = the packaged file); ``radiomics`` names the features wanted (``None``:
    all, an empty sequence: none). The network input is the largest coronal ROI slice
    of the preprocessed hip region.
    """
    values: dict[str, float] = {}
    if radiomics is None or len(radiomics) > 0:
        values = extract_radiomics(
            series.image,
            roi.mask,
            dict(params) if params is not None else None,
            features=radiomics,
        )
    net: F32 | None = None
    if network_input:
        image, mask = preprocessed(series, roi, preprocessing)
        net = deep_input(image, mask, margin=preprocessing.crop_margin, size=preprocessing.size)
    return HipInputs(values, net)


def hip_features(
    series: LoadedSeries,
    roi: HipROI,
    spec: FeatureSpec,
    *,
    model: nn.Module | None = None,
    params: Mapping[str, object] | None = None,
) -> dict[str, float]:
    """All features of one hip, named as in :attr:`FeatureSpec.names`.

    :func:`hip_inputs`, then the backbone's 512 pooled features when ``spec.deep`` is
    set; ``model`` is then required (build it once per process with
    :func:`build_resnet18`).
    """
    if spec.deep and model is None:
        raise ConfigurationError("deep features need a model (build_resnet18)")
    inputs = hip_inputs(
        series,
        roi,
        params=params,
        radiomics=spec.radiomics,
        network_input=spec.deep,
        preprocessing=spec.preprocessing,
    )
    values = dict(inputs.radiomics)
    if inputs.network_input is not None:
        assert model is not None
        vector = deep_features(model, inputs.network_input, num_threads=spec.threads)[0]
        values.update(zip(DEEP_FEATURE_NAMES, (float(v) for v in vector), strict=True))
    return values


@dataclass(frozen=True)
class SeriesJob:
    """All hips of one series (one load, one segmentation for both sides)."""

    image: Path
    mask: Path | None
    hips: tuple[dict[str, str], ...]  # the cohort rows of this series


def reason_of(exc: Exception) -> str:
    """The reason recorded on a hip's row for an error."""
    return f"{type(exc).__name__}: {exc}"


def job_rois(series: LoadedSeries, job: SeriesJob) -> dict[Side, HipROI]:
    """A job's ROIs: its Mask (a DICOM-SEG) when it has one, else auto-segmentation."""
    return series_rois(series, job.mask)


def per_hip(
    job: SeriesJob,
    compute: Callable[[LoadedSeries, HipROI, dict[str, str]], T],
    failed: Callable[[dict[str, str], str, str], T],
    *,
    rois: Callable[[LoadedSeries, SeriesJob], Mapping[Side, HipROI]] = job_rois,
) -> list[T]:
    """Run ``compute`` on every hip of a series: one load, one ROI search for all hips.

    A failure to load the series or find its ROIs, a hip without an ROI, and an
    :class:`~onfh_dlr.errors.OnfhError` from ``compute`` each become
    ``failed(row, reason, roi_source)`` (``roi_source`` empty when there is no ROI).
    """
    try:
        series = load_series(job.image)
        found = rois(series, job)
    except OnfhError as exc:
        return [failed(row, reason_of(exc), "") for row in job.hips]
    out = []
    for row in job.hips:
        text = row.get("Side", "")
        roi = found.get(Side(text)) if text in tuple(Side) else None
        if roi is None:
            out.append(failed(row, f"no ROI for side {text!r}", ""))
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
        if row["Side"] not in tuple(Side):
            raise ConfigurationError(f"{path}: Side must be L or R, not {row['Side']!r}")
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
            ident = [
                row.patient_id,
                row.side.value,
                row.label,
                row.roi_source,
                row.status,
                row.reason,
            ]
            extras = [row.extra.get(c, "") for c in extra_cols]
            feats = [repr(row.values[n]) if n in row.values else "" for n in names]
            writer.writerow([*ident, *extras, *feats])
    tmp.replace(path)


__all__ = [
    "HIP_MARGIN",
    "ID_COLUMNS",
    "FeatureSpec",
    "HipInputs",
    "HipRow",
    "Preprocessing",
    "SeriesJob",
    "cohort_features",
    "hip_features",
    "hip_inputs",
    "hip_region",
    "job_rois",
    "per_hip",
    "preprocessed",
    "read_cohort",
    "reason_of",
    "run_cohort",
    "run_series_job",
    "series_job",
    "series_rois",
    "write_feature_table",
]
