"""Imaging: load an MR series, resample it, normalise it.

The one import point for the rest of the model core; the work is done in
:mod:`model_bundle.series` (DICOM loading and geometry checks) and
:mod:`model_bundle.preprocess` (resampling and z-scoring).
"""

from __future__ import annotations

from model_bundle.preprocess import Interpolator, resample_isotropic, resample_labels, zscore
from model_bundle.series import MR_IMAGE_SOP_CLASSES, LoadedSeries, load_series

__all__ = [
    "MR_IMAGE_SOP_CLASSES",
    "Interpolator",
    "LoadedSeries",
    "load_series",
    "resample_isotropic",
    "resample_labels",
    "zscore",
]
