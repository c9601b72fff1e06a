"""Does a received series look complete? A pure function over instance headers.

Used at association release to decide whether a series can be closed at once, rather
than after the quiet timeout. A wrong "incomplete" only costs that timeout (the tracker
still closes the series when it goes quiet); a wrong "complete" would score a partial
series, so the checks lean towards "incomplete".

Single-frame MR: one orientation; slice positions along the normal evenly spaced (within
``tolerance`` of the spacing) with no gap and no duplicate; at least ``min_slices``
slices; as many images as ImagesInAcquisition when the headers state it. The ends of a
stack cannot be checked without that count. Enhanced MR: each instance holds all its
frames (an instance arrives whole or not at all).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import EnhancedMRImageStorage, SegmentationStorage

from listener.rules import image_orientation, slice_normal

_ORIENTATION_TOLERANCE = 1e-3  # direction cosines; scanners write about six digits
_MIN_STEP = 1e-3  # mm: closer than this is the same position whatever the spacing


@dataclass(frozen=True)
class Completeness:
    """Whether a series looks complete, why (or why not), and how many images it has.

    ``count`` is the number of images (slices, or frames for Enhanced MR) received;
    ``expected`` the number the headers announce, when they do.
    """

    complete: bool
    reason: str
    count: int
    expected: int | None


def _int(value: object) -> int | None:
    try:
        return int(str(value)) if value not in (None, "") else None
    except ValueError:
        return None


def _is_enhanced(header: Dataset) -> bool:
    return (
        str(header.get("SOPClassUID", "")) == EnhancedMRImageStorage
        or "PerFrameFunctionalGroupsSequence" in header
    )


def assess(
    headers: Sequence[Dataset], *, tolerance: float = 0.1, min_slices: int = 3
) -> Completeness:
    """Decide whether the series made of ``headers`` (one per instance) looks complete.

    Parameters
    ----------
    headers
        Instance headers of one series (pixel data not needed); SEG instances and
        repeated SOP Instance UIDs are ignored.
    tolerance
        Allowed deviation of a slice step from the spacing, as a fraction of it.
    min_slices
        Fewest slices a single-frame series needs to be complete.
    """
    unique: dict[str, Dataset] = {}
    for h in headers:
        if str(h.get("SOPClassUID", "")) != SegmentationStorage:
            unique[str(h.get("SOPInstanceUID", id(h)))] = h
    images = list(unique.values())
    if not images:
        return Completeness(False, "no image instances", 0, None)
    enhanced = [h for h in images if _is_enhanced(h)]
    if enhanced and len(enhanced) != len(images):
        return Completeness(
            False, "mixed single-frame and Enhanced MR instances", len(images), None
        )
    if enhanced:
        return _assess_enhanced(enhanced)
    return _assess_stack(images, tolerance, min_slices)


def _assess_enhanced(instances: list[Dataset]) -> Completeness:
    received = expected = 0
    for h in instances:
        frames = _int(h.get("NumberOfFrames"))
        per_frame = len(h.get("PerFrameFunctionalGroupsSequence", []) or [])
        if frames is None or frames < 1:
            return Completeness(False, "Enhanced MR instance without NumberOfFrames", 0, None)
        if per_frame != frames:
            return Completeness(
                False,
                f"Enhanced MR instance has {per_frame} per-frame groups for {frames} frames",
                per_frame,
                frames,
            )
        received += per_frame
        expected += frames
    what = "instance" if len(instances) == 1 else "instances"
    return Completeness(
        True, f"{len(instances)} Enhanced MR {what} with {received} frames", received, expected
    )


def _label(header: Dataset, index: int) -> str:
    number = _int(header.get("InstanceNumber"))
    return str(number) if number is not None else f"#{index + 1}"


def _assess_stack(images: list[Dataset], tolerance: float, min_slices: int) -> Completeness:
    count = len(images)
    stated = [n for n in (_int(h.get("ImagesInAcquisition")) for h in images) if n]
    expected = max(stated) if stated else None
    if expected is not None and count < expected:
        return Completeness(
            False, f"{count} of {expected} images (ImagesInAcquisition)", count, expected
        )
    if count < min_slices:
        return Completeness(
            False, f"only {count} slice(s), at least {min_slices} needed", count, expected
        )

    first = image_orientation(images[0])
    normal = slice_normal(images[0])
    if first is None or normal is None:
        return Completeness(False, "no usable ImageOrientationPatient", count, expected)
    placed: list[tuple[float, str]] = []
    for i, h in enumerate(images):
        iop = image_orientation(h)
        if iop is None or max(abs(a - b) for a, b in zip(iop, first, strict=True)) > (
            _ORIENTATION_TOLERANCE
        ):
            return Completeness(
                False, f"slice {_label(h, i)}: orientation differs or is missing", count, expected
            )
        try:
            position = [float(v) for v in h.get("ImagePositionPatient")]
        except (TypeError, ValueError):
            position = []
        if len(position) != 3 or not all(map(math.isfinite, position)):
            return Completeness(
                False, f"slice {_label(h, i)}: no usable ImagePositionPatient", count, expected
            )
        placed.append((sum(p * n for p, n in zip(position, normal, strict=True)), _label(h, i)))
    placed.sort()

    steps = [b[0] - a[0] for a, b in itertools.pairwise(placed)]
    positive = [s for s in steps if s > _MIN_STEP]
    if not positive:
        return Completeness(False, "all slices at one position", count, expected)
    spacing = statistics.median(positive)

    for (d0, a), (_, b), step in zip(placed, placed[1:], steps, strict=False):
        if step < tolerance * spacing:
            return Completeness(
                False,
                f"duplicate position: slices {a} and {b} both at {d0:.1f} mm",
                count,
                expected,
            )
    for (_, a), (_, b), step in zip(placed, placed[1:], steps, strict=False):
        ratio = step / spacing
        if abs(ratio - 1.0) <= tolerance:
            continue
        missing = round(ratio) - 1
        if missing >= 1 and abs(ratio - round(ratio)) <= tolerance:
            return Completeness(
                False,
                f"gap between slice {a} and {b}: {missing} slice(s) missing "
                f"(step {step:.2f} mm, spacing {spacing:.2f} mm)",
                count,
                expected,
            )
        return Completeness(
            False,
            f"uneven spacing between slice {a} and {b} (step {step:.2f} mm, "
            f"spacing {spacing:.2f} mm)",
            count,
            expected,
        )

    # Every step equal but a multiple of the stated spacing: e.g. only the odd slices of
    # an interleaved acquisition have arrived so far. Trust SpacingBetweenSlices only when
    # it is at least the slice thickness (some vendors write the gap there instead).
    declared = _positive_float(images[0].get("SpacingBetweenSlices"))
    thickness = _positive_float(images[0].get("SliceThickness"))
    if declared is not None and (thickness is None or declared >= thickness * (1 - tolerance)):
        ratio = spacing / declared
        if round(ratio) >= 2 and abs(ratio - round(ratio)) <= tolerance:
            return Completeness(
                False,
                f"slices are {spacing:.2f} mm apart, {round(ratio)}x SpacingBetweenSlices "
                f"{declared:g} mm: slices in between are missing",
                count,
                expected,
            )
    stated_text = f", ImagesInAcquisition {expected}" if expected is not None else ""
    return Completeness(
        True,
        f"{count} slices {spacing:.2f} mm apart, no gap{stated_text}",
        count,
        expected,
    )


def _positive_float(value: object) -> float | None:
    try:
        result = float(str(value)) if value not in (None, "") else None
    except ValueError:
        return None
    return result if result is not None and math.isfinite(result) and result > 0 else None


__all__ = ["Completeness", "assess"]
