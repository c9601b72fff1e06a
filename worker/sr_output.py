"""The Comprehensive 3D SR (TID 1500 Measurement Report) of a scored series.

Content tree::

    Imaging Measurement Report (TID 1500)
      language, observer context = the model as a device (TID 1004: Device UID,
      name, manufacturer, model name), procedure reported = Imaging procedure
      Imaging Measurements
        per femoral head, two Measurement Groups with one Tracking Identifier
        ("Left femoral head") and one Tracking Unique Identifier:
        Volumetric group (TID 1411)
          Referenced Segment -> the SEG segment of that side (+ source series)
          Finding = Head of femur; Finding Site = Head of femur, laterality
          Algorithm Identification (TID 4019): bundle name, version, threshold
          Score (UCUM "{log-odds}"), Probability (UCUM "%"), Volume (ml)
          Necrosis = Present | Absent   (the model's call at the bundle threshold)
          the model's inputs: each selected feature of the deployed model, unscaled,
          named with its IBSI code or PyRadiomics name, the image type as measurement
          method, its UCUM unit (:mod:`worker.feature_codes`)
        Planar group (TID 1410), when the ROIs are given (written before the
        volumetric group, so OHIF labels the outline with the call, Area, Score,
        Probability and Volume before the input features)
          Image Region = closed POLYLINE (SCOORD) of the ROI's outline on the MR
          slice where the ROI is largest, SELECTED FROM that image
          Finding, Finding Site as above
          the call: the probability in percent, named by a local code that says the
          side and the call ("R: early ONFH suspected, p")
          Area (mm2) of the ROI on that slice
        A hip that could not be analysed instead gets one group (TID 1501) with the
        same Tracking Identifier, Finding and Finding Site, Necrosis = Indeterminate
        and a TEXT Comment "could not analyse: <reason>"; no score, no ROI reference
        (there is no ROI: the report then needs no SEG).
      Qualitative Evaluations: TEXT comments (not-for-clinical-use warning, the call
      per hip with probability and threshold, intended use)

Why the planar group: viewers draw what has spatial coordinates on an image. OHIF's SR
loader merges groups by Tracking Unique Identifier and needs a SCOORD in the merged
group; a TID 1500 group that only references a SEG segment leaves its viewport black
(issue 14, OHIF issue 3390). With the planar group OHIF jumps to the slice and draws
each hip's outline with the merged group's values.

Every CONTAINER is SEPARATE (highdicom writes CONTINUOUS): renderers such as DCMTK's
``dsr2html`` then print each item as its own line with its concept name, where a
CONTINUOUS container runs the values together as one unlabelled sentence.

Codes, and why
    * Score: SCT 246262008 *Score*, the model's log-odds, UCUM ``{log-odds}``: a UCUM
      annotation, which *is* the unit 1 (dimensionless) with a name. Probability: DCM
      122157 *Probability*, in percent, UCUM "%" (the value is 100 p, so value and unit
      agree). Both dimensionless, so UCUM "1" would be correct too; they are not "1"
      because OHIF prints a value's unit *code* verbatim after it ("Probability: 0.84
      1"), which reads as a number followed by a stray 1. :func:`read_report` reads
      either unit ("1" in SRs written before) back as a probability in 0..1. Volume:
      SCT 118565006 *Volume*, UCUM "ml".
    * The call: concept SCT 6574001 *Necrosis* (the code the project already uses for
      necrotic lesions, CID 7151), qualified by the group's finding site (head of femur,
      left/right), valued SCT 52101004 *Present* / SCT 272519000 *Absent*. SNOMED CT
      has disorder concepts for osteonecrosis of the femoral head, but none is in
      DICOM's code tables (pydicom's dictionary) to check the code against, so the
      finding is composed from codes that are.
    * Area: SCT 42798000 *Area*, UCUM "mm2".
    * The call where viewers show text: OHIF 3.13 labels a planar group's outline only
      with ``<concept meaning>: <value> <unit code>`` of its first five NUM items and
      the finding site's code meaning; qualitative evaluations, laterality, TEXT
      comments and the Tracking Identifier are not drawn. So the planar group's first
      NUM is the probability in percent (UCUM "%"), named by one of four fixed codes
      of the local scheme ``99ONFHDLR`` (``L-POS``, ``L-NEG``, ``R-POS``, ``R-NEG``),
      whose meaning is the side and the call, e.g. *R: early ONFH suspected, p*; OHIF
      draws "R: early ONFH suspected, p: 84.00 %". TID 1410's measurement concept is
      an extensible context group, and the coded call stays Necrosis = Present/Absent
      in the volumetric group. The text is short because OHIF places the text box at
      the right of the outline, vertically centred, and does not keep it inside the
      viewport (its ``DICOMSRDisplayTool`` calls cornerstone's
      ``getTextBoxCoordsCanvas`` without the element, which disables the clamping);
      the left hip is on the image's right, so a long first line ran off the edge.
    * Qualitative Evaluations container: UMLS C0034375 (TID 1500 row 11).
    * Procedure reported: SCT 363679005 *Imaging procedure* (CID 100).
    * Contributing Equipment: DCM 109102 *Processing Equipment* with the Device UID
      (:func:`worker.seg_output.contributing_equipment`).

The report is COMPLETE and UNVERIFIED (no person has verified it) and FINAL: the
software will not amend it; a radiologist's verification would be a new document.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
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
from skimage.measure import approximate_polygon, find_contours

from model_bundle.imaging import HipROI, LoadedSeries, Side
from model_bundle.serving import HipPrediction
from onfh_dlr.errors import OutputError
from worker.feature_codes import feature_coding, feature_name
from worker.seg_output import (
    HEAD_OF_FEMUR,
    LATERALITY,
    NOT_FOR_CLINICAL_USE,
    SEGMENT_LABELS,
    OutputDevice,
    complete_headers,
    contributing_equipment,
    plain_text,
    segment_numbers_by_side,
    stamp_datetime,
)

__all__ = [
    "ABSENT",
    "AREA",
    "INDETERMINATE",
    "LOG_ODDS",
    "NECROSIS",
    "NOT_ANALYSED_PREFIX",
    "PERCENT",
    "PRESENT",
    "PROBABILITY",
    "QUALITATIVE_EVALUATIONS",
    "SCORE",
    "VOLUME",
    "HipOutline",
    "ReportedHip",
    "build_report",
    "call_concept",
    "largest_slice_outline",
    "not_analysed_text",
    "read_report",
    "roi_volume_ml",
]

SCORE: Final = CodedConcept("246262008", "SCT", "Score")
PROBABILITY: Final = CodedConcept("122157", "DCM", "Probability")
VOLUME: Final = CodedConcept("118565006", "SCT", "Volume")
NO_UNITS: Final = CodedConcept("1", "UCUM", "no units")
#: The score's unit: UCUM's unity with an annotation that names it (see the module doc).
LOG_ODDS: Final = CodedConcept("{log-odds}", "UCUM", "log-odds")
MILLILITRE: Final = CodedConcept("ml", "UCUM", "milliliter")
AREA: Final = CodedConcept("42798000", "SCT", "Area")
SQUARE_MILLIMETRE: Final = CodedConcept("mm2", "UCUM", "square millimeter")
PERCENT: Final = CodedConcept("%", "UCUM", "percent")
#: Local coding scheme of the call as a viewer-readable measurement name (see module doc).
LOCAL_SCHEME: Final = "99ONFHDLR"
NECROSIS: Final = CodedConcept("6574001", "SCT", "Necrosis")
PRESENT: Final = CodedConcept("52101004", "SCT", "Present")
ABSENT: Final = CodedConcept("272519000", "SCT", "Absent")
INDETERMINATE: Final = CodedConcept("82334004", "SCT", "Indeterminate")
#: How a hip that could not be analysed is described (its group's Comment, the card).
NOT_ANALYSED_PREFIX: Final = "could not analyse"
QUALITATIVE_EVALUATIONS: Final = CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
COMMENT: Final = CodedConcept("121106", "DCM", "Comment")
IMAGING_PROCEDURE: Final = CodedConcept("363679005", "SCT", "Imaging procedure")
_SIDE_ORDER: Final[tuple[Side, Side]] = (Side.LEFT, Side.RIGHT)
_UT_MAX: Final = 10_000  # TEXT content items are UT; keep comments short anyway
# Outline simplification, in pixels: well under a pixel, so the drawn outline is the
# mask's, with far fewer points than one per boundary pixel edge.
_OUTLINE_TOLERANCE: Final = 0.3


def roi_volume_ml(roi: HipROI) -> float:
    """Volume of a ROI mask in millilitres (voxel count times voxel volume)."""
    voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(roi.mask)))
    return voxels * math.prod(roi.mask.GetSpacing()) / 1000.0


@dataclass(frozen=True)
class HipOutline:
    """A hip ROI's outline on the source slice where the ROI is largest.

    Attributes
    ----------
    side
        The hip.
    sop_class_uid, sop_instance_uid, frame_number
        The MR image (and frame, for a multi-frame instance) the outline lies on.
    points
        ``(n, 2)`` float array of (column, row) image coordinates, DICOM SCOORD
        convention (the top-left corner of the top-left pixel is (0, 0)); closed: the
        last point equals the first.
    area_mm2
        The ROI's area on that slice (pixel count times pixel area).
    """

    side: Side
    sop_class_uid: str
    sop_instance_uid: str
    frame_number: int | None
    points: npt.NDArray[np.float64]
    area_mm2: float


def largest_slice_outline(roi: HipROI, series: LoadedSeries) -> HipOutline:
    """The outline of ``roi`` on the slice of ``series`` where it has the most pixels.

    Raises
    ------
    onfh_dlr.errors.OutputError
        The mask is empty or not on the series' slices.
    """
    mask = np.asarray(sitk.GetArrayViewFromImage(roi.mask)) > 0  # (slice, row, column)
    if mask.shape[0] != len(series.sop_instance_uids):
        raise OutputError(f"{SEGMENT_LABELS[roi.side]}: the ROI is not on the series' slices")
    areas = mask.sum(axis=(1, 2))
    index = int(np.argmax(areas))
    if areas[index] == 0:
        raise OutputError(f"{SEGMENT_LABELS[roi.side]}: the ROI is empty")
    # Padding closes outlines that touch the image border; the largest connected
    # piece's outline is the one drawn (a femoral head is one piece).
    plane = np.pad(mask[index], 1).astype(np.float64)
    # scikit-image's measure functions carry no annotations.
    pieces: list[npt.NDArray[np.float64]] = find_contours(plane, 0.5)  # type: ignore[no-untyped-call]
    outline: npt.NDArray[np.float64] = approximate_polygon(  # type: ignore[no-untyped-call]
        max(pieces, key=len), tolerance=_OUTLINE_TOLERANCE
    )
    # find_contours gives (row, column) of pixel centres, shifted by the padding;
    # SCOORD wants (column, row) with pixel centres at +0.5.
    points = np.stack([outline[:, 1] - 0.5, outline[:, 0] - 0.5], axis=1)
    if not np.array_equal(points[0], points[-1]):
        points = np.vstack([points, points[:1]])
    sop_instance_uid = series.sop_instance_uids[index]
    source = next(ds for ds in series.datasets if ds.SOPInstanceUID == sop_instance_uid)
    column_mm, row_mm = roi.mask.GetSpacing()[:2]
    return HipOutline(
        side=roi.side,
        sop_class_uid=str(source.SOPClassUID),
        sop_instance_uid=sop_instance_uid,
        frame_number=series.frame_numbers[index],
        points=points,
        area_mm2=float(areas[index]) * column_mm * row_mm,
    )


def _concept(code: tuple[str, str, str]) -> CodedConcept:
    return CodedConcept(*code)


def _call_text(side: Side, prediction: HipPrediction) -> str:
    verdict = "suspected" if prediction.call else "not suspected"
    relation = ">=" if prediction.call else "<"
    return (
        f"{SEGMENT_LABELS[side]}: early ONFH {verdict} (model {prediction.deployed_model}, "
        f"probability {prediction.probability:.3f} {relation} threshold "
        f"{prediction.threshold:.3f}; ROI {prediction.roi_source})"
    )


def not_analysed_text(side: Side, reason: str) -> str:
    """One line saying that ``side`` could not be analysed, and why."""
    return f"{SEGMENT_LABELS[side]}: {NOT_ANALYSED_PREFIX}: {reason}"


def _not_analysed_group(
    side: Side, reason: str, algorithm: hd.sr.AlgorithmIdentification, tracking_uid: str
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """The TID 1501 group of a hip that could not be analysed: the reason, no score."""
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(side, tracking_uid),
        finding_type=_concept(HEAD_OF_FEMUR),
        finding_sites=_finding_sites(side),
        algorithm_id=algorithm,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(name=NECROSIS, value=INDETERMINATE)],
    )
    group[0].ContentSequence.append(
        hd.sr.TextContentItem(
            name=COMMENT,
            value=plain_text(f"{NOT_ANALYSED_PREFIX}: {reason}")[:_UT_MAX],
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
    )
    return group


def _referenced_segment(seg: Dataset, segment_number: int) -> hd.sr.ReferencedSegment:
    """The segment with its source images, or its source series when highdicom cannot.

    highdicom 0.28's ``from_segmentation`` looks for the segment of each frame in the
    per-frame groups only; a one-segment SEG keeps it in the shared groups.
    """
    shared = seg.get("SharedFunctionalGroupsSequence", [Dataset()])[0]
    if "SegmentIdentificationSequence" not in shared:
        return hd.sr.ReferencedSegment.from_segmentation(seg, segment_number)
    return hd.sr.ReferencedSegment(
        sop_class_uid=str(seg.SOPClassUID),
        sop_instance_uid=str(seg.SOPInstanceUID),
        segment_number=segment_number,
        source_series=hd.sr.SourceSeriesForSegmentation(
            str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID)
        ),
    )


def _group(
    side: Side,
    prediction: HipPrediction,
    seg: Dataset,
    segment_number: int,
    algorithm: hd.sr.AlgorithmIdentification,
    tracking_uid: str,
    volume_ml: float | None,
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    measurements = [
        hd.sr.Measurement(
            name=SCORE, value=prediction.score, unit=LOG_ODDS, algorithm_id=algorithm
        ),
        hd.sr.Measurement(
            name=PROBABILITY,
            value=100.0 * prediction.probability,
            unit=PERCENT,
            algorithm_id=algorithm,
        ),
    ]
    if volume_ml is not None:
        measurements.append(hd.sr.Measurement(name=VOLUME, value=volume_ml, unit=MILLILITRE))
    for feature, value in prediction.inputs.items():
        coding = feature_coding(feature)
        measurements.append(
            hd.sr.Measurement(
                name=coding.name,
                value=value,
                unit=coding.unit,
                method=coding.method,
                algorithm_id=algorithm,
            )
        )
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(side, tracking_uid),
        referenced_segment=_referenced_segment(seg, segment_number),
        finding_type=_concept(HEAD_OF_FEMUR),
        finding_sites=_finding_sites(side),
        algorithm_id=algorithm,
        measurements=measurements,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(name=NECROSIS, value=PRESENT if prediction.call else ABSENT)
        ],
    )


def _tracking(side: Side, tracking_uid: str) -> hd.sr.TrackingIdentifier:
    return hd.sr.TrackingIdentifier(uid=tracking_uid, identifier=SEGMENT_LABELS[side])


def _finding_sites(side: Side) -> list[hd.sr.FindingSite]:
    return [
        hd.sr.FindingSite(
            anatomic_location=_concept(HEAD_OF_FEMUR), laterality=_concept(LATERALITY[side])
        )
    ]


def call_concept(side: Side, call: bool) -> CodedConcept:
    """The local code naming the planar group's call measurement, e.g.
    "R: early ONFH suspected, p" (see the module doc: short, so OHIF's text fits)."""
    verdict = "early ONFH suspected" if call else "early ONFH not suspected"
    letter = side.value[0].upper()
    return CodedConcept(
        f"{letter}-{'POS' if call else 'NEG'}", LOCAL_SCHEME, f"{letter}: {verdict}, p"
    )


def _call_measurement(side: Side, prediction: HipPrediction) -> hd.sr.Measurement:
    # OHIF labels an outline with "<concept meaning>: <value> <unit code>"; percent reads
    # as "...: 84.00 %" where the unit "1" would print a bare "1".
    return hd.sr.Measurement(
        name=call_concept(side, bool(prediction.call)),
        value=round(100.0 * prediction.probability, 6),
        unit=PERCENT,
    )


def _planar_group(
    outline: HipOutline, tracking_uid: str, prediction: HipPrediction
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    frames = None if outline.frame_number is None else [outline.frame_number]
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(outline.side, tracking_uid),
        referenced_region=hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=outline.points,
            source_image=hd.sr.SourceImageForRegion(
                referenced_sop_class_uid=outline.sop_class_uid,
                referenced_sop_instance_uid=outline.sop_instance_uid,
                referenced_frame_numbers=frames,
            ),
        ),
        finding_type=_concept(HEAD_OF_FEMUR),
        finding_sites=_finding_sites(outline.side),
        measurements=[
            _call_measurement(outline.side, prediction),
            hd.sr.Measurement(name=AREA, value=outline.area_mm2, unit=SQUARE_MILLIMETRE),
        ],
    )


