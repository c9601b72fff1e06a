"""Synthetic coronal T2-FS hip MRI with ground truth (see shared/ONFH_MRI.md)."""

from phantom.case import (
    HipTruth,
    PatientInfo,
    PhantomStudy,
    ScannerProfile,
    Segment,
    SeriesGeometry,
)
from phantom.cohort import COLUMNS, CaseFiles, assign_hips, generate_cohort, write_study
from phantom.dicom_writer import write_segmentation, write_series
from phantom.generator import generate_study

__all__ = [
    "COLUMNS",
    "CaseFiles",
    "HipTruth",
    "PatientInfo",
    "PhantomStudy",
    "ScannerProfile",
    "Segment",
    "SeriesGeometry",
    "assign_hips",
    "generate_cohort",
    "generate_study",
    "write_segmentation",
    "write_series",
    "write_study",
]
