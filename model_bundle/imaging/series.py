"""Load one MR series from DICOM into a SimpleITK image whose geometry can be trusted.

Everything the model computes later (resampling, ROIs, radiomics, the SEG and SR that go
back to the PACS) is only as right as the voxel-to-patient mapping built here, so this
module refuses a series rather than guess: every refusal is its own subclass of
:class:`onfh_dlr.errors.SeriesError` and its message names the series and the problem.

Geometry is in DICOM patient coordinates (LPS), which is also SimpleITK's convention:
the image origin is the Image Position (Patient) of the first slice after sorting, the
direction matrix has the row direction cosine, the column direction cosine and the slice
normal as columns, and the spacing is (column spacing, row spacing, slice spacing), the
last measured from the slice positions.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.utils import pixel_array
from pydicom.uid import (
    UID,
    EnhancedMRImageStorage,
    LegacyConvertedEnhancedMRImageStorage,
    MediaStorageDirectoryStorage,
    MRImageStorage,
)

from onfh_dlr.errors import (
    DuplicateSliceError,
    ImageSizeError,
    InconsistentSlicesError,
    MissingAttributeError,
    MissingDecoderError,
    MissingGeometryError,
    MissingSliceError,
    MixedOrientationError,
    ModalityError,
    MultipleSeriesError,
    SeriesNotFoundError,
    SkewedStackError,
    TooFewSlicesError,
    UnevenSpacingError,
    UnreadableFileError,
    UnsupportedPixelDataError,
)

__all__ = [
    "MR_IMAGE_SOP_CLASSES",
    "LoadedSeries",
    "load_series",
]

LOGGER = logging.getLogger(__name__)

#: SOP classes accepted as MR images (Enhanced MR Color is excluded: greyscale only).
MR_IMAGE_SOP_CLASSES: Final[frozenset[str]] = frozenset(
    {MRImageStorage, EnhancedMRImageStorage, LegacyConvertedEnhancedMRImageStorage}
)

MIN_MATRIX: Final = 32
MAX_MATRIX: Final = 2048
MIN_SLICES: Final = 3
MAX_PIXEL_SPACING_MM: Final = 10.0
#: Largest difference between direction cosines still counted as the same orientation.
ORIENTATION_TOLERANCE: Final = 1e-3
#: A slice step may differ from the median step by at most the smaller of these.
SPACING_REL_TOLERANCE: Final = 0.10
SPACING_ABS_TOLERANCE_MM: Final = 0.2
#: Steps at or below this are two slices at one position.
DUPLICATE_TOLERANCE_MM: Final = 0.01
#: A step this many times the median step or more is a gap (missing slices).
GAP_FACTOR: Final = 1.5
#: Pixel spacings closer than this are the same pixel spacing.
PIXEL_SPACING_TOLERANCE_MM: Final = 1e-3

_PIXEL_KEYWORDS: Final = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

FloatVector = npt.NDArray[np.float64]


# eq=False: a SimpleITK image compares voxel-wise, so equality would be meaningless.
@dataclass(frozen=True, eq=False)
class LoadedSeries:
    """A loaded MR series: the volume and what later steps need to refer back to it.

    Attributes
    ----------
    image
        Float32 volume in LPS patient coordinates; index order (column, row, slice).
    study_instance_uid, series_instance_uid, frame_of_reference_uid
        Identity of the source series (for the SEG and SR written back into the study).
    sop_instance_uids
        One per slice of ``image`` (slice index k), in slice order. A multi-frame
        instance contributes its UID once per frame.
    frame_numbers
        One per slice: the 1-based frame number inside a multi-frame instance, or
        ``None`` for a single-frame instance (what a SEG's derivation references need).
    datasets
        The distinct source instances in slice order, **headers only**: pixel data are
        removed (they are in ``image``) and the objects are copies, never the caller's.
    notes
        Informational findings that did not refuse the series (e.g. Spacing Between
        Slices disagreeing with the measured spacing).
    """

    image: sitk.Image
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    sop_instance_uids: tuple[str, ...]
    frame_numbers: tuple[int | None, ...]
    datasets: tuple[Dataset, ...]
    notes: tuple[str, ...] = ()

    @property
    def slice_count(self) -> int:
        """Number of slices in the volume."""
        return len(self.sop_instance_uids)


@dataclass
class _Instance:
    """One source instance: its header and where to get its pixel data."""

    header: Dataset
    label: str
    path: Path | None = None
    dataset: Dataset | None = None


@dataclass(frozen=True)
class _Slice:
    """One 2-D slice: a single-frame instance, or one frame of a multi-frame one."""

    instance: int
    frame: int | None
    position: FloatVector
    orientation: FloatVector
    pixel_spacing: tuple[float, float]
    slope: float
    intercept: float


def load_series(
    source: str | os.PathLike[str] | Sequence[Dataset],
    *,
    series_uid: str | None = None,
    max_slices: int = 2000,
) -> LoadedSeries:
    """Load one MR series as a float32 SimpleITK volume with checked geometry.

    Parameters
    ----------
    source
        A directory (its files are read, subdirectories are not; non-DICOM files,
        DICOMDIR and instances without an image are skipped), a single DICOM file (e.g.
        one Enhanced MR instance), or datasets already in memory (same skipping rules).
    series_uid
        The SeriesInstanceUID to load when the source holds image instances of more
        than one series.
    max_slices
        Refuse series with more slices than this.

    Returns
    -------
    LoadedSeries
        The volume (slices ordered along the slice normal, rescale applied) and the
        identifiers of its source instances.

    Raises
    ------
    onfh_dlr.errors.SeriesError
        A specific subclass for each reason the series cannot be used.

    Notes
    -----
    Values are the stored values through Rescale Slope/Intercept (top level, or the
    Pixel Value Transformation functional group), per slice. Real World Value Mapping
    and vendor-private scale factors are not applied. Files without the DICM preamble
    are treated as non-DICOM and skipped.
    """
    if isinstance(source, str | os.PathLike):
        instances = _scan_path(Path(source))
        where = str(source)
    else:
        instances = _from_datasets(source)
        where = f"{len(source)} datasets"

    instances, name = _select_series(instances, series_uid, where)
    _check_instances(instances, name, max_slices)
    slices = [s for i, inst in enumerate(instances) for s in _slices_of(inst, i, name)]
    if len(slices) < MIN_SLICES:
        raise TooFewSlicesError(
            f"{name}: {len(slices)} slice(s); at least {MIN_SLICES} are needed for a volume"
        )
    _check_slice_consistency(slices, instances, name)
    geometry = _stack_geometry(slices, instances, name)
    volume = _read_volume(slices, instances, geometry.order, name)
    first = instances[0].header

    image = sitk.GetImageFromArray(volume)  # numpy (k, row, col) -> ITK (col, row, k)
    image.SetOrigin(tuple(float(v) for v in slices[geometry.order[0]].position))
    row_spacing, col_spacing = slices[0].pixel_spacing
    image.SetSpacing((col_spacing, row_spacing, geometry.slice_spacing))
    image.SetDirection(tuple(float(v) for v in geometry.direction.ravel()))

    ordered = [slices[k] for k in geometry.order]
    instance_order = list(dict.fromkeys(s.instance for s in ordered))
    return LoadedSeries(
        image=image,
        study_instance_uid=str(first.StudyInstanceUID),
        series_instance_uid=str(first.SeriesInstanceUID),
        frame_of_reference_uid=str(first.FrameOfReferenceUID),
        sop_instance_uids=tuple(str(instances[s.instance].header.SOPInstanceUID) for s in ordered),
        frame_numbers=tuple(None if s.frame is None else s.frame + 1 for s in ordered),
        datasets=tuple(instances[i].header for i in instance_order),
        notes=geometry.notes,
    )


# --- collecting instances ---------------------------------------------------------------


def _is_image(ds: Dataset) -> bool:
    """Whether ``ds`` is an image instance (not a DICOMDIR, SR, KO, PR, ...)."""
    sop_class = ds.get("SOPClassUID") or getattr(ds, "file_meta", Dataset()).get(
        "MediaStorageSOPClassUID"
    )
    if sop_class == MediaStorageDirectoryStorage:
        return False
    return "Rows" in ds and "Columns" in ds


def _scan_path(path: Path) -> list[_Instance]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
        explicit = False
    elif path.is_file():
        files, explicit = [path], True
    else:
        raise SeriesNotFoundError(f"{path}: no such file or directory")

    instances = []
    for file in files:
        try:
            # Headers only: pixel data are read one instance at a time once the series
            # is known to be usable, so a large directory never sits in memory whole.
            header = pydicom.dcmread(file, stop_before_pixels=True)
        except InvalidDicomError as exc:
            if explicit:
                raise UnreadableFileError(f"{file}: not a DICOM file ({exc})") from exc
            LOGGER.debug("skipping %s: not a DICOM file", file)
            continue
        except Exception as exc:  # pydicom raises many types on damaged files
            raise UnreadableFileError(f"{file}: cannot be read as DICOM ({exc})") from exc
        if _is_image(header):
            instances.append(_Instance(header=header, label=file.name, path=file))
        else:
            LOGGER.debug("skipping %s: not an image instance", file)
    return instances


def _strip_pixels(ds: Dataset) -> Dataset:
    """A deep copy of ``ds`` without its pixel data (the caller's object is untouched)."""
    header = Dataset()
    for element in ds:
        if element.keyword not in _PIXEL_KEYWORDS:
            header.add(copy.deepcopy(element))
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is not None:
        header.file_meta = copy.deepcopy(file_meta)
    return header


def _from_datasets(datasets: Sequence[Dataset]) -> list[_Instance]:
    instances = []
    for i, ds in enumerate(datasets):
        if not _is_image(ds):
            continue
        label = f"dataset #{i} ({ds.get('SOPInstanceUID', 'no SOP Instance UID')})"
        instances.append(_Instance(header=_strip_pixels(ds), label=label, dataset=ds))
    return instances


def _series_name(uid: str, header: Dataset) -> str:
    """How messages name a series: UID plus number and description when present."""
    extra = []
    if header.get("SeriesNumber") is not None:
        extra.append(f"#{header.SeriesNumber}")
    if header.get("SeriesDescription"):
        extra.append(repr(str(header.SeriesDescription)))
    return f"series {uid}" + (f" ({' '.join(extra)})" if extra else "")


def _select_series(
    instances: list[_Instance], series_uid: str | None, where: str
) -> tuple[list[_Instance], str]:
    if not instances:
        raise SeriesNotFoundError(f"{where}: no DICOM image instances")
    by_series: dict[str, list[_Instance]] = {}
    for inst in instances:
        uid = str(inst.header.get("SeriesInstanceUID") or "")
        if not uid:
            raise MissingAttributeError(f"{where}: {inst.label} has no Series Instance UID")
        by_series.setdefault(uid, []).append(inst)

    found = ", ".join(f"{uid} ({len(v)} instances)" for uid, v in by_series.items())
    if series_uid is not None:
        if series_uid not in by_series:
            raise SeriesNotFoundError(
                f"series {series_uid}: not in {where}; found {len(by_series)}: {found}"
            )
        chosen = by_series[series_uid]
    elif len(by_series) > 1:
        raise MultipleSeriesError(
            f"{where}: image instances of {len(by_series)} series ({found}); "
            "pass series_uid= to choose one"
        )
    else:
        chosen = next(iter(by_series.values()))
    uid = str(chosen[0].header.SeriesInstanceUID)
    return chosen, _series_name(uid, chosen[0].header)


# --- per-instance checks -----------------------------------------------------------------


def _number_of_frames(header: Dataset) -> int:
    value = header.get("NumberOfFrames")
    return 1 if value in (None, "") else int(value)


def _check_instances(instances: list[_Instance], name: str, max_slices: int) -> None:
    seen: dict[str, str] = {}
    first = instances[0].header
    for inst in instances:
        h, label = inst.header, inst.label
        for keyword in ("SOPInstanceUID", "StudyInstanceUID"):
            if not h.get(keyword):
                raise MissingAttributeError(f"{name}: {label} has no {keyword}")
        if not h.get("FrameOfReferenceUID"):
            raise MissingGeometryError(
                f"{name}: {label} has no Frame of Reference UID, so its positions "
                "cannot be related to any other image"
            )
        sop_uid = str(h.SOPInstanceUID)
        if sop_uid in seen:
            raise DuplicateSliceError(
                f"{name}: instance {sop_uid} appears twice ({seen[sop_uid]} and {label})"
            )
        seen[sop_uid] = label

        modality = h.get("Modality")
        if modality != "MR":
            raise ModalityError(f"{name}: {label} has Modality {modality!r}, not 'MR'")
        sop_class = UID(str(h.get("SOPClassUID") or ""))
        if sop_class not in MR_IMAGE_SOP_CLASSES:
            raise ModalityError(
                f"{name}: {label} is {sop_class.name or 'no SOP class'}, not an MR image "
                "storage SOP class"
            )
        samples = h.get("SamplesPerPixel", 1)
        photometric = str(h.get("PhotometricInterpretation", "MONOCHROME2"))
        if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
            raise UnsupportedPixelDataError(
                f"{name}: {label} has {samples} sample(s) per pixel ({photometric}); "
                "a greyscale image is required"
            )
        # Rows/Columns are US, so a missing value would have made _is_image() skip it.
        rows, cols = int(h.Rows), int(h.Columns)
        if not (MIN_MATRIX <= rows <= MAX_MATRIX and MIN_MATRIX <= cols <= MAX_MATRIX):
            raise ImageSizeError(
                f"{name}: {label} is {rows} x {cols} pixels; rows and columns must lie in "
                f"[{MIN_MATRIX}, {MAX_MATRIX}]"
            )
        for keyword in ("Rows", "Columns", "StudyInstanceUID", "FrameOfReferenceUID"):
            if h.get(keyword) != first.get(keyword):
                raise InconsistentSlicesError(
                    f"{name}: {label} has {keyword} {h.get(keyword)} but "
                    f"{instances[0].label} has {first.get(keyword)}"
                )

    total = sum(_number_of_frames(inst.header) for inst in instances)
    if total > max_slices:
        raise ImageSizeError(f"{name}: {total} slices, more than the limit of {max_slices}")


# --- per-slice geometry ------------------------------------------------------------------


def _functional_item(header: Dataset, frame: int, keyword: str) -> Dataset | None:
    """The first item of functional group ``keyword`` for ``frame``: per-frame wins over
    shared, as PS3.3 C.7.6.16 requires."""
    for groups, index in (
        (header.get("PerFrameFunctionalGroupsSequence"), frame),
        (header.get("SharedFunctionalGroupsSequence"), 0),
    ):
        if groups is None or index >= len(groups):
            continue
        sequence = groups[index].get(keyword)
        if sequence:
            item: Dataset = sequence[0]
            return item
    return None


def _floats(source: Dataset | None, keyword: str, count: int, name: str, where: str) -> FloatVector:
    value: Any = None if source is None else source.get(keyword)
    if value is None or value == "":
        raise MissingGeometryError(f"{name}: {where} has no {keyword}")
    try:
        values = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MissingGeometryError(f"{name}: {where} has an unusable {keyword} ({exc})") from exc
    if values.shape != (count,) or not np.all(np.isfinite(values)):
        raise MissingGeometryError(
            f"{name}: {where} has {keyword} {list(value)}; expected {count} finite numbers"
        )
    return values


def _rescale(source: Dataset | None) -> tuple[float, float]:
    """Rescale slope and intercept; the identity when absent (e.g. plain MR Image)."""
    if source is None:
        return 1.0, 0.0
    slope = source.get("RescaleSlope")
    intercept = source.get("RescaleIntercept")
    return (
        1.0 if slope in (None, "") else float(slope),
        0.0 if intercept in (None, "") else float(intercept),
    )


def _slices_of(inst: _Instance, index: int, name: str) -> list[_Slice]:
    h = inst.header
    n_frames = _number_of_frames(h)
    functional = "PerFrameFunctionalGroupsSequence" in h or "SharedFunctionalGroupsSequence" in h
    if not functional:
        if n_frames != 1:
            raise MissingGeometryError(
                f"{name}: {inst.label} has {n_frames} frames but no functional groups, "
                "so its frames cannot be placed"
            )
        # Plain MR Image: everything sits at the top level of the instance.
        slices = [_make_slice(index, None, h, h, h, h, name, inst.label)]
    else:
        per_frame = h.get("PerFrameFunctionalGroupsSequence")
        if per_frame is None or len(per_frame) != n_frames:
            count = 0 if per_frame is None else len(per_frame)
            raise MissingGeometryError(
                f"{name}: {inst.label} has {n_frames} frames but {count} items in "
                "Per-frame Functional Groups Sequence"
            )
        slices = [
            _make_slice(
                index,
                f,
                _functional_item(h, f, "PlanePositionSequence"),
                _functional_item(h, f, "PlaneOrientationSequence"),
                _functional_item(h, f, "PixelMeasuresSequence"),
                _functional_item(h, f, "PixelValueTransformationSequence"),
                name,
                f"{inst.label} frame {f + 1}",
            )
            for f in range(n_frames)
        ]
    return slices


def _make_slice(
    index: int,
    frame: int | None,
    position_source: Dataset | None,
    orientation_source: Dataset | None,
    measures_source: Dataset | None,
    rescale_source: Dataset | None,
    name: str,
    where: str,
) -> _Slice:
    position = _floats(position_source, "ImagePositionPatient", 3, name, where)
    orientation = _floats(orientation_source, "ImageOrientationPatient", 6, name, where)
    row, col = orientation[:3], orientation[3:]
    if (
        abs(np.linalg.norm(row) - 1.0) > ORIENTATION_TOLERANCE
        or abs(np.linalg.norm(col) - 1.0) > ORIENTATION_TOLERANCE
        or abs(float(row @ col)) > ORIENTATION_TOLERANCE
    ):
        raise MissingGeometryError(
            f"{name}: {where} has Image Orientation (Patient) {orientation.tolist()}, "
            "which is not two orthogonal unit vectors"
        )
    spacing = _floats(measures_source, "PixelSpacing", 2, name, where)
    if not np.all((spacing > 0) & (spacing <= MAX_PIXEL_SPACING_MM)):
        raise ImageSizeError(
            f"{name}: {where} has Pixel Spacing {spacing.tolist()} mm; each value must lie "
            f"in (0, {MAX_PIXEL_SPACING_MM:g}] mm"
        )
    slope, intercept = _rescale(rescale_source)
    if not (math.isfinite(slope) and math.isfinite(intercept)) or slope == 0:
        raise UnsupportedPixelDataError(
            f"{name}: {where} has Rescale Slope {slope} and Intercept {intercept}"
        )
    return _Slice(
        instance=index,
        frame=frame,
        position=position,
        orientation=orientation,
        pixel_spacing=(float(spacing[0]), float(spacing[1])),
        slope=slope,
        intercept=intercept,
    )


def _slice_label(s: _Slice, instances: list[_Instance]) -> str:
    label = instances[s.instance].label
    return label if s.frame is None else f"{label} frame {s.frame + 1}"


def _check_slice_consistency(slices: list[_Slice], instances: list[_Instance], name: str) -> None:
    ref = slices[0]
    for s in slices[1:]:
        if np.max(np.abs(np.subtract(s.pixel_spacing, ref.pixel_spacing))) > (
            PIXEL_SPACING_TOLERANCE_MM
        ):
            raise InconsistentSlicesError(
                f"{name}: {_slice_label(s, instances)} has Pixel Spacing "
                f"{list(s.pixel_spacing)} but {_slice_label(ref, instances)} has "
                f"{list(ref.pixel_spacing)}"
            )
        if np.max(np.abs(s.orientation - ref.orientation)) > ORIENTATION_TOLERANCE:
            raise MixedOrientationError(
                f"{name}: {_slice_label(s, instances)} has orientation "
                f"{s.orientation.tolist()} but {_slice_label(ref, instances)} has "
                f"{ref.orientation.tolist()}"
            )


@dataclass(frozen=True)
class _Geometry:
    order: list[int]
    direction: FloatVector
    slice_spacing: float
    notes: tuple[str, ...]


def _stack_geometry(slices: list[_Slice], instances: list[_Instance], name: str) -> _Geometry:
    """Sort the slices along the normal and check the stack is a regular grid."""
    row = slices[0].orientation[:3]
    row = row / np.linalg.norm(row)
    normal = np.cross(row, slices[0].orientation[3:])
    normal /= np.linalg.norm(normal)
    col = np.cross(normal, row)  # re-orthogonalised: ITK wants an orthonormal matrix

    positions = np.array([s.position for s in slices])
    distance = positions @ normal
    # Stable: with duplicates the message below names them in input order.
    order = [int(k) for k in np.argsort(distance, kind="stable")]
    d = distance[order]
    steps = np.diff(d)

    def between(i: int) -> str:
        a, b = slices[order[i]], slices[order[i + 1]]
        return (
            f"{_slice_label(a, instances)} (at {d[i]:.3f} mm along the normal) and "
            f"{_slice_label(b, instances)} (at {d[i + 1]:.3f} mm)"
        )

    for i, step in enumerate(steps):
        if step <= DUPLICATE_TOLERANCE_MM:
            raise DuplicateSliceError(f"{name}: two slices at one position: {between(i)}")

    median = float(np.median(steps))
    tolerance = min(SPACING_REL_TOLERANCE * median, SPACING_ABS_TOLERANCE_MM)
    for i, step in enumerate(steps):
        if step >= GAP_FACTOR * median:
            missing = round(step / median) - 1
            raise MissingSliceError(
                f"{name}: gap of {step:.3f} mm ({step / median:.2f} x the median spacing "
                f"{median:.3f} mm, about {max(missing, 1)} slice(s) missing) between "
                f"{between(i)}"
            )
    for i, step in enumerate(steps):
        if abs(step - median) > tolerance:
            raise UnevenSpacingError(
                f"{name}: slice step {step:.3f} mm differs from the median {median:.3f} mm by "
                f"more than {tolerance:.3f} mm, between {between(i)}"
            )

    # Positions must advance along the normal; an in-plane drift (a sheared stack) cannot
    # be represented by an origin, a spacing and a direction matrix.
    offsets = positions[order] - positions[order[0]]
    in_plane = offsets - np.outer(offsets @ normal, normal)
    drift = np.linalg.norm(in_plane, axis=1)
    limit = 0.5 * min(slices[0].pixel_spacing)
    worst = int(np.argmax(drift))
    if drift[worst] > limit:
        raise SkewedStackError(
            f"{name}: {_slice_label(slices[order[worst]], instances)} is displaced "
            f"{drift[worst]:.3f} mm within the image plane from the first slice (limit "
            f"{limit:.3f} mm, half a pixel): the stack is sheared, not perpendicular"
        )

    slice_spacing = float((d[-1] - d[0]) / (len(d) - 1))
    notes = []
    for inst in instances:
        stated = _stated_spacing(inst.header)
        if stated is not None and abs(stated - slice_spacing) > tolerance:
            note = (
                f"{name}: Spacing Between Slices {stated:g} mm disagrees with the spacing "
                f"measured from positions, {slice_spacing:.4f} mm; using the measured one"
            )
            LOGGER.info(note)
            notes.append(note)
            break

    direction = np.column_stack([row, col, normal])
    return _Geometry(
        order=order, direction=direction, slice_spacing=slice_spacing, notes=tuple(notes)
    )


def _stated_spacing(header: Dataset) -> float | None:
    source = header
    if "SpacingBetweenSlices" not in header:
        item = _functional_item(header, 0, "PixelMeasuresSequence")
        if item is None:
            return None
        source = item
    value = source.get("SpacingBetweenSlices")
    try:
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


# --- pixel data --------------------------------------------------------------------------


def _read_volume(
    slices: list[_Slice], instances: list[_Instance], order: list[int], name: str
) -> npt.NDArray[np.float32]:
    rows, cols = int(instances[0].header.Rows), int(instances[0].header.Columns)
    volume = np.empty((len(slices), rows, cols), dtype=np.float32)
    position_of = {index: k for k, index in enumerate(order)}
    by_instance: dict[int, list[int]] = {}
    for index, s in enumerate(slices):
        by_instance.setdefault(s.instance, []).append(index)
    # One instance at a time: at most one instance's decoded frames are held besides
    # the volume.
    for i, indices in by_instance.items():
        frames = _decode(instances[i], name)
        for index in indices:
            s = slices[index]
            frame = frames[0 if s.frame is None else s.frame].astype(np.float64)
            volume[position_of[index]] = frame * s.slope + s.intercept
    return volume


def _decode(inst: _Instance, name: str) -> npt.NDArray[Any]:
    """All frames of ``inst`` as an array (frames, rows, columns) of stored values."""
    if inst.dataset is not None:
        ds = inst.dataset
    else:
        assert inst.path is not None
        try:
            ds = pydicom.dcmread(inst.path)
        except Exception as exc:  # pydicom raises many types on damaged files
            raise UnreadableFileError(f"{name}: {inst.label} cannot be read ({exc})") from exc

    file_meta = getattr(ds, "file_meta", None)
    transfer_syntax = None if file_meta is None else file_meta.get("TransferSyntaxUID")
    if not transfer_syntax:
        raise UnreadableFileError(
            f"{name}: {inst.label} has no Transfer Syntax UID, so its pixel data cannot be "
            "interpreted"
        )
    ts = UID(str(transfer_syntax))
    try:
        decoder = get_decoder(ts)
    except NotImplementedError as exc:
        raise MissingDecoderError(
            f"{name}: {inst.label} is encoded as {ts.name or 'an unknown syntax'} ({ts}), "
            "which pydicom has no pixel-data decoder for"
        ) from exc
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "no plugin registered"
        raise MissingDecoderError(
            f"{name}: {inst.label} is encoded as {ts.name} ({ts}) and no installed plugin "
            f"can decode it ({missing})"
        )
    if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        raise UnreadableFileError(f"{name}: {inst.label} has no pixel data")

    try:
        # raw=True: greyscale only, so no colour-space conversion is wanted.
        array = pixel_array(ds, raw=True)
    except Exception as exc:  # decoders raise many types on corrupt or truncated data
        raise UnreadableFileError(
            f"{name}: {inst.label}: pixel data ({ts.name}) cannot be decoded ({exc})"
        ) from exc

    n_frames = _number_of_frames(inst.header)
    shape = (n_frames, int(inst.header.Rows), int(inst.header.Columns))
    if array.size != math.prod(shape):
        raise UnreadableFileError(
            f"{name}: {inst.label}: decoded pixel data have shape {array.shape}, expected {shape}"
        )
    return array.reshape(shape)
