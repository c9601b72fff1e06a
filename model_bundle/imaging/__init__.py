"""Imaging: load an MR series, resample and normalise it, and find both femoral heads.

Lives here: DICOM series loading with its geometry checks (``series``), the series'
acquisition parameters read from its headers (``acquisition``: :class:`Acquisition`,
:func:`acquisition_of`, for the reference statistics and the input check), resampling and
z-scoring (``preprocess``; its B-spline resample, axis by axis, in ``bspline``), the
per-hip ROI value (``roi``: :class:`HipROI`, :class:`Side`),
ROIs read from a DICOM-SEG (``seg_roi``, which decides which segment is which hip, and
``seg_grid``, which places a segment on the series grid) and auto-segmentation of the
femoral heads, each on its own (``autoseg``: :func:`find_hips` returns a
:class:`HipSearch`, per side an ROI or the reason, with left/right warnings).

Who may import it: every other part of ``model_bundle`` (features, training, serving,
evaluation), the worker, the CLI, tests and benchmarks. It imports no other part of
``model_bundle``. Import the public names from this package, not from its modules.
"""

from model_bundle.imaging.acquisition import (
    Acquisition,
    AcquisitionField,
    acquisition_from_dataset,
    acquisition_of,
)
from model_bundle.imaging.autoseg import (
    Evidence,
    HeadFit,
    HeadSearch,
    HipSearch,
    PairWarning,
    PairWarningKind,
    auto_rois,
    find_femoral_heads,
    find_hips,
    head_mask,
    neck_direction,
)
from model_bundle.imaging.preprocess import (
    Interpolator,
    resample_isotropic,
    resample_labels,
    zscore,
)
from model_bundle.imaging.roi import HipROI, Side
from model_bundle.imaging.seg_roi import (
    ABNORMAL_CATEGORY_CODES,
    ABNORMAL_TYPE_CODES,
    HEAD_OF_FEMUR_CODES,
    LEFT_CODES,
    RIGHT_CODES,
    SEGMENTATION_SOP_CLASSES,
    lesion_rois_from_seg,
    rois_from_seg,
)
from model_bundle.imaging.series import MR_IMAGE_SOP_CLASSES, LoadedSeries, load_series

__all__ = [
    "ABNORMAL_CATEGORY_CODES",
    "ABNORMAL_TYPE_CODES",
    "HEAD_OF_FEMUR_CODES",
    "LEFT_CODES",
    "MR_IMAGE_SOP_CLASSES",
    "RIGHT_CODES",
    "SEGMENTATION_SOP_CLASSES",
    "Acquisition",
    "AcquisitionField",
    "Evidence",
    "HeadFit",
    "HeadSearch",
    "HipROI",
    "HipSearch",
    "Interpolator",
    "LoadedSeries",
    "PairWarning",
    "PairWarningKind",
    "Side",
    "acquisition_from_dataset",
    "acquisition_of",
    "auto_rois",
    "find_femoral_heads",
    "find_hips",
    "head_mask",
    "lesion_rois_from_seg",
    "load_series",
    "neck_direction",
    "resample_isotropic",
    "resample_labels",
    "rois_from_seg",
    "zscore",
]
