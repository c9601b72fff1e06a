"""The DLR model core: imaging, ROI, features, selection, classifiers and the bundle."""

from model_bundle.autoseg import HeadFit, auto_rois, find_femoral_heads, head_mask
from model_bundle.deep import (
    DEEP_FEATURE_DIM,
    DEEP_FEATURE_NAMES,
    DeepCrop,
    build_resnet18,
    deep_crop,
    deep_features,
    deep_input,
    save_backbone,
)
from model_bundle.features import (
    FeatureSpec,
    HipRow,
    SeriesJob,
    cohort_features,
    hip_features,
    read_cohort,
    run_series_job,
    series_job,
    series_rois,
    write_feature_table,
)
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
    "DEEP_FEATURE_DIM",
    "DEEP_FEATURE_NAMES",
    "FEATURE_NAMES",
    "MR_IMAGE_SOP_CLASSES",
    "DeepCrop",
    "FeatureSpec",
    "HeadFit",
    "HipROI",
    "HipRow",
    "Interpolator",
    "LoadedSeries",
    "SeriesJob",
    "Side",
    "auto_rois",
    "build_resnet18",
    "cohort_features",
    "deep_crop",
    "deep_features",
    "deep_input",
    "extract_radiomics",
    "feature_names",
    "find_femoral_heads",
    "head_mask",
    "hip_features",
    "load_params",
    "load_series",
    "read_cohort",
    "read_params_text",
    "resample_isotropic",
    "resample_labels",
    "rois_from_seg",
    "run_series_job",
    "save_backbone",
    "series_job",
    "series_rois",
    "write_feature_table",
    "zscore",
]
