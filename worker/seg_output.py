"""The DICOM Segmentation (SEG) of the femoral-head ROIs a study was scored on.

One BINARY SEG per scored series, in the source study, in a new series, on the source
frame of reference and slice grid: every frame references the source slice it was drawn
on (Derivation Image Sequence), so a viewer overlays it without resampling and
:func:`model_bundle.imaging.seg_roi.rois_from_seg` reads it back by reference.

Segments
    One per hip that was scored, labelled exactly :data:`SEGMENT_LABELS`
    ("Left femoral head", "Right femoral head"), category SCT 123037004 *Anatomical
    Structure*, type SCT 2812003 *Head of femur* with the side as a Segmented Property
    Type Modifier (SCT 7771000 *Left* / 24028007 *Right*): the same codes the phantom's
    ground truth uses (:mod:`phantom.dicom_writer`) and :mod:`model_bundle.imaging.seg_roi`
    matches first. Left is segment 1 and right segment 2 when both are present.
Algorithm type
    AUTOMATIC for an auto-segmented ROI, with the bundle named as the algorithm.
    A ROI taken from a received SEG keeps that segment's algorithm type and
    identification when the caller passes the received segment (MANUAL when a person
    drew it), SEMIAUTOMATIC naming this software otherwise; the Segment Description
    says it was copied from a received SEG.
Equipment (IHE AI Results)
    Manufacturer "onfh-dlr", Manufacturer's Model Name = bundle name, Software
    Versions = bundle version, Device UID = the bundle's Device UID, in the General
    Equipment module and in a Contributing Equipment item (purpose DCM 109102
    *Processing Equipment*), see :func:`contributing_equipment`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import highdicom as hd
import numpy as np
import numpy.typing as npt
import SimpleITK as sitk
from highdicom.sr.coding import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid
from pydicom.valuerep import DA, DT, TM

from model_bundle.bundle import Manifest
from model_bundle.imaging import HipROI, LoadedSeries, Side
from onfh_dlr.errors import OutputError

__all__ = [
    "MANUFACTURER",
    "SEGMENT_LABELS",
    "OutputDevice",
    "build_segmentation",
    "complete_headers",
    "contributing_equipment",
    "plain_text",
    "segment_numbers_by_side",
    "stamp_datetime",
]

#: Manufacturer of every object onfh-dlr writes.
MANUFACTURER: Final = "onfh-dlr"
#: Segment Label per side: exact, so readers (and our own validation) can rely on it.
SEGMENT_LABELS: Final[Mapping[Side, str]] = {
    Side.LEFT: "Left femoral head",
    Side.RIGHT: "Right femoral head",
}
_SIDE_ORDER: Final[tuple[Side, Side]] = (Side.LEFT, Side.RIGHT)

# Codes shared with phantom.dicom_writer (see its comments for the sources).
ANATOMICAL_STRUCTURE: Final = ("123037004", "SCT", "Anatomical Structure")
HEAD_OF_FEMUR: Final = ("2812003", "SCT", "Head of femur")
LATERALITY: Final[Mapping[Side, tuple[str, str, str]]] = {
    Side.LEFT: ("7771000", "SCT", "Left"),
    Side.RIGHT: ("24028007", "SCT", "Right"),
}
# CID 7162: the auto-segmentation votes for sphere centres from image edges and fits
# a sphere to the strongest edge points (model_bundle.imaging.autoseg): edge detection.
_AUTO_FAMILY: Final = codes.cid7162.EdgeDetection
# A ROI copied from a received SEG: our software placed it on the series grid.
_COPY_FAMILY: Final = codes.cid7162.MorphologicalOperations
_DISPLAY_RGB: Final[Mapping[Side, tuple[int, int, int]]] = {
    Side.LEFT: (80, 160, 255),
    Side.RIGHT: (80, 220, 120),
}
_LO_MAX: Final = 64  # characters in an LO value
NOT_FOR_CLINICAL_USE: Final = "NOT FOR CLINICAL USE"


@dataclass(frozen=True)
class OutputDevice:
    """What the SEG and SR say about the software and model that made them.

    Attributes
    ----------
    name, version
        The bundle's name and version (Manufacturer's Model Name, Software Versions,
        algorithm name and version).
    device_uid
        The bundle's Device UID (new for every training run).
    not_for_clinical_use, warning
        Whether every output must say NOT FOR CLINICAL USE, and the bundle's warning.
    threshold, deployed_model
        The decision threshold on the deployed model's probability, and that model.
    intended_use
        The bundle's intended use, as text.
    manufacturer
        Manufacturer of the software (:data:`MANUFACTURER`).
    """

    name: str
    version: str
    device_uid: str
    not_for_clinical_use: bool
    warning: str
    threshold: float
    deployed_model: str
    intended_use: str = ""
    manufacturer: str = MANUFACTURER

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> OutputDevice:
        """The device description of a verified bundle manifest."""
        return cls(
            name=manifest.name,
            version=manifest.version,
            device_uid=manifest.device_uid,
            not_for_clinical_use=manifest.not_for_clinical_use,
            warning=manifest.warning,
            threshold=manifest.threshold,
            deployed_model=manifest.deployed_model,
            intended_use=manifest.intended_use,
        )

    def series_description(self, what: str) -> str:
        """A Series Description (LO) that starts with the clinical-use warning if any."""
        text = f"{NOT_FOR_CLINICAL_USE} {what}" if self.not_for_clinical_use else what
        return _lo(text)


def plain_text(text: str) -> str:
    """``text`` in Latin-1, the character set of most source series.

    Our own texts (the bundle's warning may contain typographic dashes or quotes) go
    into objects that keep the source's Specific Character Set; anything Latin-1
    cannot encode is spelled in ASCII or replaced, never left for the encoder to mangle.
    """
    table = {
        "\u2014": "-",
        "\u2013": "-",
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
    }
    text = "".join(table.get(ch, ch) for ch in text)
    return text.encode("latin-1", errors="replace").decode("latin-1")


def _lo(text: str) -> str:
    """``text`` as an LO value: Latin-1, cut to 64 characters."""
    text = plain_text(text)
    return text if len(text) <= _LO_MAX else text[: _LO_MAX - 3].rstrip() + "..."


def _concept(code: tuple[str, str, str]) -> CodedConcept:
    return CodedConcept(*code)


def stamp_datetime(ds: Dataset, when: datetime) -> None:
    """Set the creation, content and series date/time of a built object to ``when``.

    highdicom stamps the wall clock (and its own Contributing Equipment item); a fixed
    time (e.g. when the job was created) makes a re-run produce the same object. The
    acquisition equipment item keeps the source's acquisition time.
    """
    date, time = DA(when.date()), TM(when.time())
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.ContentDate, ds.ContentTime = date, time
    ds.SeriesDate, ds.SeriesTime = date, time
    for item in ds.get("ContributingEquipmentSequence", []):
        purpose = item.get("PurposeOfReferenceCodeSequence", [])
        if purpose and purpose[0].CodeValue == codes.DCM.ProcessingEquipment.value:
            item.ContributionDateTime = DT(when)


def contributing_equipment(device: OutputDevice) -> hd.ContributingEquipment:
    """The Contributing Equipment item of the model, per IHE AI Results.

    Purpose of reference is DCM 109102 *Processing Equipment* (the equipment that
    produced the derived object); the Device UID (0018,1002) is added to the item
    because highdicom has no parameter for it.
    """
    item = hd.ContributingEquipment(
        manufacturer=device.manufacturer,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=device.name,
        software_versions=device.version,
        contribution_description=_contribution_description(device),
    )
    item.DeviceUID = device.device_uid
    return item


def _contribution_description(device: OutputDevice) -> str:
    text = f"Femoral-head ROI and DLR early-ONFH scoring by {device.name} {device.version}"
    if device.not_for_clinical_use:
        text = f"{NOT_FOR_CLINICAL_USE}: {device.warning}. {text}"
    return plain_text(text)[:1024]  # ST


def _algorithm(
    device: OutputDevice, family: object, step: str
) -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(
        name=_lo(device.name),
        family=family,  # type: ignore[arg-type]
        version=_lo(device.version),
        source=device.manufacturer,
        parameters={"step": step},
    )


def _segment_description(
    number: int,
    roi: HipROI,
    device: OutputDevice,
    source_segment: Dataset | None,
) -> hd.seg.SegmentDescription:
    copied_algorithm = None
    if roi.source == "auto":
        algorithm_type = hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        algorithm: hd.AlgorithmIdentificationSequence | None = _algorithm(
            device, _AUTO_FAMILY, "femoral-head auto-segmentation (sphere fit)"
        )
        detail = "auto-segmented"
    else:
        # The mask is a received segment placed on the series grid by this software.
        # Who drew it decides the type (MANUAL only when the received SEG says so) and
        # the algorithm named is the received one; unknown provenance: SEMIAUTOMATIC
        # with this software named (it chose and placed the segment).
        received = str(source_segment.get("SegmentAlgorithmType", "")) if source_segment else ""
        known = {t.value for t in hd.seg.SegmentAlgorithmTypeValues}
        algorithm_type = hd.seg.SegmentAlgorithmTypeValues(
            received if received in known else "SEMIAUTOMATIC"
        )
        algorithm = (
            None
            if algorithm_type == hd.seg.SegmentAlgorithmTypeValues.MANUAL
            else _algorithm(device, _COPY_FAMILY, "copied from a received SEG")
        )
        if algorithm is not None and source_segment is not None and received in known:
            copied_algorithm = source_segment.get("SegmentationAlgorithmIdentificationSequence")
        detail = f"from received SEG ({algorithm_type.value.lower()})"
    desc = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=SEGMENT_LABELS[roi.side],
        segmented_property_category=_concept(ANATOMICAL_STRUCTURE),
        segmented_property_type=_concept(HEAD_OF_FEMUR),
        algorithm_type=algorithm_type,
        algorithm_identification=algorithm,
        display_color=hd.color.CIELabColor.from_rgb(*_DISPLAY_RGB[roi.side]),
    )
    if copied_algorithm:
        desc.SegmentationAlgorithmIdentificationSequence = copy.deepcopy(copied_algorithm)
        desc.SegmentAlgorithmName = _lo(str(copied_algorithm[0].get("AlgorithmName", "")))
    # highdicom has no parameter for laterality: it qualifies the property type.
    desc.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
        _concept(LATERALITY[roi.side])
    ]
    desc.SegmentDescription = _lo(f"ROI used for scoring, {detail}")
    return desc


#: Type 2 patient and study attributes highdicom copies from the first source image.
_TYPE2_KEYWORDS: Final = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


def complete_headers(datasets: Sequence[Dataset]) -> list[Dataset]:
    """The source headers, with missing Type 2 patient/study attributes present but empty.

    Type 2 means "present, possibly empty"; some senders leave them out, and highdicom
    reads them from the first source image. A header that lacks one is copied first,
    so the caller's (and the LoadedSeries') datasets are never changed.
    """
    out = []
    for ds in datasets:
        missing = [k for k in _TYPE2_KEYWORDS if k not in ds]
        if missing:
            ds = copy.deepcopy(ds)
            for keyword in missing:
                setattr(ds, keyword, "")
        out.append(ds)
    return out


def _mask_array(roi: HipROI, series: LoadedSeries) -> npt.NDArray[np.bool_]:
    """The ROI as a (slice, row, column) bool array, checked against the series grid."""
    image, mask = series.image, roi.mask
    same = (
        mask.GetSize() == image.GetSize()
        and np.allclose(mask.GetSpacing(), image.GetSpacing(), rtol=1e-6, atol=1e-6)
        and np.allclose(mask.GetOrigin(), image.GetOrigin(), rtol=0, atol=1e-4)
        and np.allclose(mask.GetDirection(), image.GetDirection(), rtol=0, atol=1e-6)
    )
    if not same:
        raise OutputError(
            f"{SEGMENT_LABELS[roi.side]}: the ROI mask is not on the grid of series "
            f"{series.series_instance_uid}"
        )
    return np.asarray(sitk.GetArrayFromImage(mask)) > 0


def build_segmentation(
    series: LoadedSeries,
    rois: Mapping[Side, HipROI],
    device: OutputDevice,
    *,
    series_number: int,
    instance_number: int = 1,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    source_segments: Mapping[Side, Dataset] | None = None,
    content_datetime: datetime | None = None,
) -> hd.seg.Segmentation:
    """Build the BINARY DICOM-SEG of the ROIs a series was scored on.

    Parameters
    ----------
    series
        The scored series; its header-only ``datasets`` are the source images.
    rois
        ROI per side, masks on the grid of ``series.image``.
    device
        The model that scored the series (:meth:`OutputDevice.from_manifest`).
    series_number, instance_number
        Series Number and Instance Number of the SEG.
    series_instance_uid, sop_instance_uid
        UIDs of the SEG (new random UIDs when omitted; pass derived ones for
        idempotent re-runs).
    source_segments
        For ROIs taken from a received SEG, that segment's item of the received
        Segment Sequence: its algorithm type and identification are kept.
    content_datetime
        Creation, content and series date/time (:func:`stamp_datetime`); the wall
        clock when omitted.

    Returns
    -------
    highdicom.seg.Segmentation
        The SEG: one segment per side present, frames only where a mask is non-empty.

    Raises
    ------
    onfh_dlr.errors.OutputError
        No ROI, a mask off the series grid, or a source layout highdicom cannot
        reference (several multi-frame instances).
    """
    sides = [side for side in _SIDE_ORDER if side in rois]
    if not sides:
        raise OutputError(f"series {series.series_instance_uid}: no ROI to write")
    masks = [_mask_array(rois[side], series) for side in sides]
    received = source_segments or {}
    descriptions = [
        _segment_description(number, rois[side], device, received.get(side))
        for number, side in enumerate(sides, 1)
    ]
    source_images, further, pixels = _frames(series, masks)

    content_description = "Femoral-head ROIs used for DLR early-ONFH scoring"
    if device.not_for_clinical_use:
        content_description = f"{NOT_FOR_CLINICAL_USE}: {content_description}"
    seg = hd.seg.Segmentation(
        source_images=source_images,
        further_source_images=further or None,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_instance_uid or generate_uid(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or generate_uid(),
        instance_number=instance_number,
        manufacturer=device.manufacturer,
        manufacturer_model_name=_lo(device.name),
        software_versions=_lo(device.version),
        # highdicom requires a serial number; a model has none but its Device UID.
        device_serial_number=_lo(device.device_uid),
        omit_empty_frames=True,
        content_label="FEMORAL_HEADS",
        content_description=_lo(content_description),
        series_description=device.series_description("Femoral-head ROIs (DLR)"),
        contributing_equipment=[contributing_equipment(device)],
    )
    # highdicom draws a random Dimension Organization UID; derive it from the SOP
    # Instance UID so that the same UIDs and time give the same object.
    dimension_uid = generate_uid(entropy_srcs=[str(seg.SOPInstanceUID), "dimension-organization"])
    for item in seg.get("DimensionOrganizationSequence", []):
        item.DimensionOrganizationUID = dimension_uid
    for item in seg.get("DimensionIndexSequence", []):
        item.DimensionOrganizationUID = dimension_uid
    if content_datetime is not None:
        stamp_datetime(seg, content_datetime)
    return seg


def _frames(
    series: LoadedSeries, masks: list[npt.NDArray[np.bool_]]
) -> tuple[list[Dataset], list[Dataset], npt.NDArray[np.bool_]]:
    """Source images, further (empty) source images and the stacked pixel array."""
    stacked = np.stack(masks, axis=-1)  # (slice, row, column, segment)
    single_frame = all(number is None for number in series.frame_numbers)
    if single_frame:
        # One dataset per slice, in slice order. Only occupied slices become source
        # frames (omit_empty_frames would drop the others anyway); the rest are still
        # referenced as further source images so the SEG names the whole series, and
        # highdicom's per-pixel checks skip the empty slices.
        occupied = [k for k in range(stacked.shape[0]) if stacked[k].any()]
        if not occupied:
            occupied = list(range(stacked.shape[0]))
        empty = sorted(set(range(stacked.shape[0])) - set(occupied))
        datasets = complete_headers(series.datasets)
        return (
            [datasets[k] for k in occupied],
            [datasets[k] for k in empty],
            stacked[occupied],
        )
    if len(series.datasets) != 1 or any(number is None for number in series.frame_numbers):
        raise OutputError(
            f"series {series.series_instance_uid}: a SEG can reference one multi-frame "
            "instance or single-frame instances, not this mix"
        )
    # One multi-frame instance: highdicom maps pixel_array[i] to frame i + 1, so the
    # slices go back into frame order.
    frames = [number for number in series.frame_numbers if number is not None]
    n_frames = int(series.datasets[0].get("NumberOfFrames", len(frames)))
    pixels = np.zeros((n_frames, *stacked.shape[1:]), dtype=bool)
    for k, number in enumerate(frames):
        pixels[number - 1] = stacked[k]
    return complete_headers(series.datasets[:1]), [], pixels


def segment_numbers_by_side(seg: Dataset) -> dict[Side, int]:
    """Segment number of each side's femoral head in a SEG written by this module.

    Sides are recognised by the exact :data:`SEGMENT_LABELS`; a label that appears
    twice is an error (this is a check on our own output, not a general reader).

    Raises
    ------
    onfh_dlr.errors.OutputError
        A label appears more than once.
    """
    out: dict[Side, int] = {}
    by_label = {label: side for side, label in SEGMENT_LABELS.items()}
    for item in seg.get("SegmentSequence", []):
        side = by_label.get(str(item.get("SegmentLabel", "")))
        if side is None:
            continue
        if side in out:
            raise OutputError(
                f"SEG {seg.get('SOPInstanceUID')}: two segments {item.SegmentLabel!r}"
            )
        out[side] = int(item.SegmentNumber)
    return out
