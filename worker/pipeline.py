"""Score one series offline: ROIs, model, SEG, SR, card, validation. No network, no Celery.

The Celery task and ``onfh-dlr score`` both call :func:`score_series` and then
:func:`write_outputs`; delivery (C-STORE) is the caller's business.

Could not analyse
    When an admitted series cannot be scored for a permanent reason (no femoral head,
    unusable SEG), :func:`not_analysed_series` builds the same kind of SR (each hip's
    group says "could not analyse: <reason>", no score) and a card that says so, and
    no SEG (there is no ROI). The auto-segmenter finds both heads or fails for both
    (``find_femoral_heads`` raises when either is missing), so today a failure drops
    both hips; the SR and card already take a reason per hip for when it becomes
    per hip.

Idempotent UIDs
    With ``uid_seed`` (e.g. the job id), the SEG's and the SR's Series and SOP
    Instance UIDs are derived from the seed and the source Series Instance UID
    (:func:`output_uids`, pydicom's ``generate_uid(entropy_srcs=...)``: a SHA-512 of
    the parts under pydicom's UID root). A redelivered job therefore sends the same
    UIDs again, and the PACS replaces (or ignores) the copy instead of filing a
    second report. Without a seed the UIDs are random.

Failures
    Every error is from :mod:`onfh_dlr.errors` and propagates: a series that cannot
    be loaded (SeriesError), no femoral head found (FemoralHeadNotFoundError), an
    unusable received SEG (SegmentationError), outputs that do not read back as
    intended (OutputValidationError).
"""

from __future__ import annotations

import io
import logging
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final, Literal

import highdicom as hd
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from model_bundle.features import series_rois
from model_bundle.imaging import HipROI, LoadedSeries, Side, load_series
from model_bundle.monitoring import InputKind, OutOfRange, outside_text
from model_bundle.serving import BundleModel, HipPrediction
from onfh_dlr.errors import (
    FemoralHeadNotFoundError,
    NotASegmentationError,
    OutputError,
    OutputValidationError,
)
from onfh_dlr.settings import OutputKind
from worker.result_card import build_result_card
from worker.result_pdf import build_result_pdf, validate_result_pdf
from worker.seg_output import (
    NOT_FOR_CLINICAL_USE,
    SEGMENT_LABELS,
    OutputDevice,
    build_segmentation,
    segment_numbers_by_side,
)
from worker.sr_output import (
    build_report,
    largest_slice_outline,
    read_report,
    roi_volume_ml,
)

__all__ = [
    "DEFAULT_SERIES_NUMBER_BASE",
    "OutputUIDs",
    "ScoredStudy",
    "WrittenOutputs",
    "not_analysed_series",
    "output_uids",
    "score_series",
    "validate_card",
    "validate_outputs",
    "write_outputs",
]

LOGGER = logging.getLogger(__name__)

#: SEG series number = base + 1, SR = base + 2, card = base + 3, the card's PDF = base +
#: 4: high numbers sort derived series after the acquired ones in a viewer.
DEFAULT_SERIES_NUMBER_BASE: Final = 9000


@dataclass(frozen=True)
class OutputUIDs:
    """Series and SOP Instance UIDs of the SEG, SR, card and PDF of one scored series."""

    seg_series: str
    seg_instance: str
    sr_series: str
    sr_instance: str
    card_series: str
    card_instance: str
    pdf_series: str
    pdf_instance: str


def output_uids(uid_seed: str | None, series_instance_uid: str) -> OutputUIDs:
    """UIDs of the outputs: derived from ``uid_seed`` and the source series, or random.

    The same seed and source series always give the same eight UIDs; different seeds
    or series give different ones.
    """
    if uid_seed is None:
        return OutputUIDs(*(generate_uid() for _ in range(8)))

    def derive(kind: str, level: str) -> str:
        return str(generate_uid(entropy_srcs=[uid_seed, series_instance_uid, kind, level]))

    return OutputUIDs(
        seg_series=derive("seg", "series"),
        seg_instance=derive("seg", "instance"),
        sr_series=derive("sr", "series"),
        sr_instance=derive("sr", "instance"),
        card_series=derive("card", "series"),
        card_instance=derive("card", "instance"),
        pdf_series=derive("pdf", "series"),
        pdf_instance=derive("pdf", "instance"),
    )


