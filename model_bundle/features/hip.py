"""Per-hip feature vectors: the one path from a series and an ROI to features.

:func:`hip_inputs` is the computation every caller shares (a loaded series and an ROI
in; the radiomics values and the network input out) and :func:`hip_features` adds the
deep features; training (:mod:`model_bundle.training.dataset`), ``onfh-dlr features``,
``onfh-dlr evaluate`` (:mod:`model_bundle.evaluation.external`) and serving
(:class:`model_bundle.serving.BundleModel`) all call them. :func:`series_rois` picks
the ROI source (a DICOM-SEG when given, else auto-segmentation) for every caller,
including the worker. :class:`Preprocessing` is how a hip becomes the model inputs, and
its :class:`NormalisationProfile` says where the intensity scale comes from: ``hip``
(a z-score over a box around that femoral head, for radiomics and network input alike)
or ``paper`` (the source paper's whole-image z-score for radiomics).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from torch import nn

from model_bundle.features.deep import DEEP_FEATURE_NAMES, deep_features, deep_input
from model_bundle.features.radiomics import FEATURE_NAMES, extract_radiomics, load_params
from model_bundle.imaging import (
    HipROI,
    HipSearch,
    LoadedSeries,
    find_hips,
    resample_isotropic,
    resample_labels,
    rois_from_seg,
    zscore,
)
from onfh_dlr.errors import ConfigurationError, SegmentationError

F32 = NDArray[np.float32]

#: mm of image kept around a hip's ROI for the deep-feature input.
HIP_MARGIN = 40.0


class NormalisationProfile(enum.StrEnum):
    """Where a hip's intensity scale comes from; ``preprocessing.json`` ``profile``.

    The network input is z-scored over the hip region under both profiles; they differ
    in the radiomics input.
    """

    #: Radiomics on the hip region (the network input's box), z-scored over that box:
    #: independent of the field of view, of anything outside the box and of the
    #: scanner's linear intensity scale. The training default.
    HIP = "hip"
    #: The source paper: radiomics on the whole series, z-scored over every voxel by
    #: PyRadiomics (``normalize``). What a bundle without a ``profile`` was trained with.
    PAPER = "paper"

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> NormalisationProfile:
        """The profile a bundle's ``preprocessing.json`` names; absent means ``paper``."""
        value = data.get("profile", cls.PAPER.value)
        for profile in cls:
            if value == profile.value:
                return profile
        raise ConfigurationError(
            f"preprocessing profile {value!r} is not supported "
            f"(only {', '.join(repr(p.value) for p in cls)})"
        )


@dataclass(frozen=True)
class Preprocessing:
    """How a hip becomes the model inputs; a bundle's ``preprocessing.json``.

    ``profile`` is its ``profile`` field, the rest its ``deep_input`` object. The
    defaults are what training used before profiles existed (``paper``). Interpolation
    (B-spline), the z-score over the hip region and the slice choice (largest ROI area)
    are fixed in code; a bundle that asks for anything else is refused rather than
    served differently.
    """

    region_margin_mm: float = HIP_MARGIN
    resample_mm: float = 1.0
    crop_margin: float = 0.15
    size: int = 224
    profile: NormalisationProfile = NormalisationProfile.PAPER

    @classmethod
    def from_json(
        cls,
        data: Mapping[str, object],
        profile: NormalisationProfile = NormalisationProfile.PAPER,
    ) -> Preprocessing:
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
                profile=profile,
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


def series_rois(series: LoadedSeries, seg: SegSource | None) -> HipSearch:
    """Per-hip ROIs: from ``seg`` when given, else each head auto-segmented on its own.

    The one ROI-source choice of training, ``features``, ``evaluate`` and the worker. A
    hip whose head is not found is in :attr:`HipSearch.failures` with its reason.
    """
    if seg is None:
        return find_hips(series)
    return HipSearch(rois_from_seg(seg, series))


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


def radiomics_input(
    series: LoadedSeries,
    roi: HipROI,
    params: Mapping[str, object] | None,
    preprocessing: Preprocessing,
) -> tuple[sitk.Image, sitk.Image, dict[str, object] | None]:
    """The image, mask and parameters PyRadiomics gets under ``preprocessing.profile``.

    ``paper``: the series as loaded and ``params`` unchanged (PyRadiomics z-scores the
    whole image). ``hip``: the hip region (:func:`hip_region`, the network input's box)
    z-scored over that box and multiplied by ``normalizeScale`` here, with ``normalize``
    off, so ``binWidth`` and ``voxelArrayShift`` keep their meaning (hundredths of an SD)
    and nothing outside the box reaches a feature.
    """
    if preprocessing.profile is NormalisationProfile.PAPER:
        return series.image, roi.mask, dict(params) if params is not None else None
    full = dict(params) if params is not None else dict(load_params())
    setting = dict(_mapping(full.get("setting")))
    # PyRadiomics pads the ROI box by padDistance resampled voxels for its filters; a
    # narrower crop would let the crop's edge, not the anatomy, shape LoG and wavelets.
    spacing = setting.get("resampledPixelSpacing") or series.image.GetSpacing()
    pad_mm = float(_number(setting.get("padDistance", 5))) * max(
        float(_number(v)) for v in _sequence(spacing)
    )
    if preprocessing.region_margin_mm < pad_mm:
        raise ConfigurationError(
            f"hip region margin {preprocessing.region_margin_mm:g} mm is narrower than "
            f"PyRadiomics' padDistance ({pad_mm:g} mm)"
        )
    image, mask = hip_region(series.image, roi.mask, preprocessing.region_margin_mm)
    scale = float(_number(setting.get("normalizeScale", 1)))
    normalised = sitk.Cast(zscore(image), sitk.sitkFloat64) * scale
    setting["normalize"] = False
    full["setting"] = setting
    return normalised, mask, full


def _mapping(value: object) -> Mapping[str, object]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigurationError("radiomics parameters: 'setting' is not a mapping")
    return value


def _sequence(value: object) -> Sequence[object]:
    if isinstance(value, Sequence) and not isinstance(value, str):
        return value
    raise ConfigurationError(f"radiomics parameters: {value!r} is not a list of numbers")


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

    Radiomics run on :func:`radiomics_input` (``params`` resample and, under the
    ``paper`` profile, normalise; ``None`` = the packaged file); ``radiomics`` names the
    features wanted (``None``: all, an empty sequence: none). The network input is the
    largest coronal ROI slice of the preprocessed hip region.
    """
    values: dict[str, float] = {}
    if radiomics is None or len(radiomics) > 0:
        image, mask, rad_params = radiomics_input(series, roi, params, preprocessing)
        values = extract_radiomics(image, mask, rad_params, features=radiomics)
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


__all__ = [
    "HIP_MARGIN",
    "FeatureSpec",
    "HipInputs",
    "NormalisationProfile",
    "Preprocessing",
    "hip_features",
    "hip_inputs",
    "hip_region",
    "preprocessed",
    "radiomics_input",
    "series_rois",
]
