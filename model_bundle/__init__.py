"""The DLR model core: imaging, ROI, features, selection, classifiers and the bundle."""

from model_bundle.autoseg import HeadFit, auto_rois, find_femoral_heads, head_mask
from model_bundle.imaging import (
    MR_IMAGE_SOP_CLASSES,
    Interpolator,
    LoadedSeries,
    load_series,
    resample_isotropic,
    resample_labels,
    zscore,
)
from model_bundle.radiomics import (
    FEATURE_NAMES,
    extract_radiomics,
    feature_names,
    load_params,
    read_params_text,
)
from model_bundle.roi import HipROI, Side
from model_bundle.seg_roi import rois_from_seg

__all__ = [
    "FEATURE_NAMES",
    "MR_IMAGE_SOP_CLASSES",
    "HeadFit",
    "HipROI",
    "Interpolator",
    "LoadedSeries",
    "Side",
    "auto_rois",
    "extract_radiomics",
    "feature_names",
    "find_femoral_heads",
    "head_mask",
    "load_params",
    "load_series",
    "read_params_text",
    "resample_isotropic",
    "resample_labels",
    "rois_from_seg",
    "zscore",
]