# eq=False: highdicom datasets compare element by element, which is not identity.
@dataclass(frozen=True, eq=False)
class ScoredStudy:
    """The result of scoring one series, with its validated SEG, SR and card.

    Attributes
    ----------
    study_instance_uid, series_instance_uid, frame_of_reference_uid
        The scored source series.
    predictions
        The model's result per side scored.
    roi_source
        ``"seg"`` when the ROIs came from a received SEG, ``"auto"`` otherwise.
    roi_descriptions
        Where each side's ROI came from.
    seg_dataset, sr_dataset, card_dataset
        The outputs, validated by :func:`validate_outputs` and :func:`validate_card`;
        no SEG when no hip was scored.
    not_analysed
        Per side that could not be analysed, the reason (the SR and card say it).
    pdf_dataset
        The card as Encapsulated PDF (:mod:`worker.result_pdf`), validated.
    notes
        What the SR and the card say beside the calls (e.g. a failed left/right check).
    series, rois
        The loaded source series and the ROIs scored (none when nothing was): shadow
        bundles score the same ROIs (:mod:`worker.shadow`), with no second ROI search.
    validated_bytes
        The encoded SEG, SR and card that the validation read back, by kind:
        :func:`write_outputs` writes these bytes, so the files hold exactly what was
        checked (and nothing is encoded twice).
    """

    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    predictions: Mapping[Side, HipPrediction]
    roi_source: Literal["seg", "auto"]
    roi_descriptions: Mapping[Side, str]
    seg_dataset: hd.seg.Segmentation | None
    sr_dataset: hd.sr.Comprehensive3DSR
    card_dataset: hd.sc.SCImage
    not_analysed: Mapping[Side, str] = field(default_factory=dict)
    pdf_dataset: Dataset | None = None
    notes: tuple[str, ...] = ()
    series: LoadedSeries | None = None
    rois: Mapping[Side, HipROI] = field(default_factory=dict)
    validated_bytes: Mapping[OutputKind, bytes] = field(default_factory=dict)

    @property
    def pdf_uid(self) -> str | None:
        """SOP Instance UID of the card's PDF (``None`` without one)."""
        return None if self.pdf_dataset is None else str(self.pdf_dataset.SOPInstanceUID)

    @property
    def seg_uid(self) -> str | None:
        """SOP Instance UID of the SEG (``None`` without one)."""
        return None if self.seg_dataset is None else str(self.seg_dataset.SOPInstanceUID)

    @property
    def card_uid(self) -> str:
        """SOP Instance UID of the result card."""
        return str(self.card_dataset.SOPInstanceUID)

    @property
    def sr_uid(self) -> str:
        """SOP Instance UID of the SR."""
        return str(self.sr_dataset.SOPInstanceUID)


