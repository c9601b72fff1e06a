"""The DLR model core: imaging, ROI, features, selection, classifiers and the bundle.

How the model is made and used, by subpackage: ``imaging`` (series loading, resampling
and normalisation, the per-hip ROI, ROIs from a DICOM-SEG, auto-segmentation),
``features`` (radiomics, deep features, the per-hip feature path, cohorts, the feature
table), ``models`` (feature selection, PCA, the classifiers and their JSON codec),
``evaluation`` (the statistics, the metrics of a split, scoring a labelled cohort),
``training`` (the cached dataset, fine-tuning, fitting, publishing, a whole training
run), ``serving`` (scoring hips with a verified bundle), ``reporting`` (the training and
evaluation reports, the model card) and ``bundle`` (the bundle format: manifest,
verification, reading, atomic writing). Each subpackage's ``__init__`` re-exports its
public names; import from the subpackage, not its modules.

Public names are re-exported here too but imported on first use (PEP 562): ``import
model_bundle`` stays cheap, and a process that only verifies a bundle or reads a SEG
never loads torch or PyRadiomics. ``model_bundle`` imports no service code (only the
shared kernel ``onfh_dlr.errors`` and ``onfh_dlr.pools``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "HeadFit": "imaging",
    "auto_rois": "imaging",
    "find_femoral_heads": "imaging",
    "head_mask": "imaging",
    "FORMAT_VERSION": "bundle",
    "MANIFEST_NAME": "bundle",
    "MODEL_COMPONENTS": "bundle",
    "MODEL_KEYS": "bundle",
    "Bundle": "bundle",
    "FileEntry": "bundle",
    "Manifest": "bundle",
    "Problem": "bundle",
    "VerifyReport": "bundle",
    "canonical_json": "bundle",
    "library_versions": "bundle",
    "load_bundle": "bundle",
    "verify_bundle": "bundle",
    "write_bundle": "bundle",
    "HipSample": "training",
    "build_dataset": "training",
    "DEEP_FEATURE_DIM": "features",
    "DEEP_FEATURE_NAMES": "features",
    "DeepCrop": "features",
    "build_resnet18": "features",
    "deep_crop": "features",
    "deep_features": "features",
    "deep_input": "features",
    "save_backbone": "features",
    "FeatureSpec": "features",
    "HipRow": "features",
    "SeriesJob": "features",
    "cohort_features": "features",
    "hip_features": "features",
    "read_cohort": "features",
    "run_series_job": "features",
    "series_job": "features",
    "series_rois": "features",
    "write_feature_table": "features",
    "FineTuneConfig": "training",
    "FineTuneResult": "training",
    "fine_tune": "training",
    "MR_IMAGE_SOP_CLASSES": "imaging",
    "Interpolator": "imaging",
    "LoadedSeries": "imaging",
    "load_series": "imaging",
    "resample_isotropic": "imaging",
    "resample_labels": "imaging",
    "zscore": "imaging",
    "FEATURE_NAMES": "features",
    "extract_radiomics": "features",
    "feature_names": "features",
    "load_params": "features",
    "read_params_text": "features",
    "HipROI": "imaging",
    "Side": "imaging",
    "rois_from_seg": "imaging",
    "AUCResult": "evaluation",
    "CalibrationFit": "evaluation",
    "ConfusionCounts": "evaluation",
    "DeLongTest": "evaluation",
    "HLResult": "evaluation",
    "MetricEstimate": "evaluation",
    "binary_metrics": "evaluation",
    "calibration_curve": "evaluation",
    "calibration_slope_intercept": "evaluation",
    "confusion_counts": "evaluation",
    "decision_curve": "evaluation",
    "delong_covariance": "evaluation",
    "delong_test": "evaluation",
    "hosmer_lemeshow": "evaluation",
    "roc_auc_delong": "evaluation",
    "wilson_interval": "evaluation",
    "youden_threshold": "evaluation",
}

if TYPE_CHECKING:
    from model_bundle.bundle import (
        FORMAT_VERSION as FORMAT_VERSION,
    )
    from model_bundle.bundle import (
        MANIFEST_NAME as MANIFEST_NAME,
    )
    from model_bundle.bundle import (
        MODEL_COMPONENTS as MODEL_COMPONENTS,
    )
    from model_bundle.bundle import (
        MODEL_KEYS as MODEL_KEYS,
    )
    from model_bundle.bundle import (
        Bundle as Bundle,
    )
    from model_bundle.bundle import (
        FileEntry as FileEntry,
    )
    from model_bundle.bundle import (
        Manifest as Manifest,
    )
    from model_bundle.bundle import (
        Problem as Problem,
    )
    from model_bundle.bundle import (
        VerifyReport as VerifyReport,
    )
    from model_bundle.bundle import (
        canonical_json as canonical_json,
    )
    from model_bundle.bundle import (
        library_versions as library_versions,
    )
    from model_bundle.bundle import (
        load_bundle as load_bundle,
    )
    from model_bundle.bundle import (
        verify_bundle as verify_bundle,
    )
    from model_bundle.bundle import (
        write_bundle as write_bundle,
    )
    from model_bundle.evaluation import (
        AUCResult as AUCResult,
    )
    from model_bundle.evaluation import (
        CalibrationFit as CalibrationFit,
    )
    from model_bundle.evaluation import (
        ConfusionCounts as ConfusionCounts,
    )
    from model_bundle.evaluation import (
        DeLongTest as DeLongTest,
    )
    from model_bundle.evaluation import (
        HLResult as HLResult,
    )
    from model_bundle.evaluation import (
        MetricEstimate as MetricEstimate,
    )
    from model_bundle.evaluation import (
        binary_metrics as binary_metrics,
    )
    from model_bundle.evaluation import (
        calibration_curve as calibration_curve,
    )
    from model_bundle.evaluation import (
        calibration_slope_intercept as calibration_slope_intercept,
    )
    from model_bundle.evaluation import (
        confusion_counts as confusion_counts,
    )
    from model_bundle.evaluation import (
        decision_curve as decision_curve,
    )
    from model_bundle.evaluation import (
        delong_covariance as delong_covariance,
    )
    from model_bundle.evaluation import (
        delong_test as delong_test,
    )
    from model_bundle.evaluation import (
        hosmer_lemeshow as hosmer_lemeshow,
    )
    from model_bundle.evaluation import (
        roc_auc_delong as roc_auc_delong,
    )
    from model_bundle.evaluation import (
        wilson_interval as wilson_interval,
    )
    from model_bundle.evaluation import (
        youden_threshold as youden_threshold,
    )
    from model_bundle.features import (
        DEEP_FEATURE_DIM as DEEP_FEATURE_DIM,
    )
    from model_bundle.features import (
        DEEP_FEATURE_NAMES as DEEP_FEATURE_NAMES,
    )
    from model_bundle.features import (
        FEATURE_NAMES as FEATURE_NAMES,
    )
    from model_bundle.features import (
        DeepCrop as DeepCrop,
    )
    from model_bundle.features import (
        FeatureSpec as FeatureSpec,
    )
    from model_bundle.features import (
        HipRow as HipRow,
    )
    from model_bundle.features import (
        SeriesJob as SeriesJob,
    )
    from model_bundle.features import (
        build_resnet18 as build_resnet18,
    )
    from model_bundle.features import (
        cohort_features as cohort_features,
    )
    from model_bundle.features import (
        deep_crop as deep_crop,
    )
    from model_bundle.features import (
        deep_features as deep_features,
    )
    from model_bundle.features import (
        deep_input as deep_input,
    )
    from model_bundle.features import (
        extract_radiomics as extract_radiomics,
    )
    from model_bundle.features import (
        feature_names as feature_names,
    )
    from model_bundle.features import (
        hip_features as hip_features,
    )
    from model_bundle.features import (
        load_params as load_params,
    )
    from model_bundle.features import (
        read_cohort as read_cohort,
    )
    from model_bundle.features import (
        read_params_text as read_params_text,
    )
    from model_bundle.features import (
        run_series_job as run_series_job,
    )
    from model_bundle.features import (
        save_backbone as save_backbone,
    )
    from model_bundle.features import (
        series_job as series_job,
    )
    from model_bundle.features import (
        series_rois as series_rois,
    )
    from model_bundle.features import (
        write_feature_table as write_feature_table,
    )
    from model_bundle.imaging import (
        MR_IMAGE_SOP_CLASSES as MR_IMAGE_SOP_CLASSES,
    )
    from model_bundle.imaging import (
        HeadFit as HeadFit,
    )
    from model_bundle.imaging import (
        HipROI as HipROI,
    )
    from model_bundle.imaging import (
        Interpolator as Interpolator,
    )
    from model_bundle.imaging import (
        LoadedSeries as LoadedSeries,
    )
    from model_bundle.imaging import (
        Side as Side,
    )
    from model_bundle.imaging import (
        auto_rois as auto_rois,
    )
    from model_bundle.imaging import (
        find_femoral_heads as find_femoral_heads,
    )
    from model_bundle.imaging import (
        head_mask as head_mask,
    )
    from model_bundle.imaging import (
        load_series as load_series,
    )
    from model_bundle.imaging import (
        resample_isotropic as resample_isotropic,
    )
    from model_bundle.imaging import (
        resample_labels as resample_labels,
    )
    from model_bundle.imaging import (
        rois_from_seg as rois_from_seg,
    )
    from model_bundle.imaging import (
        zscore as zscore,
    )
    from model_bundle.training import (
        FineTuneConfig as FineTuneConfig,
    )
    from model_bundle.training import (
        FineTuneResult as FineTuneResult,
    )
    from model_bundle.training import (
        HipSample as HipSample,
    )
    from model_bundle.training import (
        build_dataset as build_dataset,
    )
    from model_bundle.training import (
        fine_tune as fine_tune,
    )

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"model_bundle.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
