"""Placing the segments of a DICOM Segmentation on a series' image grid.

The second half of reading a SEG (:mod:`model_bundle.imaging.seg_roi` decides which
segment is which hip): each segment's frames are parsed, then the segment is put on the
series grid by its source references or, failing that, resampled by geometry; see the
"Placing a segment on the series grid" section of :mod:`model_bundle.imaging.seg_roi`.
Private to ``model_bundle.imaging``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import highdicom as hd
import numpy as np
import numpy.typing as npt
import SimpleITK as sitk
from pydicom.dataset import Dataset

from model_bundle.imaging.series import LoadedSeries
from onfh_dlr.errors import SegmentationGeometryError

LOGGER = logging.getLogger(__name__)

BoolVolume = npt.NDArray[np.bool_]

#: A frame position may differ from its referenced slice by this fraction of a voxel.
_POSITION_TOLERANCE_VOXELS: Final = 0.1
#: Pixel and slice spacings this close (relative) describe the same grid.
_SPACING_RTOL: Final = 0.01
_ORIENTATION_TOLERANCE: Final = 1e-3


@dataclass(frozen=True)
class _Frame:
    """One SEG frame: its segment, geometry and source references."""

    index: int  # 0-based frame index
    segment: int | None  # None for LABELMAP (every frame holds every segment)
    position: npt.NDArray[np.float64] | None
    orientation: npt.NDArray[np.float64] | None
    pixel_spacing: tuple[float, float] | None
    slice_spacing: float | None
    references: tuple[tuple[str, int | None, str | None], ...]  # uid, frame, preserved


@dataclass
class _Context:
    """One SEG read against one series, with the masks placed so far."""

    seg: hd.seg.Segmentation
    series: LoadedSeries
    name: str
    frames: list[_Frame]
    masks: dict[int, tuple[BoolVolume, str]]


def _first(seq: Iterable[Dataset] | None) -> Dataset | None:
    return next(iter(seq), None) if seq is not None else None


def _floats(value: Any) -> npt.NDArray[np.float64] | None:
    if value is None or value == "":
        return None
    return np.asarray([float(v) for v in value], dtype=np.float64)


def _functional(seg: Dataset, item: Dataset | None, keyword: str) -> Dataset | None:
    """The first item of functional group ``keyword``: per frame first, then shared."""
    if item is not None and keyword in item:
        return _first(item[keyword].value)
    shared = _first(seg.get("SharedFunctionalGroupsSequence"))
    if shared is not None and keyword in shared:
        return _first(shared[keyword].value)
    return None


def _parse_frames(seg: hd.seg.Segmentation) -> list[_Frame]:
    labelmap = str(seg.SOPClassUID) == "1.2.840.10008.5.1.4.1.1.66.7"
    per_frame = list(seg.get("PerFrameFunctionalGroupsSequence", []))
    n_frames = int(seg.get("NumberOfFrames", 1) or 1)
    frames = []
    for index in range(n_frames):
        item = per_frame[index] if index < len(per_frame) else None
        ident = _functional(seg, item, "SegmentIdentificationSequence")
        segment = None
        if not labelmap and ident is not None and "ReferencedSegmentNumber" in ident:
            segment = int(ident.ReferencedSegmentNumber)
        position = _functional(seg, item, "PlanePositionSequence")
        orientation = _functional(seg, item, "PlaneOrientationSequence")
        measures = _functional(seg, item, "PixelMeasuresSequence")
        spacing = _floats(measures.get("PixelSpacing")) if measures is not None else None
        between = measures.get("SpacingBetweenSlices") if measures is not None else None
        references = []
        for derivation in item.get("DerivationImageSequence", []) if item is not None else []:
            for src in derivation.get("SourceImageSequence", []):
                numbers = src.get("ReferencedFrameNumber")
                frame_numbers: list[int | None] = (
                    [None]
                    if numbers in (None, "")
                    else [int(v) for v in (numbers if isinstance(numbers, list) else [numbers])]
                )
                preserved = src.get("SpatialLocationsPreserved")
                for number in frame_numbers:
                    references.append(
                        (
                            str(src.ReferencedSOPInstanceUID),
                            number,
                            None if preserved is None else str(preserved),
                        )
                    )
        frames.append(
            _Frame(
                index=index,
                segment=segment,
                position=None
                if position is None
                else _floats(position.get("ImagePositionPatient")),
                orientation=None
                if orientation is None
                else _floats(orientation.get("ImageOrientationPatient")),
                pixel_spacing=None if spacing is None else (float(spacing[0]), float(spacing[1])),
                slice_spacing=None if between in (None, "") else float(between),
                references=tuple(references),
            )
        )
    return frames


def _mask_of(ctx: _Context, number: int) -> tuple[BoolVolume, str]:
    """Segment ``number`` on the series grid (cached), and how it was placed."""
    if number not in ctx.masks:
        frames = [f for f in ctx.frames if f.segment in (None, number)]
        if not frames:  # an empty segment of a BINARY/FRACTIONAL SEG has no frames
            size = ctx.series.image.GetSize()
            ctx.masks[number] = (np.zeros(size[::-1], dtype=bool), "no frames in the SEG")
        else:
            slices = _reference_slices(ctx, frames)
            if slices is not None:
                ctx.masks[number] = (_by_references(ctx, number), "placed by source references")
            else:
                ctx.masks[number] = (
                    _by_geometry(ctx, number),
                    "resampled by geometry (nearest neighbour) onto the series grid",
                )
    return ctx.masks[number]


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= _SPACING_RTOL * max(abs(a), abs(b))


def _reference_slices(ctx: _Context, frames: list[_Frame]) -> list[int] | None:
    """Series slice index of each frame if the frames can be read by reference."""
    series, image = ctx.series, ctx.series.image
    cols, rows, _ = image.GetSize()
    if int(ctx.seg.Rows) != rows or int(ctx.seg.Columns) != cols:
        return None
    slice_of: dict[tuple[str, int | None], int] = {}
    for k, (uid, number) in enumerate(
        zip(series.sop_instance_uids, series.frame_numbers, strict=True)
    ):
        slice_of[(uid, number)] = k
        if number is None:  # some writers reference a single-frame image as frame 1
            slice_of[(uid, 1)] = k
    col_spacing, row_spacing, slice_spacing = image.GetSpacing()
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    series_orientation = np.concatenate([direction[:, 0], direction[:, 1]])
    slices = []
    for frame in frames:
        hits = [
            (slice_of[(uid, number)], preserved)
            for uid, number, preserved in frame.references
            if (uid, number) in slice_of
        ]
        if len({k for k, _ in hits}) != 1:
            return None
        k, preserved = hits[0]
        has_geometry = frame.position is not None
        # Absent Spatial Locations Preserved is accepted only when the frame position
        # will confirm the placement below.
        if preserved != "YES" and not (preserved is None and has_geometry):
            return None
        if frame.pixel_spacing is not None and not (
            _close(frame.pixel_spacing[0], row_spacing)
            and _close(frame.pixel_spacing[1], col_spacing)
        ):
            return None
        # A declared slice spacing other than the series' means the SEG is a volume of
        # its own (e.g. every other slice), not per-slice masks: it must be resampled.
        if frame.slice_spacing is not None and not _close(frame.slice_spacing, slice_spacing):
            return None
        if frame.orientation is not None and (
            np.max(np.abs(frame.orientation - series_orientation)) > _ORIENTATION_TOLERANCE
        ):
            return None
        if frame.position is not None:
            index = np.asarray(
                image.TransformPhysicalPointToContinuousIndex(frame.position.tolist())
            )
            expected = np.array([0.0, 0.0, float(k)])
            if np.max(np.abs(index - expected)) > _POSITION_TOLERANCE_VOXELS:
                raise SegmentationGeometryError(
                    f"{ctx.name}: frame {frame.index + 1} references slice {k + 1} of the "
                    f"series but its Image Position (Patient) lies at (column, row, slice) "
                    f"index {np.round(index, 2).tolist()}: references and geometry disagree"
                )
        slices.append(k)
    if len(set(slices)) != len(slices):
        return None
    return slices


def _binary(array: npt.NDArray[Any]) -> BoolVolume:
    """Binarise highdicom output: FRACTIONAL values are rescaled to [0, 1]."""
    return np.asarray(array, dtype=np.float32) >= 0.5


def _by_references(ctx: _Context, number: int) -> BoolVolume:
    series = ctx.series
    ignore = any(
        preserved is None
        for f in ctx.frames
        if f.segment in (None, number)
        for _, _, preserved in f.references
    )
    common: dict[str, Any] = {
        "segment_numbers": [number],
        "assert_missing_frames_are_empty": True,
        "ignore_spatial_locations": ignore,
        "rescale_fractional": True,
        "skip_overlap_checks": True,
    }
    try:
        if all(f is None for f in series.frame_numbers):
            pixels = ctx.seg.get_pixels_by_source_instance(
                source_sop_instance_uids=list(series.sop_instance_uids), **common
            )
            return _binary(pixels[..., 0])
        cols, rows, n_slices = series.image.GetSize()
        mask = np.zeros((n_slices, rows, cols), dtype=bool)
        by_uid: dict[str, list[tuple[int, int]]] = {}
        for k, (uid, frame) in enumerate(
            zip(series.sop_instance_uids, series.frame_numbers, strict=True)
        ):
            by_uid.setdefault(uid, []).append((k, frame if frame is not None else 1))
        for uid, pairs in by_uid.items():
            pixels = ctx.seg.get_pixels_by_source_frame(
                source_sop_instance_uid=uid,
                source_frame_numbers=[f for _, f in pairs],
                **common,
            )
            mask[[k for k, _ in pairs]] = _binary(pixels[..., 0])
        return mask
    except (RuntimeError, ValueError, KeyError) as exc:
        raise SegmentationGeometryError(
            f"{ctx.name}: segment {number} cannot be read by its source references ({exc})"
        ) from exc


def _by_geometry(ctx: _Context, number: int) -> BoolVolume:
    series = ctx.series
    if not ctx.seg.get("FrameOfReferenceUID") or any(
        f.position is None or f.orientation is None for f in ctx.frames
    ):
        raise SegmentationGeometryError(
            f"{ctx.name}: segment {number} cannot be placed on series "
            f"{series.series_instance_uid}: its frames neither reference the series' slices "
            "one to one nor carry plane positions in the series' frame of reference"
        )
    try:
        volume = ctx.seg.get_volume(
            segment_numbers=[number], rescale_fractional=True, skip_overlap_checks=True
        )
    except (RuntimeError, ValueError, KeyError) as exc:
        raise SegmentationGeometryError(
            f"{ctx.name}: segment {number}: its frames do not form a regular volume that can "
            f"be resampled onto the series ({exc})"
        ) from exc
    array = np.asarray(volume.array)
    if array.ndim == 4:
        array = array[..., 0]
    binary = _binary(array)
    affine = np.asarray(volume.affine, dtype=np.float64)
    if not binary.any():
        return np.zeros(series.image.GetSize()[::-1], dtype=bool)
    _check_overlap(ctx, number, binary, affine)

    # highdicom's affine maps (slice, row, column) indices; SimpleITK's index order is
    # (column, row, slice), so the axes are taken in reverse.
    axes = [affine[:3, 2], affine[:3, 1], affine[:3, 0]]
    spacing = [float(np.linalg.norm(a)) for a in axes]
    direction = np.column_stack([a / s for a, s in zip(axes, spacing, strict=True)])
    seg_image = sitk.GetImageFromArray(binary.astype(np.uint8))
    seg_image.SetOrigin(tuple(float(v) for v in affine[:3, 3]))
    seg_image.SetSpacing(spacing)
    seg_image.SetDirection(tuple(float(v) for v in direction.ravel()))
    resampled = sitk.Resample(
        seg_image, series.image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
    )
    return np.asarray(sitk.GetArrayFromImage(resampled), dtype=np.uint8) > 0


def _check_overlap(
    ctx: _Context, number: int, binary: BoolVolume, affine: npt.NDArray[np.float64]
) -> None:
    """Refuse a segment wholly outside the series volume; warn when part is outside."""
    image = ctx.series.image
    indices = np.argwhere(binary).astype(np.float64)  # (slice, row, column)
    points = indices @ affine[:3, :3].T + affine[:3, 3]
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    scale = direction * np.asarray(image.GetSpacing(), dtype=np.float64)
    continuous = np.linalg.solve(scale, (points - np.asarray(image.GetOrigin())).T).T
    size = np.asarray(image.GetSize(), dtype=np.float64)
    inside = np.all((continuous >= -0.5) & (continuous <= size - 0.5), axis=1)
    if not inside.any():
        raise SegmentationGeometryError(
            f"{ctx.name}: segment {number} lies entirely outside series "
            f"{ctx.series.series_instance_uid} (same frame of reference, no overlap)"
        )
    if not inside.all():
        LOGGER.warning(
            "%s: %.1f %% of segment %d lies outside the series volume and is dropped",
            ctx.name,
            100.0 * (1.0 - inside.mean()),
            number,
        )