def score_series(
    series_source: LoadedSeries | str | os.PathLike[str] | Sequence[Dataset],
    model: BundleModel,
    *,
    seg: str | os.PathLike[str] | Dataset | None = None,
    uid_seed: str | None = None,
    series_number_base: int = DEFAULT_SERIES_NUMBER_BASE,
    previous_sr: str | os.PathLike[str] | Dataset | None = None,
    content_time: float | datetime | None = None,
) -> ScoredStudy:
    """Score both hips of one series and build the validated SEG and SR.

    Parameters
    ----------
    series_source
        A loaded series, or what :func:`model_bundle.imaging.series.load_series` reads
        (directory, file, datasets).
    model
        The loaded bundle.
    seg
        A received DICOM-SEG of the series (file or dataset): its femoral-head
        segments are the ROIs and only the sides it holds are scored. ``None``:
        auto-segment both femoral heads.
    uid_seed
        Derive the output UIDs from this (e.g. the job id), see :func:`output_uids`.
    series_number_base
        SEG series number is this + 1, SR series number this + 2.
    previous_sr
        An earlier SR of the same series that this one supersedes (file or dataset):
        referenced as predecessor. An unreadable file is logged and left out.
    content_time
        Date/time stamped on both outputs (epoch seconds or datetime, local time),
        e.g. when the job was created, so that a re-run gives the same objects; the
        wall clock when omitted.

    Returns
    -------
    ScoredStudy

    Raises
    ------
    onfh_dlr.errors.SeriesError
        The series cannot be loaded.
    onfh_dlr.errors.FemoralHeadNotFoundError
        No femoral head found (auto-segmentation), or none in the received SEG.
    onfh_dlr.errors.SegmentationError
        The received SEG cannot be used.
    onfh_dlr.errors.OutputValidationError
        The outputs do not read back as intended.
    """
    series = (
        series_source if isinstance(series_source, LoadedSeries) else load_series(series_source)
    )
    seg_ds = None if seg is None else _read_seg(seg)
    found = series_rois(series, seg_ds)
    if not found.rois:  # no hip to score: the first side's reason fails the job
        raise next(iter(found.failures.values()), FemoralHeadNotFoundError("no femoral head"))
    # One head not found: the other hip is scored, and the SR and the card say of the
    # missing one "could not analyse" with its reason, as for a whole failed study.
    not_analysed = {
        side: f"{type(failure).__name__}: {failure}" for side, failure in found.failures.items()
    }
    for side, reason in not_analysed.items():
        LOGGER.warning("%s hip not analysed: %s", side.word, reason)
    rois = found.rois
    source_segments = {} if seg_ds is None else _source_segments(seg_ds, rois)
    roi_source: Literal["seg", "auto"] = "auto" if seg_ds is None else "seg"

    predictions = model.predict(series, rois)
    # What a reader should know beside the calls, said in the SR, on the card and in the
    # job record: a failed left/right comparison (no refusal: both hips are scored, the
    # reader checks the outlines), and inputs outside what the model was trained on (still
    # scored, but the model's numbers there are an extrapolation).
    notes = (
        *(f"Left/right check: {warning.message}" for warning in found.warnings),
        *input_notes(model.check_acquisition(series), predictions),
    )
    for note in notes:
        LOGGER.warning("%s", note)
    device = OutputDevice.from_manifest(model.bundle.manifest)
    uids = output_uids(uid_seed, series.series_instance_uid)
    when = _content_datetime(content_time)
    predecessors = _predecessors(previous_sr, series, uids.sr_instance)
    seg_out = build_segmentation(
        series,
        rois,
        device,
        series_number=series_number_base + 1,
        series_instance_uid=uids.seg_series,
        sop_instance_uid=uids.seg_instance,
        source_segments=source_segments,
        content_datetime=when,
    )
    sr_out = build_report(
        series,
        seg_out,
        predictions,
        device,
        series_number=series_number_base + 2,
        series_instance_uid=uids.sr_series,
        sop_instance_uid=uids.sr_instance,
        roi_volumes_ml={side: roi_volume_ml(roi) for side, roi in rois.items()},
        outlines={side: largest_slice_outline(roi, series) for side, roi in rois.items()},
        previous_versions=predecessors,
        content_datetime=when,
        not_analysed=not_analysed,
        notes=notes,
    )
    checked = validate_outputs(
        series, rois, predictions, seg_out, sr_out, device, not_analysed=not_analysed
    )
    card = build_result_card(
        series,
        rois,
        predictions,
        device,
        series_number=series_number_base + 3,
        series_instance_uid=uids.card_series,
        sop_instance_uid=uids.card_instance,
        content_datetime=when,
        not_analysed=not_analysed,
        notes=notes,
    )
    checked[OutputKind.CARD] = validate_card(series, card, device)
    pdf = _card_pdf(card, uids, series_number_base)
    return ScoredStudy(
        study_instance_uid=series.study_instance_uid,
        series_instance_uid=series.series_instance_uid,
        frame_of_reference_uid=series.frame_of_reference_uid,
        predictions=predictions,
        roi_source=roi_source,
        roi_descriptions={side: roi.description for side, roi in rois.items()},
        seg_dataset=seg_out,
        sr_dataset=sr_out,
        card_dataset=card,
        pdf_dataset=pdf,
        validated_bytes=checked,
        not_analysed=not_analysed,
        notes=notes,
        series=series,
        rois=rois,
    )


def input_notes(
    acquisition: Sequence[OutOfRange] | None, predictions: Mapping[Side, HipPrediction]
) -> list[str]:
    """The reader's notes on inputs outside the bundle's reference statistics.

    The series' acquisition once for the study, then each hip's features; nothing when
    everything is inside, or when the bundle has no reference (it predates them).
    """
    notes = []
    if acquisition:
        notes.append(f"This series is {outside_text(acquisition)}")
    for side in (Side.RIGHT, Side.LEFT):
        prediction = predictions.get(side)
        if prediction is None:
            continue
        features = [o for o in prediction.out_of_range if o.kind is InputKind.FEATURE]
        if features:
            notes.append(f"{SEGMENT_LABELS[side]}: {outside_text(features)}")
    return notes


