"""The training dataset: per-hip radiomics and network inputs, cached on disk.

Extracting 1,197 radiomics features takes seconds per hip, so training keeps what it
extracted in a cache directory, one ``.npz`` per series (no pickle: loaded with
``allow_pickle=False``), keyed by everything that changes the result: the series and
mask files (paths, sizes, modification times), the PyRadiomics parameters and the
code version. A re-run, or a run interrupted half-way, only extracts what is missing.
Each entry also keeps the series' acquisition parameters (for the bundle's reference
statistics); an entry written before it kept them is completed from one header of its
series (read without pixels) instead of being extracted again, so existing caches stay
valid.

Each hip's inputs come from :func:`model_bundle.features.hip_inputs`, the feature path
serving uses, and the cohort runs on :func:`model_bundle.features.run_cohort`.
Imported by training and ``onfh_dlr.cli``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from model_bundle.features import (
    NormalisationProfile,
    Preprocessing,
    SeriesJob,
    feature_names,
    hip_inputs,
    load_params,
    per_hip,
    run_cohort,
    series_rois,
)
from model_bundle.imaging import (
    MR_IMAGE_SOP_CLASSES,
    Acquisition,
    HipROI,
    HipSearch,
    LoadedSeries,
    Side,
    acquisition_from_dataset,
    acquisition_of,
    lesion_rois_from_seg,
)
from onfh_dlr.errors import SegmentationError

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]


@dataclass(frozen=True)
class HipSample:
    """One hip of the cohort: its identity and label, and its inputs or why it has none."""

    patient_id: str
    side: Side
    label: int
    row: dict[str, str]
    radiomics: F64 | None  # (1197,) in feature_names() order
    network_input: F32 | None  # (3, 224, 224)
    roi_source: str
    reason: str
    # The series' acquisition (None for a NIfTI image or a series that did not load).
    acquisition: Acquisition | None = None

    @property
    def ok(self) -> bool:
        return self.radiomics is not None and self.network_input is not None


def _file_stamp(path: Path) -> list[object]:
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    return [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.is_file()]


def cache_key(
    job: SeriesJob,
    params: dict[str, object],
    roi_protocol: str = "head",
    profile: NormalisationProfile = NormalisationProfile.PAPER,
) -> str:
    """A key that changes whenever the inputs, the parameters or the code change."""
    try:
        version = importlib.metadata.version("onfh-dlr")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - not installed
        version = "unknown"
    payload = {
        "image": _file_stamp(job.image) if job.image.exists() else str(job.image),
        "mask": None
        if job.mask is None
        else (_file_stamp(job.mask) if job.mask.exists() else str(job.mask)),
        "sides": [h.get("Side", "") for h in job.hips],
        "params": params,
        "version": version,
    }
    if roi_protocol != "head":  # the default protocol keeps the keys it always had
        payload["roi_protocol"] = roi_protocol
    if profile is not NormalisationProfile.PAPER:  # likewise the profile that predates profiles
        payload["profile"] = profile.value
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _label(row: dict[str, str]) -> int:
    text = (row.get("Label") or "").strip()
    if text not in ("0", "1"):
        raise ValueError(
            f"{row.get('PatientID', '?')} {row.get('Side', '?')}: "
            f"Label must be 0 or 1, not {text!r}"
        )
    return int(text)


def extract_job(
    job: SeriesJob,
    params: dict[str, object],
    roi_protocol: str = "head",
    profile: NormalisationProfile = NormalisationProfile.PAPER,
) -> list[HipSample]:
    """Radiomics and network inputs of every hip of one series; failures keep a reason.

    ``roi_protocol="lesion"`` reproduces the source paper: an ONFH hip's ROI is its
    necrotic lesion from the SEG (a healthy hip keeps its femoral head). The label then
    decides the ROI, which is why the service never works this way.
    """
    names = feature_names(params)
    preprocessing = Preprocessing(profile=profile)

    def rois(series: LoadedSeries, job: SeriesJob) -> HipSearch:
        found = series_rois(series, job.mask)
        if roi_protocol == "lesion":
            if job.mask is None:
                raise SegmentationError(
                    "the lesion ROI protocol needs a DICOM-SEG with lesion segments"
                )
            lesions = lesion_rois_from_seg(job.mask, series)
            for hip in job.hips:
                lesion = lesions.get(Side.parse(hip["Side"]))
                if _label(hip) == 1 and lesion is not None:
                    found.rois[lesion.side] = lesion
        return found

    def compute(series: LoadedSeries, roi: HipROI, row: dict[str, str]) -> HipSample:
        inputs = hip_inputs(series, roi, params=params, preprocessing=preprocessing)
        vector = np.array([inputs.radiomics[n] for n in names], dtype=np.float64)
        return HipSample(
            row["PatientID"],
            roi.side,
            _label(row),
            row,
            vector,
            inputs.network_input,
            roi.source,
            "",
            acquisition_of(series),
        )

    def failed(row: dict[str, str], reason: str, source: str) -> HipSample:
        return HipSample(
            row["PatientID"], Side.parse(row["Side"]), _label(row), row, None, None, source, reason
        )

    return per_hip(job, compute, failed, rois=rois)


def _save(path: Path, samples: Sequence[HipSample]) -> None:
    arrays: dict[str, NDArray[np.generic]] = {}
    meta = []
    for i, s in enumerate(samples):
        meta.append(
            {
                "roi_source": s.roi_source,
                "reason": s.reason,
                "ok": s.ok,
                "acquisition": None if s.acquisition is None else s.acquisition.to_json(),
            }
        )
        if s.ok:
            assert s.radiomics is not None and s.network_input is not None
            arrays[f"radiomics_{i}"] = s.radiomics
            arrays[f"input_{i}"] = s.network_input
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, path)


def _load(path: Path, job: SeriesJob) -> list[HipSample] | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            # Entries written before the acquisition was cached: one header completes them.
            older = any(m["ok"] and "acquisition" not in m for m in meta)
            header = header_acquisition(job.image) if older else None
            out = []
            for i, (row, m) in enumerate(zip(job.hips, meta, strict=True)):
                rad = data[f"radiomics_{i}"] if m["ok"] else None
                net = data[f"input_{i}"] if m["ok"] else None
                cached = m.get("acquisition")
                acquisition = Acquisition.from_json(cached) if cached is not None else None
                if acquisition is None and m["ok"] and "acquisition" not in m:
                    acquisition = header
                out.append(
                    HipSample(
                        row["PatientID"],
                        Side.parse(row["Side"]),
                        _label(row),
                        row,
                        rad,
                        net,
                        m["roi_source"],
                        m["reason"],
                        acquisition,
                    )
                )
            return out
    except (OSError, ValueError, KeyError):
        return None  # a damaged cache entry is recomputed, never trusted


def header_acquisition(image: Path) -> Acquisition | None:
    """The acquisition of the first MR image instance in ``image`` (a file or directory).

    Read without pixel data, in the loader's file order; ``None`` when there is no
    readable MR image instance (e.g. a NIfTI image).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    files = sorted(f for f in image.iterdir() if f.is_file()) if image.is_dir() else [image]
    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
        if str(ds.get("SOPClassUID", "")) in MR_IMAGE_SOP_CLASSES:
            return acquisition_from_dataset(ds)
    return None


