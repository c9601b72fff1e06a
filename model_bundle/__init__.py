"""The DLR model core: imaging, ROI, features, selection, classifiers and the bundle."""

from model_bundle.imaging import (
    MR_IMAGE_SOP_CLASSES,
    Interpolator,
    LoadedSeries,
    load_series,
    resample_isotropic,
    resample_labels,
    zscore,
)

__all__ = [
    "MR_IMAGE_SOP_CLASSES",
    "Interpolator",
    "LoadedSeries",
    "load_series",
    "resample_isotropic",
    "resample_labels",
    "zscore",
]