def not_analysed_series(
    series_source: LoadedSeries | str | os.PathLike[str] | Sequence[Dataset],
    model: BundleModel,
    reasons: Mapping[Side, str],
    *,
    roi_source: Literal["seg", "auto"] = "auto",
    uid_seed: str | None = None,
    series_number_base: int = DEFAULT_SERIES_NUMBER_BASE,
    previous_sr: str | os.PathLike[str] | Dataset | None = None,
    content_time: float | datetime | None = None,
) -> ScoredStudy:
    """The "could not analyse" SR and card of a series that could not be scored.

    Same UIDs, series numbers and dates as :func:`score_series` would give (a re-run
    replaces the same objects); no SEG, no predictions.

    Parameters
    ----------
    reasons
        Per side, why it could not be analysed (e.g. both sides the same error).
    Other parameters
        As :func:`score_series`.

    Raises
    ------
    onfh_dlr.errors.SeriesError
        The series cannot be loaded (then nothing can be written into its study).
    onfh_dlr.errors.OutputValidationError
        The outputs do not read back as intended.
    """
    if not reasons:
        raise OutputError("no reason given for a series that could not be analysed")
    series = (
        series_source if isinstance(series_source, LoadedSeries) else load_series(series_source)
    )
    device = OutputDevice.from_manifest(model.bundle.manifest)
    uids = output_uids(uid_seed, series.series_instance_uid)
    when = _content_datetime(content_time)
    sr_out = build_report(
        series,
        None,
        {},
        device,
        series_number=series_number_base + 2,
        series_instance_uid=uids.sr_series,
        sop_instance_uid=uids.sr_instance,
        previous_versions=_predecessors(previous_sr, series, uids.sr_instance),
        content_datetime=when,
        not_analysed=reasons,
    )
    card = build_result_card(
        series,
        {},
        {},
        device,
        series_number=series_number_base + 3,
        series_instance_uid=uids.card_series,
        sop_instance_uid=uids.card_instance,
        content_datetime=when,
        not_analysed=reasons,
    )
    sr_bytes = _encode(sr_out)
    try:
        hips = read_report(hd.sr.srread(io.BytesIO(sr_bytes)))
    except (OutputError, ValueError, AttributeError) as exc:
        raise OutputValidationError(f"the not-analysed SR does not read back: {exc}") from exc
    said = {side: hip.not_analysed for side, hip in hips.items()}
    if said != dict(reasons):
        raise OutputValidationError(f"the not-analysed SR says {said}, meant {dict(reasons)}")
    card_bytes = validate_card(series, card, device)
    pdf = _card_pdf(card, uids, series_number_base)
    return ScoredStudy(
        study_instance_uid=series.study_instance_uid,
        series_instance_uid=series.series_instance_uid,
        frame_of_reference_uid=series.frame_of_reference_uid,
        predictions={},
        roi_source=roi_source,
        roi_descriptions={},
        seg_dataset=None,
        sr_dataset=sr_out,
        card_dataset=card,
        pdf_dataset=pdf,
        not_analysed=dict(reasons),
        validated_bytes={OutputKind.SR: sr_bytes, OutputKind.CARD: card_bytes},
    )


def _card_pdf(card: Dataset, uids: OutputUIDs, series_number_base: int) -> Dataset:
    """The card's Encapsulated PDF, validated (built for every job, sent where configured)."""
    pdf = build_result_pdf(
        card,
        series_number=series_number_base + 4,
        series_instance_uid=uids.pdf_series,
        sop_instance_uid=uids.pdf_instance,
    )
    validate_result_pdf(pdf, card)
    return pdf


def _content_datetime(content_time: float | datetime | None) -> datetime | None:
    """The outputs' content date/time: epoch seconds as local time, a datetime as given."""
    if isinstance(content_time, int | float):
        return datetime.fromtimestamp(content_time)
    return content_time


