"""Features of a hip: radiomics, deep features, and the one path that computes them.

Lives here: the PyRadiomics extraction and its parameter file (``radiomics``), the
ResNet18 deep features (``deep``), the per-hip path from a series and an ROI to a feature
vector that training, evaluation and serving share (``hip``: :func:`hip_inputs`,
:func:`hip_features`, :func:`series_rois`, :class:`Preprocessing`), cohorts (``cohort``:
the cohort CSV, :class:`SeriesJob`, :func:`per_hip`, :func:`run_cohort` and its process
pool, :func:`cohort_features`) and the feature-table writer (``table``).

Who may import it: training, evaluation, serving, the worker, the CLI, tests and
benchmarks. It imports ``model_bundle.imaging`` and no other part of ``model_bundle``.
Import the public names from this package, not from its modules.
"""

from model_bundle.features.cohort import (
    HipRow,
    SeriesJob,
    cohort_features,
    job_rois,
    per_hip,
    read_cohort,
    reason_of,
    run_cohort,
    run_series_job,
    series_job,
)
from model_bundle.features.deep import (
    DEEP_FEATURE_DIM,
    DEEP_FEATURE_NAMES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    INTENSITY_WINDOW,
    DeepCrop,
    build_resnet18,
    deep_crop,
    deep_features,
    deep_input,
    save_backbone,
)
from model_bundle.features.hip import (
    HIP_MARGIN,
    FeatureSpec,
    HipInputs,
    NormalisationProfile,
    Preprocessing,
    hip_features,
    hip_inputs,
    hip_region,
    preprocessed,
    radiomics_input,
    series_rois,
)
from model_bundle.features.radiomics import (
    FEATURE_NAMES,
    extract_radiomics,
    feature_names,
    load_params,
    read_params_text,
)
from model_bundle.features.table import ID_COLUMNS, write_feature_table

__all__ = [
    "DEEP_FEATURE_DIM",
    "DEEP_FEATURE_NAMES",
    "FEATURE_NAMES",
    "HIP_MARGIN",
    "ID_COLUMNS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INTENSITY_WINDOW",
    "DeepCrop",
    "FeatureSpec",
    "HipInputs",
    "HipRow",
    "NormalisationProfile",
    "Preprocessing",
    "SeriesJob",
    "build_resnet18",
    "cohort_features",
    "deep_crop",
    "deep_features",
    "deep_input",
    "extract_radiomics",
    "feature_names",
    "hip_features",
    "hip_inputs",
    "hip_region",
    "job_rois",
    "load_params",
    "per_hip",
    "preprocessed",
    "radiomics_input",
    "read_cohort",
    "read_params_text",
    "reason_of",
    "run_cohort",
    "run_series_job",
    "save_backbone",
    "series_job",
    "series_rois",
    "write_feature_table",
]
