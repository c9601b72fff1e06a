"""Plain data describing one synthetic study: geometry, scanner, pixels, truth.

The renderer fills these in; the DICOM writer turns them into files. Nothing here
does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

Side = Literal["L", "R"]


@dataclass(frozen=True)
class SeriesGeometry:
    """Geometry of a stack of parallel slices in patient (LPS) coordinates, in mm.

    ``row_direction`` is the direction of increasing column index (first triplet of
    ImageOrientationPatient), ``column_direction`` that of increasing row index.
    ``origin`` is the centre of pixel (row 0, column 0) of slice 0; slice ``k`` lies at
    ``origin + k * slice_spacing * normal``.
    """

    rows: int
    columns: int
    n_slices: int
    pixel_spacing: tuple[float, float]  # DICOM order: (between rows, between columns)
    slice_thickness: float
    slice_spacing: float  # centre to centre (SpacingBetweenSlices)
    row_direction: NDArray[np.float64]
    column_direction: NDArray[np.float64]
    origin: NDArray[np.float64]

    @property
    def normal(self) -> NDArray[np.float64]:
        """Unit slice normal, ``row_direction x column_direction``."""
        n = np.cross(self.row_direction, self.column_direction)
        return np.asarray(n / np.linalg.norm(n), dtype=np.float64)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(n_slices, rows, columns)``."""
        return (self.n_slices, self.rows, self.columns)

    def image_orientation(self) -> list[float]:
        """ImageOrientationPatient as six floats."""
        return [float(v) for v in (*self.row_direction, *self.column_direction)]

    def slice_position(self, k: int) -> NDArray[np.float64]:
        """ImagePositionPatient of slice ``k``."""
        return np.asarray(self.origin + k * self.slice_spacing * self.normal, dtype=np.float64)

    def index_to_patient(self, index: NDArray[np.float64]) -> NDArray[np.float64]:
        """Map ``(..., 3)`` indices ``(slice, row, column)`` to patient coordinates."""
        index = np.asarray(index, dtype=np.float64)
        dr, dc = self.pixel_spacing
        return np.asarray(
            self.origin
            + index[..., 0:1] * self.slice_spacing * self.normal
            + index[..., 1:2] * dr * self.column_direction
            + index[..., 2:3] * dc * self.row_direction,
            dtype=np.float64,
        )

    def patient_to_index(self, point: NDArray[np.float64]) -> NDArray[np.float64]:
        """Map ``(..., 3)`` patient coordinates to fractional ``(slice, row, column)``."""
        d = np.asarray(point, dtype=np.float64) - self.origin
        dr, dc = self.pixel_spacing
        return np.stack(
            [
                d @ self.normal / self.slice_spacing,
                d @ self.column_direction / dr,
                d @ self.row_direction / dc,
            ],
            axis=-1,
        )


@dataclass(frozen=True)
class PrivateTag:
    """One vendor-private header element: ``(group, creator)`` block, element offset, value."""

    group: int  # odd, e.g. 0x0029
    creator: str  # Private Creator, e.g. "SIEMENS CSA HEADER"
    offset: int  # element within the block, 0x00-0xFF
    vr: str
    value: str | float | int


@dataclass(frozen=True)
class ScannerProfile:
    """What a vendor's scanner writes into the header of a coronal T2-FS series."""

    manufacturer: str
    model_name: str
    software_versions: str
    magnetic_field_strength: float  # tesla
    series_description: str
    protocol_name: str
    sequence_name: str
    scan_options: tuple[str, ...]  # e.g. ("FS",), ("FS", "PFP")
    scanning_sequence: tuple[str, ...]  # e.g. ("SE",), ("SE", "IR") for STIR
    sequence_variant: tuple[str, ...]  # e.g. ("SK", "SP")
    receive_coil_name: str
    station_name: str
    institution_name: str
    repetition_time: float  # ms
    echo_time: float  # ms
    inversion_time: float | None  # ms, STIR only
    echo_train_length: int
    flip_angle: float
    number_of_averages: float
    pixel_bandwidth: float
    imaging_frequency: float  # MHz
    rescale: tuple[float, float] | None  # (slope, intercept) where the vendor writes them
    bits_stored: int  # 12 or 16
    private_tags: tuple[PrivateTag, ...] = ()  # written only by site profiles


@dataclass(frozen=True)
class PatientInfo:
    """Who and when: the identifying part of the header (all synthetic)."""

    patient_id: str
    patient_name: str
    birth_date: str  # YYYYMMDD
    sex: Literal["M", "F"]
    age_years: int
    weight_kg: float
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    accession_number: str
    study_id: str
    study_date: str  # YYYYMMDD
    study_time: str  # HHMMSS
    study_description: str
    series_number: int


@dataclass(frozen=True)
class Segment:
    """One ground-truth segment on the series' own pixel grid."""

    label: str  # e.g. "Left femoral head", "Left femoral head necrotic lesion"
    kind: Literal["femoral_head", "necrotic_lesion"]
    side: Side
    mask: NDArray[np.bool_]  # (n_slices, rows, columns)


@dataclass(frozen=True)
class HipTruth:
    """What the generator put into one hip."""

    side: Side
    label: int  # 1 = early ONFH, 0 = healthy
    stage: str  # "none", "ARCO I" or "ARCO II"
    lesion_fraction: float  # lesion volume / head volume
    lesion_size_class: str  # "none", "small", "medium", "large"
    lesion_centre: str  # "none", "fat-like", "oedema-like"
    double_line: bool
    band_contrast: float  # granulation band signal relative to normal marrow (0 if none)
    marrow_oedema: bool
    effusion: bool
    subtle: bool
    benign_findings: tuple[str, ...]  # e.g. ("subchondral cyst", "red marrow island")
    head_centre: tuple[float, float, float]  # patient LPS, mm
    head_radius: float  # mm


@dataclass(frozen=True)
class PhantomStudy:
    """A rendered coronal T2-FS series with its ground truth."""

    patient: PatientInfo
    scanner: ScannerProfile
    geometry: SeriesGeometry
    stored: NDArray[np.uint16]  # (n_slices, rows, columns) stored pixel values
    segments: tuple[Segment, ...]
    hips: tuple[HipTruth, HipTruth]  # (right, left)
    seed: int
    extra: dict[str, float | str] = field(default_factory=dict)


__all__ = [
    "HipTruth",
    "PatientInfo",
    "PhantomStudy",
    "PrivateTag",
    "ScannerProfile",
    "Segment",
    "SeriesGeometry",
    "Side",
]