def _predecessors(
    previous_sr: str | os.PathLike[str] | Dataset | None, series: LoadedSeries, own_uid: str
) -> list[Dataset]:
    """The earlier SR to list as predecessor, if usable (same study, not this SR)."""
    if previous_sr is None:
        return []
    if isinstance(previous_sr, Dataset):
        header = previous_sr
    else:
        try:
            header = pydicom.dcmread(previous_sr, stop_before_pixels=True)
        except Exception as exc:  # a lost or damaged old output must not fail the job
            LOGGER.warning("previous SR %s not referenced: %s", previous_sr, exc)
            return []
    keywords = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
    if not all(header.get(k) for k in keywords):
        LOGGER.warning("previous SR %s not referenced: identifying UIDs missing", previous_sr)
        return []
    if str(header.StudyInstanceUID) != series.study_instance_uid:
        LOGGER.warning("previous SR %s not referenced: another study", previous_sr)
        return []
    if str(header.SOPInstanceUID) == own_uid:  # a re-run of the same job
        return []
    return [header]


def _read_seg(seg: str | os.PathLike[str] | Dataset) -> Dataset:
    if isinstance(seg, Dataset):
        return seg
    try:
        return pydicom.dcmread(seg)
    except Exception as exc:  # pydicom raises many types on damaged files
        raise NotASegmentationError(f"{seg}: not readable as DICOM ({exc})") from exc


def _source_segments(seg: Dataset, rois: Mapping[Side, HipROI]) -> dict[Side, Dataset]:
    """The received Segment Sequence item each ROI was taken from.

    Each ROI read from a SEG carries its segment number; a side whose segment is not
    in the Segment Sequence gets no entry (the SEG writer then says SEMIAUTOMATIC).
    """
    items = {
        int(item.SegmentNumber): item
        for item in seg.get("SegmentSequence", [])
        if item.get("SegmentNumber") is not None
    }
    out: dict[Side, Dataset] = {}
    for side, roi in rois.items():
        item = items.get(roi.segment_number) if roi.segment_number is not None else None
        if item is not None:
            out[side] = item
    return out


# --- validation --------------------------------------------------------------------------


#: The SR storage classes highdicom writes (and its srread reads).
_SR_CLASSES: Final = frozenset(
    {
        pydicom.uid.Comprehensive3DSRStorage,
        pydicom.uid.ComprehensiveSRStorage,
        pydicom.uid.EnhancedSRStorage,
    }
)


