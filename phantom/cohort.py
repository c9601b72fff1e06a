"""A cohort of synthetic patients on disk: DICOM series, SEG truth and ``cohort.csv``."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onfh_dlr.errors import PhantomError
from onfh_dlr.pools import process_pool
from phantom.case import PhantomStudy
from phantom.dicom_writer import write_segmentation, write_series
from phantom.generator import generate_study
from phantom.preview import write_preview
from phantom.sites import site_profile

#: Cohort CSV columns: the cohort format of ARCHITECTURE.md, then the phantom's truth.
COLUMNS = (
    "PatientID",
    "Side",
    "Image",
    "Mask",
    "Label",
    "Stage",
    "LesionFraction",
    "LesionSizeClass",
    "LesionCentre",
    "DoubleLine",
    "BandContrast",
    "MarrowOedema",
    "Effusion",
    "Subtle",
    "BenignFindings",
    "HeadCentreX",
    "HeadCentreY",
    "HeadCentreZ",
    "HeadRadius",
    "CaseIndex",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Manufacturer",
    "SeriesDescription",
    "Rows",
    "Columns",
    "Slices",
    "PixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
)
#: The extra column of a cohort drawn from site profiles (absent otherwise).
SITE_COLUMN = "Site"


@dataclass(frozen=True)
class CaseFiles:
    """Where one case was written, relative to the cohort directory."""

    index: int
    series_dir: str
    seg_file: str
    rows: list[dict[str, str]]


def assign_hips(cases: int, onfh_fraction: float, seed: int) -> list[tuple[bool, bool]]:
    """Which hips (right, left) of each patient have early ONFH.

    ``round(cases * onfh_fraction)`` patients have ONFH (70 of 150 by default, as in the
    source paper); half of them (rounded) bilaterally, the others on a random side.
    """
    if cases < 1:
        raise PhantomError("a cohort needs at least one case")
    if not 0.0 <= onfh_fraction <= 1.0:
        raise PhantomError(f"onfh fraction must lie in [0, 1], not {onfh_fraction}")
    rng = np.random.default_rng([seed, 0xC0407])
    n_onfh = round(cases * onfh_fraction)
    n_bilateral = round(n_onfh / 2)
    patients: list[tuple[bool, bool]] = [(True, True)] * n_bilateral
    for _ in range(n_onfh - n_bilateral):
        patients.append((True, False) if rng.random() < 0.5 else (False, True))
    patients += [(False, False)] * (cases - n_onfh)
    order = rng.permutation(cases)
    return [patients[i] for i in order]


def case_rows(
    study: PhantomStudy, series_dir: str, seg_file: str, index: int
) -> list[dict[str, str]]:
    """The two cohort rows (right hip, left hip) of one study."""
    g = study.geometry
    rows = []
    for hip in study.hips:
        rows.append(
            {
                "PatientID": study.patient.patient_id,
                "Side": hip.side,
                "Image": series_dir,
                "Mask": seg_file,
                "Label": str(hip.label),
                "Stage": hip.stage,
                "LesionFraction": f"{hip.lesion_fraction:.4f}",
                "LesionSizeClass": hip.lesion_size_class,
                "LesionCentre": hip.lesion_centre,
                "DoubleLine": str(int(hip.double_line)),
                "BandContrast": f"{hip.band_contrast:.3f}",
                "MarrowOedema": str(int(hip.marrow_oedema)),
                "Effusion": str(int(hip.effusion)),
                "Subtle": str(int(hip.subtle)),
                "BenignFindings": ";".join(hip.benign_findings),
                "HeadCentreX": f"{hip.head_centre[0]:.2f}",
                "HeadCentreY": f"{hip.head_centre[1]:.2f}",
                "HeadCentreZ": f"{hip.head_centre[2]:.2f}",
                "HeadRadius": f"{hip.head_radius:.2f}",
                "CaseIndex": str(index),
                "StudyInstanceUID": study.patient.study_instance_uid,
                "SeriesInstanceUID": study.patient.series_instance_uid,
                "Manufacturer": study.scanner.manufacturer,
                "SeriesDescription": study.scanner.series_description,
                "Rows": str(g.rows),
                "Columns": str(g.columns),
                "Slices": str(g.n_slices),
                "PixelSpacing": f"{g.pixel_spacing[0]:.4f}",
                "SliceThickness": f"{g.slice_thickness:.2f}",
                "SpacingBetweenSlices": f"{g.slice_spacing:.2f}",
            }
        )
    return rows


def write_study(
    study: PhantomStudy, out_dir: Path, index: int, preview: bool = False, site: str | None = None
) -> CaseFiles:
    """Write one study as ``<PatientID>/series/IM*.dcm`` and ``<PatientID>/seg.dcm``.

    With ``preview``, also ``<PatientID>/preview.png`` (slices with the truth outlined).
    With ``site``, the rows carry it in a ``Site`` column.
    """
    case_dir = out_dir / study.patient.patient_id
    datasets = write_series(study, case_dir / "series")
    write_segmentation(study, datasets, case_dir / "seg.dcm")
    if preview:
        write_preview(study, case_dir / "preview.png")
    series_dir = f"{study.patient.patient_id}/series"
    seg_file = f"{study.patient.patient_id}/seg.dcm"
    rows = case_rows(study, series_dir, seg_file, index)
    if site is not None:
        rows = [{**row, SITE_COLUMN: site} for row in rows]
    return CaseFiles(index, series_dir, seg_file, rows)


def _make_case(args: tuple[Path, int, int, tuple[bool, bool], bool, str | None]) -> CaseFiles:
    out_dir, seed, index, onfh, preview, site = args
    profile = None if site is None else site_profile(site)
    return write_study(generate_study(seed, index, onfh, profile), out_dir, index, preview, site)


def assign_sites(cases: int, sites: Sequence[str]) -> list[str]:
    """The site of each case: round-robin over ``sites``, so every site gets its share.

    Labels are drawn independently (:func:`assign_hips` permutes patients), so each
    site's class balance varies around the cohort's, as it does between hospitals.
    """
    if not sites:
        raise PhantomError("sites, when given, must name at least one site profile")
    for name in sites:
        site_profile(name)  # fail before generating anything
    return [sites[i % len(sites)] for i in range(cases)]


def iter_cohort(
    out_dir: Path,
    cases: int,
    seed: int = 0,
    onfh_fraction: float = 70 / 150,
    workers: int = 1,
    preview: bool = False,
    sites: Sequence[str] | None = None,
) -> Iterator[CaseFiles]:
    """Generate and write a cohort case by case, in case order."""
    hips = assign_hips(cases, onfh_fraction, seed)
    names: list[str | None] = [None] * cases if sites is None else [*assign_sites(cases, sites)]
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [
        (out_dir, seed, i, onfh, preview, site)
        for i, (onfh, site) in enumerate(zip(hips, names, strict=True))
    ]
    if workers <= 1:
        for job in jobs:
            yield _make_case(job)
        return
    with process_pool(workers) as pool:
        yield from pool.map(_make_case, jobs)


def write_cohort_csv(path: Path, cases: list[CaseFiles]) -> None:
    """Write ``cohort.csv`` (two rows per case, in case order) atomically."""
    tmp = path.with_suffix(".csv.tmp")
    with_site = any(SITE_COLUMN in row for case in cases for row in case.rows)
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=(*COLUMNS, SITE_COLUMN) if with_site else COLUMNS)
        writer.writeheader()
        for case in sorted(cases, key=lambda c: c.index):
            writer.writerows(case.rows)
    os.replace(tmp, path)


def generate_cohort(
    out_dir: Path,
    cases: int,
    seed: int = 0,
    onfh_fraction: float = 70 / 150,
    workers: int = 1,
    on_case: Callable[[CaseFiles], None] | None = None,
    preview: bool = False,
    sites: Sequence[str] | None = None,
) -> Path:
    """Generate a cohort under ``out_dir`` and return the path of its ``cohort.csv``.

    Parameters
    ----------
    out_dir
        Directory to write into (created).
    cases
        Number of patients; each has both hips in one series.
    seed
        Cohort seed: the same seed gives the same files.
    onfh_fraction
        Fraction of patients with early ONFH in at least one hip.
    workers
        Processes to use.
    on_case
        Called after each case is written (for progress).
    preview
        Also write a PNG contact sheet per case.
    sites
        Site profile names (:data:`phantom.sites.SITES`); patients are assigned to them
        round-robin, and ``cohort.csv`` gains a ``Site`` column. ``None`` (the default)
        draws every case as the original generator did: the same files, byte for byte.
    """
    written = []
    for case in iter_cohort(out_dir, cases, seed, onfh_fraction, workers, preview, sites):
        written.append(case)
        if on_case is not None:
            on_case(case)
    path = out_dir / "cohort.csv"
    write_cohort_csv(path, written)
    return path


__all__ = [
    "COLUMNS",
    "SITE_COLUMN",
    "CaseFiles",
    "assign_hips",
    "assign_sites",
    "case_rows",
    "generate_cohort",
    "iter_cohort",
    "write_cohort_csv",
    "write_study",
]