def _run(
    args: tuple[SeriesJob, dict[str, object], Path | None, str, NormalisationProfile],
) -> tuple[list[HipSample], bool]:
    job, params, cache, roi_protocol, profile = args
    key = cache_key(job, params, roi_protocol, profile)
    path = cache / f"{key}.npz" if cache is not None else None
    if path is not None and path.exists():
        cached = _load(path, job)
        if cached is not None:
            return cached, True
    samples = extract_job(job, params, roi_protocol, profile)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _save(path, samples)
    return samples, False


def build_dataset(
    jobs: Sequence[SeriesJob],
    *,
    params_file: Path | None = None,
    cache: Path | None = None,
    workers: int = 1,
    on_job: Callable[[list[HipSample], bool], None] | None = None,
    roi_protocol: str = "head",
    profile: NormalisationProfile = NormalisationProfile.PAPER,
) -> list[HipSample]:
    """Every hip's inputs, from the cache where possible; ``on_job(samples, cached)``.

    ``profile`` is how each hip's intensities are normalised (:class:`Preprocessing`).
    """
    if roi_protocol not in ("head", "lesion"):
        raise ValueError(f"ROI protocol must be 'head' or 'lesion', not {roi_protocol!r}")
    params = load_params(params_file)
    tasks = [(job, params, cache, roi_protocol, profile) for job in jobs]
    out: list[HipSample] = []
    for samples, cached in run_cohort(tasks, _run, workers=workers):
        out += samples
        if on_job is not None:
            on_job(samples, cached)
    return out


__all__ = ["HipSample", "build_dataset", "cache_key", "extract_job", "header_acquisition"]