def _encode(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _device_uids(ds: Dataset) -> set[str]:
    return {
        str(item.DeviceUID)
        for item in ds.get("ContributingEquipmentSequence", [])
        if "DeviceUID" in item
    }


def validate_outputs(
    series: LoadedSeries,
    rois: Mapping[Side, HipROI],
    predictions: Mapping[Side, HipPrediction],
    seg: Dataset,
    sr: Dataset,
    device: OutputDevice,
    *,
    not_analysed: Mapping[Side, str] | None = None,
) -> dict[OutputKind, bytes]:
    """Re-read the SEG and the SR from their bytes and check they say what was meant.

    Checks: both in the source study, in new series, the SEG on the source frame of
    reference; one segment per ROI with its exact label and the ROI mask voxel for
    voxel (read by source-instance reference); one SR measurement group per
    prediction, referencing that side's segment of this SEG, with the score,
    probability and call of the prediction; a "could not analyse" group with its reason
    for each side in ``not_analysed``; distinct tracking UIDs; the Device UID in
    both objects' Contributing Equipment; the not-for-clinical-use warning when the
    bundle requires it.

    Returns
    -------
    dict
        The SEG's and the SR's bytes, as read back and checked (by kind).

    Raises
    ------
    onfh_dlr.errors.OutputValidationError
        Naming every problem found.
    """
    problems: list[str] = []
    try:
        encoded = {OutputKind.SEG: _encode(seg), OutputKind.SR: _encode(sr)}
        seg_back = hd.seg.segread(io.BytesIO(encoded[OutputKind.SEG]))
        # Plain pydicom here: read_report below parses the content tree with highdicom's
        # TID 1500 classes, which is what a second parse by srread would repeat (0.2 s).
        sr_back = pydicom.dcmread(io.BytesIO(encoded[OutputKind.SR]))
    except Exception as exc:  # any failure to encode or parse is a broken output
        raise OutputValidationError(f"outputs do not read back: {exc}") from exc
    if sr_back.SOPClassUID != sr.SOPClassUID or sr_back.SOPClassUID not in _SR_CLASSES:
        raise OutputValidationError(f"the SR reads back as SOP class {sr_back.SOPClassUID}")

    for name, ds in (("SEG", seg_back), ("SR", sr_back)):
        if str(ds.StudyInstanceUID) != series.study_instance_uid:
            problems.append(f"{name} is not in the source study")
        if str(ds.SeriesInstanceUID) == series.series_instance_uid:
            problems.append(f"{name} reuses the source Series Instance UID")
        if device.device_uid not in _device_uids(ds):
            problems.append(f"{name} Contributing Equipment lacks Device UID {device.device_uid}")
        if device.not_for_clinical_use and NOT_FOR_CLINICAL_USE not in str(
            ds.get("SeriesDescription", "")
        ):
            problems.append(f"{name} Series Description lacks {NOT_FOR_CLINICAL_USE!r}")
    if str(seg_back.get("FrameOfReferenceUID", "")) != series.frame_of_reference_uid:
        problems.append("SEG is not in the source frame of reference")

    numbers = {}
    try:
        numbers = segment_numbers_by_side(seg_back)
    except OutputError as exc:
        problems.append(str(exc))
    if set(numbers) != set(rois):
        problems.append(f"SEG segments {sorted(numbers)} but ROIs {sorted(rois)}")
    for side, number in numbers.items():
        if side in rois:
            problems.extend(_mask_problems(seg_back, series, rois[side], number))

    problems.extend(_report_problems(sr_back, seg_back, numbers, predictions, not_analysed or {}))
    if problems:
        raise OutputValidationError(
            f"outputs of series {series.series_instance_uid}: " + "; ".join(problems)
        )
    return encoded


def validate_card(series: LoadedSeries, card: Dataset, device: OutputDevice) -> bytes:
    """Re-read the card from its bytes: in the source study, a new series, the Device UID.

    Returns the card's bytes as read back and checked.

    Raises
    ------
    onfh_dlr.errors.OutputValidationError
        Naming every problem found.
    """
    try:
        encoded = _encode(card)
        back = pydicom.dcmread(io.BytesIO(encoded))
        pixels = back.pixel_array
    except Exception as exc:  # any failure to encode or parse is a broken output
        raise OutputValidationError(f"result card does not read back: {exc}") from exc
    problems = []
    if str(back.StudyInstanceUID) != series.study_instance_uid:
        problems.append("card is not in the source study")
    if str(back.SeriesInstanceUID) == series.series_instance_uid:
        problems.append("card reuses the source Series Instance UID")
    if device.device_uid not in _device_uids(back):
        problems.append(f"card Contributing Equipment lacks Device UID {device.device_uid}")
    if device.not_for_clinical_use and NOT_FOR_CLINICAL_USE not in str(
        back.get("SeriesDescription", "")
    ):
        problems.append(f"card Series Description lacks {NOT_FOR_CLINICAL_USE!r}")
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        problems.append(f"card pixels have shape {pixels.shape}, not one RGB image")
    if problems:
        raise OutputValidationError(
            f"result card of series {series.series_instance_uid}: " + "; ".join(problems)
        )
    return encoded


def _mask_problems(
    seg: hd.seg.Segmentation, series: LoadedSeries, roi: HipROI, number: int
) -> list[str]:
    label = SEGMENT_LABELS[roi.side]
    expected = np.asarray(sitk.GetArrayFromImage(roi.mask)) > 0
    try:
        if all(frame is None for frame in series.frame_numbers):
            pixels = seg.get_pixels_by_source_instance(
                source_sop_instance_uids=list(series.sop_instance_uids),
                segment_numbers=[number],
                assert_missing_frames_are_empty=True,
            )[..., 0]
        else:
            frames = [frame for frame in series.frame_numbers if frame is not None]
            pixels = seg.get_pixels_by_source_frame(
                source_sop_instance_uid=series.sop_instance_uids[0],
                source_frame_numbers=frames,
                segment_numbers=[number],
                assert_missing_frames_are_empty=True,
            )[..., 0]
    except Exception as exc:  # highdicom raises several types on broken references
        return [f"{label}: frames cannot be read by source reference ({exc})"]
    got = np.asarray(pixels) > 0
    if got.shape != expected.shape:
        return [f"{label}: shape {got.shape}, ROI {expected.shape}"]
    differ = int(np.count_nonzero(got != expected))
    return [f"{label}: {differ} voxels differ from the ROI"] if differ else []


def _report_problems(
    sr: Dataset,
    seg: Dataset,
    numbers: Mapping[Side, int],
    predictions: Mapping[Side, HipPrediction],
    not_analysed: Mapping[Side, str],
) -> list[str]:
    try:
        hips = read_report(sr, copy=False)  # sr was read from bytes for this check only
    except OutputError as exc:
        return [str(exc)]
    problems = []
    if set(hips) != set(predictions) | set(not_analysed):
        problems.append(
            f"SR groups {sorted(hips)} but predictions {sorted(predictions)}"
            f" and not analysed {sorted(not_analysed)}"
        )
    for side, reason in not_analysed.items():
        said = hips[side].not_analysed if side in hips else None
        if said != reason:
            problems.append(f"{SEGMENT_LABELS[side]}: SR says {said!r}, meant {reason!r}")
    if len({hip.tracking_uid for hip in hips.values()}) != len(hips):
        problems.append("SR tracking UIDs are not distinct")
    for side, hip in hips.items():
        label = SEGMENT_LABELS[side]
        prediction = predictions.get(side)
        if prediction is None:
            continue
        if hip.segmentation_uid != str(seg.SOPInstanceUID) or hip.segment_number != numbers.get(
            side
        ):
            problems.append(f"{label}: SR references segment {hip.segment_number} of another SEG")
        if hip.score is None or hip.probability is None:
            problems.append(f"{label}: SR says {hip.not_analysed!r} for a scored hip")
            continue
        if not math.isclose(hip.score, prediction.score, rel_tol=1e-9, abs_tol=1e-9):
            problems.append(f"{label}: SR score {hip.score} != {prediction.score}")
        if not math.isclose(hip.probability, prediction.probability, rel_tol=1e-9, abs_tol=1e-12):
            problems.append(
                f"{label}: SR probability {hip.probability} != {prediction.probability}"
            )
        if hip.necrosis_present != bool(prediction.call):
            problems.append(f"{label}: SR finding does not match call {prediction.call}")
        if set(hip.inputs) != set(prediction.inputs) or not all(
            math.isclose(hip.inputs[name], value, rel_tol=1e-9, abs_tol=1e-12)
            for name, value in prediction.inputs.items()
        ):
            problems.append(f"{label}: SR input features differ from the model's")
    return problems


# --- writing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WrittenOutputs:
    """The files :func:`write_outputs` wrote (no SEG when no hip was scored)."""

    sr: Path
    seg: Path | None
    card: Path
    pdf: Path | None = None

    def by_kind(self) -> dict[OutputKind, Path]:
        """The files by kind, in the order they are sent (SEG before the SR that cites it)."""
        out = {} if self.seg is None else {OutputKind.SEG: self.seg}
        out = {**out, OutputKind.SR: self.sr, OutputKind.CARD: self.card}
        return out if self.pdf is None else {**out, OutputKind.PDF: self.pdf}


def write_outputs(scored: ScoredStudy, out_dir: str | os.PathLike[str]) -> WrittenOutputs:
    """Write ``SEG_<uid>.dcm``, ``SR_<uid>.dcm``, ``CARD_<uid>.dcm``, ``PDF_<uid>.dcm`` atomically.

    Each file is written under a temporary name in ``out_dir``, fsync'ed and renamed,
    so a reader (or a crash) never sees half a file; re-writing the same outputs
    replaces them. The SEG, SR and card are the bytes the validation read back
    (:attr:`ScoredStudy.validated_bytes`).
    """
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)

    def data(kind: OutputKind, dataset: Dataset) -> bytes:
        validated = scored.validated_bytes.get(kind)
        return validated if validated is not None else _encode(dataset)

    seg_path = None
    if scored.seg_dataset is not None:
        seg_path = directory / f"SEG_{scored.seg_uid}.dcm"
        # The SEG first: an SR on disk always has the SEG it references next to it.
        _atomic_write(seg_path, data(OutputKind.SEG, scored.seg_dataset))
    sr_path = directory / f"SR_{scored.sr_uid}.dcm"
    _atomic_write(sr_path, data(OutputKind.SR, scored.sr_dataset))
    card_path = directory / f"CARD_{scored.card_uid}.dcm"
    _atomic_write(card_path, data(OutputKind.CARD, scored.card_dataset))
    pdf_path = None
    if scored.pdf_dataset is not None:
        pdf_path = directory / f"PDF_{scored.pdf_uid}.dcm"
        _atomic_write(pdf_path, _encode(scored.pdf_dataset))
    _fsync_directory(directory)
    return WrittenOutputs(sr=sr_path, seg=seg_path, card=card_path, pdf=pdf_path)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_directory(directory: Path) -> None:
    """Make the renames durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