def _separate(items: Sequence[Dataset]) -> None:
    """Make every CONTAINER under ``items`` SEPARATE (see the module docstring)."""
    for item in items:
        if item.get("ValueType") == "CONTAINER":
            item.ContinuityOfContent = "SEPARATE"
        if "ContentSequence" in item:
            _separate(item.ContentSequence)


def _comments(
    device: OutputDevice,
    predictions: Mapping[Side, HipPrediction],
    not_analysed: Mapping[Side, str],
    sides: list[Side],
    notes: Sequence[str] = (),
) -> hd.sr.ContainerContentItem:
    texts = []
    if device.not_for_clinical_use:
        texts.append(f"{NOT_FOR_CLINICAL_USE}: {device.warning}")
    texts.extend(
        _call_text(side, predictions[side])
        if side in predictions
        else not_analysed_text(side, not_analysed[side])
        for side in sides
    )
    texts.extend(notes)
    texts.append(
        f"Automated result of {device.name} {device.version}, not verified by a person; "
        "the radiologist makes the diagnosis."
    )
    if device.intended_use:
        texts.append(f"Intended use: {device.intended_use}")
    container = hd.sr.ContainerContentItem(
        name=QUALITATIVE_EVALUATIONS,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    container.ContentSequence = hd.sr.ContentSequence(
        [
            hd.sr.TextContentItem(
                name=COMMENT,
                value=plain_text(text)[:_UT_MAX],
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
            for text in texts
        ]
    )
    return container


def build_report(
    series: LoadedSeries,
    seg: hd.seg.Segmentation | None,
    predictions: Mapping[Side, HipPrediction],
    device: OutputDevice,
    *,
    series_number: int,
    instance_number: int = 1,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    roi_volumes_ml: Mapping[Side, float] | None = None,
    outlines: Mapping[Side, HipOutline] | None = None,
    previous_versions: Sequence[Dataset] = (),
    content_datetime: datetime | None = None,
    not_analysed: Mapping[Side, str] | None = None,
    notes: Sequence[str] = (),
) -> hd.sr.Comprehensive3DSR:
    """Build the TID 1500 measurement report of one scored series.

    Parameters
    ----------
    series
        The scored series (evidence, patient and study).
    seg
        The SEG of the ROIs (:func:`worker.seg_output.build_segmentation`); each
        predicted side must have its segment there. ``None`` only when no side was
        predicted (nothing to reference).
    predictions
        The model's result per side.
    device
        The model (:meth:`worker.seg_output.OutputDevice.from_manifest`).
    series_number, instance_number
        Series Number and Instance Number of the SR.
    series_instance_uid, sop_instance_uid
        UIDs of the SR (random when omitted). Tracking UIDs derive from the SOP
        Instance UID, so a fixed SOP Instance UID gives a fixed document.
    roi_volumes_ml
        ROI volume per side (:func:`roi_volume_ml`), reported when given.
    outlines
        ROI outline per side (:func:`largest_slice_outline`): each gives the side's
        planar group, which viewers draw. Without it the report has volumetric groups
        only, which OHIF cannot display.
    previous_versions
        Earlier reports on the same series that this one supersedes (headers
        suffice): listed in the Predecessor Documents Sequence.
    content_datetime
        Creation, content and series date/time; the wall clock when omitted.
    not_analysed
        Per side that could not be analysed, the reason: that side's group says
        "could not analyse" with the reason and carries no score.
    notes
        What the reader should know beside the calls (e.g. a left/right check that
        failed): one comment each, after the calls.

    Returns
    -------
    highdicom.sr.Comprehensive3DSR
        The report, in the study of ``series``, in a new series.

    Raises
    ------
    onfh_dlr.errors.OutputError
        No prediction, or a predicted side without its segment in ``seg``.
    """
    failed = dict(not_analysed or {})
    both = [side for side in failed if side in predictions]
    if both:
        raise OutputError(f"{SEGMENT_LABELS[both[0]]} is both predicted and not analysed")
    sides = [side for side in _SIDE_ORDER if side in predictions or side in failed]
    if not sides:
        raise OutputError(f"series {series.series_instance_uid}: no prediction to report")
    numbers: dict[Side, int] = {}
    if predictions:
        if seg is None:
            raise OutputError("predicted hips need the SEG of their ROIs")
        numbers = segment_numbers_by_side(seg)
        missing = [SEGMENT_LABELS[s] for s in predictions if s not in numbers]
        if missing:
            raise OutputError(f"SEG {seg.SOPInstanceUID} has no segment {', '.join(missing)}")
    if seg is not None and str(seg.StudyInstanceUID) != series.study_instance_uid:
        raise OutputError(f"SEG {seg.SOPInstanceUID} is not in study {series.study_instance_uid}")

    sop_instance_uid = sop_instance_uid or generate_uid()
    algorithm = hd.sr.AlgorithmIdentification(
        name=plain_text(device.name),
        version=plain_text(device.version),
        parameters=[
            f"deployed model: {device.deployed_model}",
            f"threshold: {device.threshold!r}",
        ],
        manufacturer=device.manufacturer,
    )
    volumes = roi_volumes_ml or {}
    outlines = outlines or {}
    groups: list[
        hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
        | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
        | hd.sr.MeasurementsAndQualitativeEvaluations
    ] = []
    for side in sides:
        # One tracking UID per hip and document: fixed by the document's UID.
        tracking_uid = generate_uid(entropy_srcs=[sop_instance_uid, "tracking", side])
        if side in failed:
            groups.append(_not_analysed_group(side, failed[side], algorithm, tracking_uid))
            continue
        assert seg is not None  # checked above: predictions need the SEG
        # The planar group first: OHIF labels the drawn outline with the first five
        # values of the merged groups; the call, Area, Score, Probability and Volume
        # must be those, not the model's input features.
        if side in outlines:
            if outlines[side].side != side:
                raise OutputError(f"the outline given for {SEGMENT_LABELS[side]} is another's")
            groups.append(_planar_group(outlines[side], tracking_uid, predictions[side]))
        groups.append(
            _group(
                side,
                predictions[side],
                seg,
                numbers[side],
                algorithm,
                tracking_uid,
                volumes.get(side),
            )
        )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device.device_uid,
            name=plain_text(device.name),
            manufacturer_name=device.manufacturer,
            model_name=plain_text(f"{device.name} {device.version}"),
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=IMAGING_PROCEDURE,
        imaging_measurements=groups,
    )
    report[0].ContentSequence.append(_comments(device, predictions, failed, sides, notes))
    report[0].ContinuityOfContent = "SEPARATE"
    _separate(report[0].ContentSequence)

    sr = hd.sr.Comprehensive3DSR(
        # The source images first: patient and study are copied from evidence[0].
        evidence=[*complete_headers(series.datasets), *([seg] if seg is not None else [])],
        content=report[0],
        series_instance_uid=series_instance_uid or generate_uid(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer=device.manufacturer,
        is_complete=True,
        is_final=True,
        is_verified=False,
        series_description=device.series_description("DLR early-ONFH report"),
        manufacturer_model_name=plain_text(device.name)[:64],
        software_versions=plain_text(device.version)[:64],
        device_serial_number=plain_text(device.device_uid)[:64],
        contributing_equipment=[contributing_equipment(device)],
        previous_versions=list(previous_versions) or None,
    )
    if content_datetime is not None:
        stamp_datetime(sr, content_datetime)
    return sr


@dataclass(frozen=True)
class ReportedHip:
    """What an SR written by :func:`build_report` says about one hip.

    A hip that could not be analysed has ``not_analysed`` (the reason) and no
    segment, score, probability, volume or call (``None``).
    """

    side: Side
    tracking_uid: str
    segmentation_uid: str | None
    segment_number: int | None
    score: float | None
    probability: float | None
    volume_ml: float | None
    necrosis_present: bool | None
    outline_image_uid: str | None = None  # the MR image of the planar group's outline
    area_mm2: float | None = None
    not_analysed: str | None = None
    inputs: Mapping[str, float] = field(default_factory=dict)  # the model's, by feature name


def read_report(sr: Dataset, *, copy: bool = True) -> dict[Side, ReportedHip]:
    """Per-hip content of an SR written by :func:`build_report` (e.g. read back).

    ``copy=False`` lets highdicom convert the content items of ``sr`` in place instead of
    deep-copying them first (about 0.1 s of 0.7 s for a two-hip report): for a dataset
    read only to be checked.

    Raises
    ------
    onfh_dlr.errors.OutputError
        The SR is not such a report, or a group lacks an expected item.
    """
    try:
        # The document's top level is the root CONTAINER item; only its content-item
        # attributes are copied, not the whole document.
        root = Dataset()
        for keyword in (
            "ValueType",
            "ConceptNameCodeSequence",
            "ContinuityOfContent",
            "ContentTemplateSequence",
            "ContentSequence",
        ):
            setattr(root, keyword, sr[keyword].value)
        report = hd.sr.MeasurementReport.from_sequence([root], copy=copy)
    except (ValueError, AttributeError, TypeError, KeyError) as exc:
        raise OutputError(f"SR {sr.get('SOPInstanceUID')}: not a TID 1500 report ({exc})") from exc
    out: dict[Side, ReportedHip] = {}
    for group in report.get_volumetric_roi_measurement_groups():
        side = _side_of(group)
        if side in out:
            raise OutputError(f"SR {sr.SOPInstanceUID}: two groups for {SEGMENT_LABELS[side]}")
        ref = group.referenced_segment
        if ref is None:
            raise OutputError(f"SR {sr.SOPInstanceUID}: group {side} references no segment")
        item = ref[0]
        sop = item.ReferencedSOPSequence[0]
        evaluations = group.get_qualitative_evaluations(name=NECROSIS)
        if len(evaluations) != 1:
            raise OutputError(f"SR {sr.SOPInstanceUID}: group {side} has no single call")
        value = evaluations[0].value
        # highdicom builds every measurement's objects on each call: read them once.
        measurements = group.get_measurements()
        out[side] = ReportedHip(
            side=side,
            tracking_uid=str(group.tracking_uid),
            segmentation_uid=str(sop.ReferencedSOPInstanceUID),
            segment_number=int(sop.ReferencedSegmentNumber),
            score=_required_value(measurements, SCORE, side),
            probability=_probability(measurements, side),
            volume_ml=_one_value(measurements, VOLUME, side, required=False),
            necrosis_present=value == PRESENT,
            inputs=_inputs(measurements),
        )
    for plain in report.get_image_measurement_groups():
        side = _side_of(plain)
        if side in out:
            raise OutputError(f"SR {sr.SOPInstanceUID}: two groups for {SEGMENT_LABELS[side]}")
        out[side] = _not_analysed_hip(sr, plain, side)
    for planar in report.get_planar_roi_measurement_groups():
        side = _side_of(planar)
        hip = out.get(side)
        if hip is None or str(planar.tracking_uid) != hip.tracking_uid:
            raise OutputError(
                f"SR {sr.SOPInstanceUID}: the outline of {SEGMENT_LABELS[side]} is not tracked "
                "with its volumetric group"
            )
        region = planar.roi
        if not isinstance(region, hd.sr.ImageRegion):
            raise OutputError(f"SR {sr.SOPInstanceUID}: group {side} has no image region")
        source = region.ContentSequence[0].ReferencedSOPSequence[0]
        out[side] = replace(
            hip,
            outline_image_uid=str(source.ReferencedSOPInstanceUID),
            area_mm2=_one_value(planar.get_measurements(), AREA, side),
        )
    return out


_Group = (
    hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
    | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    | hd.sr.MeasurementsAndQualitativeEvaluations
)


def _inputs(measurements: Sequence[hd.sr.Measurement]) -> dict[str, float]:
    """The model-input features among a group's measurements, by the bundle's names."""
    out: dict[str, float] = {}
    for measurement in measurements:
        name = feature_name(measurement.name, measurement.method)
        if name is not None:
            out[name] = float(measurement.value)
    return out


def _not_analysed_hip(
    sr: Dataset, group: hd.sr.MeasurementsAndQualitativeEvaluations, side: Side
) -> ReportedHip:
    evaluations = group.get_qualitative_evaluations(name=NECROSIS)
    if len(evaluations) != 1 or evaluations[0].value != INDETERMINATE:
        raise OutputError(f"SR {sr.SOPInstanceUID}: group {side} without ROI is not indeterminate")
    prefix = f"{NOT_ANALYSED_PREFIX}: "
    reasons = [
        str(item.TextValue).removeprefix(prefix)
        for item in group[0].ContentSequence
        if item.get("ValueType") == "TEXT"
        and item.ConceptNameCodeSequence[0].CodeValue == COMMENT.value
        and str(item.TextValue).startswith(prefix)
    ]
    if len(reasons) != 1:
        raise OutputError(f"SR {sr.SOPInstanceUID}: group {side} says no single reason")
    return ReportedHip(
        side=side,
        tracking_uid=str(group.tracking_uid),
        segmentation_uid=None,
        segment_number=None,
        score=None,
        probability=None,
        volume_ml=None,
        necrosis_present=None,
        not_analysed=reasons[0],
    )


def _side_of(group: _Group) -> Side:
    for site in group.finding_sites:
        if site.value != _concept(HEAD_OF_FEMUR):
            continue
        for side, code in LATERALITY.items():
            if site.laterality == _concept(code):
                return side
    raise OutputError(f"measurement group {group.tracking_identifier!r} has no femoral-head side")


def _one_value(
    measurements: Sequence[hd.sr.Measurement],
    name: CodedConcept,
    side: Side,
    *,
    required: bool = True,
) -> float | None:
    found = [m for m in measurements if m.name == name]
    if not found and not required:
        return None
    if len(found) != 1:
        raise OutputError(f"group {side}: {len(found)} {name.meaning} measurements, expected 1")
    return float(found[0].value)


def _probability(measurements: Sequence[hd.sr.Measurement], side: Side) -> float:
    """The group's probability in 0..1, whether written in percent or (older SRs) "1"."""
    found = [m for m in measurements if m.name == PROBABILITY]
    if len(found) != 1:
        raise OutputError(f"group {side}: {len(found)} Probability measurements, expected 1")
    unit = found[0].unit
    if unit == PERCENT:
        return float(found[0].value) / 100.0
    if unit == NO_UNITS:
        return float(found[0].value)
    raise OutputError(f"group {side}: Probability in {unit.value!r}, expected '%' or '1'")


def _required_value(
    measurements: Sequence[hd.sr.Measurement], name: CodedConcept, side: Side
) -> float:
    value = _one_value(measurements, name, side)
    assert value is not None  # required=True never returns None
    return value
