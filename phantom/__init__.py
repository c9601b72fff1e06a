"""Synthetic coronal T2-FS hip MRI with ground truth (see shared/ONFH_MRI.md).

Holds the generator (anatomy, rendering, acquisition), the site profiles it draws
cases from (:mod:`phantom.sites`), and the DICOM/CSV writers. Imported by tests,
benches, the CLI's ``phantom`` command and training code; it imports nothing from the
service except the error tree.
"""

from phantom.case import (
    HipTruth,
    PatientInfo,
    PhantomStudy,
    ScannerProfile,
    Segment,
    SeriesGeometry,
)
from phantom.cohort import (
    COLUMNS,
    SITE_COLUMN,
    CaseFiles,
    assign_hips,
    assign_sites,
    generate_cohort,
    write_study,
)
from phantom.dicom_writer import write_segmentation, write_series
from phantom.generator import generate_study
from phantom.sites import SITES, SiteProfile, site_profile

__all__ = [
    "COLUMNS",
    "SITES",
    "SITE_COLUMN",
    "CaseFiles",
    "HipTruth",
    "PatientInfo",
    "PhantomStudy",
    "ScannerProfile",
    "Segment",
    "SeriesGeometry",
    "SiteProfile",
    "assign_hips",
    "assign_sites",
    "generate_cohort",
    "generate_study",
    "site_profile",
    "write_segmentation",
    "write_series",
    "write_study",
]
