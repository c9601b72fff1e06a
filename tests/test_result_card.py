"""The result card (worker.result_card), a Secondary Capture, on a phantom study.

Predictions are made up as in test_sr_output: the left hip below the threshold, the
right one above. ``card.png`` in the module's tmp directory is the card as rendered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pydicom
import pytest
import SimpleITK as sitk
from dicom_checks import dciodvfy_errors
from PIL import Image

from model_bundle.imaging import HipROI, LoadedSeries, Side, load_series
from model_bundle.serving import HipPrediction, ModelName
from onfh_dlr.errors import OutputError
from phantom.dicom_writer import write_series
from phantom.generator import generate_study
from worker.result_card import (
    BANNER_RGB,
    NOT_SUSPECTED_RGB,
    SUSPECTED_RGB,
    build_result_card,
    card_slice,
    card_text,
)
from worker.seg_output import OutputDevice

DEVICE = OutputDevice(
    name="onfh-dlr-test",
    version="2.3.4",
    device_uid="1.2.826.0.1.3680043.8.498.1234567890",
    not_for_clinical_use=True,
    warning="synthetic demonstration \u2014 not for clinical use",
    threshold=0.4,
    deployed_model="dlr",
)
L, R = Side.LEFT, Side.RIGHT
SC_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"


def _prediction(side: Side, probability: float) -> HipPrediction:
    return HipPrediction(
        side=side,
        probabilities={ModelName.DLR: probability},
        deployed_model=ModelName.DLR,
        probability=probability,
        score=math.log(probability / (1 - probability)),
        threshold=DEVICE.threshold,
        call=int(probability >= DEVICE.threshold),
        roi_source="auto",
        roi_description="truth",
    )


PREDICTIONS = {L: _prediction(L, 0.123), R: _prediction(R, 0.87)}


@dataclass(frozen=True)
class Case:
    series: LoadedSeries
    rois: dict[Side, HipROI]
    card_path: Path
    card: pydicom.Dataset


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Case:
    study = generate_study(11, 1, (True, False))
    directory = tmp_path_factory.mktemp("result_card")
    write_series(study, directory / "series")
    series = load_series(directory / "series")
    rois: dict[Side, HipROI] = {}
    for segment in study.segments:
        if segment.kind == "femoral_head":
            mask = sitk.GetImageFromArray(segment.mask.astype(np.uint8))
            mask.CopyInformation(series.image)
            rois[Side(segment.side)] = HipROI(Side(segment.side), mask, "auto", "truth")
    card = build_result_card(series, rois, PREDICTIONS, DEVICE, series_number=9003)
    path = directory / "card.dcm"
    card.save_as(path, enforce_file_format=True)
    back = pydicom.dcmread(path)
    Image.fromarray(back.pixel_array).save(directory / "card.png")
    return Case(series, rois, path, back)


def _masks(rois: dict[Side, HipROI]) -> dict[Side, npt.NDArray[np.bool_]]:
    return {side: sitk.GetArrayFromImage(roi.mask) > 0 for side, roi in rois.items()}


def test_card_passes_dciodvfy(case: Case) -> None:
    assert dciodvfy_errors(case.card_path) == []


def test_card_is_a_burned_in_rgb_secondary_capture_in_the_source_study(case: Case) -> None:
    card = case.card
    assert card.SOPClassUID == SC_IMAGE_STORAGE
    assert card.StudyInstanceUID == case.series.study_instance_uid
    assert card.SeriesInstanceUID != case.series.series_instance_uid
    assert card.PatientID == case.series.datasets[0].PatientID
    assert card.PhotometricInterpretation == "RGB" and card.SamplesPerPixel == 3
    assert card.BurnedInAnnotation == "YES"
    assert card.SeriesDescription.startswith("NOT FOR CLINICAL USE")
    assert card.pixel_array.shape[1] >= 640
    assert [i.DeviceUID for i in card.ContributingEquipmentSequence if "DeviceUID" in i] == [
        DEVICE.device_uid
    ]


def test_card_text_gives_each_hips_call_and_probability_right_first() -> None:
    text = card_text(PREDICTIONS, DEVICE)
    assert text.hips == (
        "Right femoral head: early ONFH suspected, p = 0.87 (threshold 0.40)",
        "Left femoral head: early ONFH not suspected, p = 0.12 (threshold 0.40)",
    )
    assert text.banner == "NOT FOR CLINICAL USE: synthetic demonstration - not for clinical use"
    assert text.model[0] == "Model: onfh-dlr-test 2.3.4 (dlr)"
    assert card_text(PREDICTIONS, replace(DEVICE, not_for_clinical_use=False)).banner == ""


def test_image_comments_carry_the_cards_text(case: Case) -> None:
    assert case.card.ImageComments.split("\n") == card_text(PREDICTIONS, DEVICE).lines()


def test_the_slice_shown_goes_through_both_heads(case: Case) -> None:
    masks = _masks(case.rois)
    both = np.minimum(*(m.sum(axis=(1, 2)) for m in masks.values()))
    index = card_slice(case.rois)
    assert both[index] == both.max() > 0
    # With one hip, its own largest slice.
    right = masks[R].sum(axis=(1, 2))
    assert card_slice({R: case.rois[R]}) == int(np.argmax(right))


def test_each_roi_is_outlined_in_the_colour_of_its_call(case: Case) -> None:
    # Without the banner the MR slice starts at the card's first row.
    card = build_result_card(
        case.series,
        case.rois,
        PREDICTIONS,
        replace(DEVICE, not_for_clinical_use=False),
        series_number=9003,
    )
    pixels = card.pixel_array
    index = card_slice(case.rois)
    masks = _masks(case.rois)
    zoom = pixels.shape[1] // masks[R].shape[2]  # the slice fills the card's width
    image_rows = masks[R].shape[1] * zoom
    expected: dict[Side, tuple[int, int, int]] = {R: SUSPECTED_RGB, L: NOT_SUSPECTED_RGB}
    for side, colour in expected.items():
        rows, columns = np.nonzero(masks[side][index])
        top, bottom = rows.min() * zoom, (rows.max() + 1) * zoom
        left, right = columns.min() * zoom, (columns.max() + 1) * zoom
        region = pixels[:image_rows][top - 2 : bottom + 2, left - 2 : right + 2]
        found_rows, found_columns = np.nonzero(np.all(region == colour, axis=-1))
        # The outline spans the ROI's extent, give or take its two-pixel width.
        assert abs(found_rows.min() - 2) <= 2 and abs(found_rows.max() - (bottom - top + 1)) <= 2
        assert abs(found_columns.min() - 2) <= 2
        assert abs(found_columns.max() - (right - left + 1)) <= 2
        # And it is a line, not a fill: far fewer pixels than the ROI's area.
        assert len(found_rows) < 0.5 * len(rows) * zoom * zoom
        other = expected[L if side == R else R]
        assert not np.all(region == other, axis=-1).any()


def test_the_banner_is_there_exactly_when_the_bundle_says_not_for_clinical_use(
    case: Case,
) -> None:
    top = case.card.pixel_array[:5]
    assert np.all(top == BANNER_RGB, axis=-1).mean() > 0.9
    plain = build_result_card(
        case.series,
        case.rois,
        PREDICTIONS,
        replace(DEVICE, not_for_clinical_use=False),
        series_number=9003,
    )
    assert not np.all(plain.pixel_array == BANNER_RGB, axis=-1).any()
    assert not plain.SeriesDescription.startswith("NOT FOR CLINICAL USE")


def test_a_one_hip_card_names_only_that_hip(case: Case) -> None:
    card = build_result_card(
        case.series, {R: case.rois[R]}, {R: PREDICTIONS[R]}, DEVICE, series_number=9003
    )
    lines = str(card.ImageComments).split("\n")
    assert any(line.startswith("Right femoral head") for line in lines)
    assert not any(line.startswith("Left femoral head") for line in lines)
    assert isinstance(card, hd.sc.SCImage)


def test_a_predicted_hip_without_its_roi_is_refused(case: Case) -> None:
    with pytest.raises(OutputError, match="Left femoral head"):
        build_result_card(case.series, {R: case.rois[R]}, PREDICTIONS, DEVICE, series_number=9003)


def test_notes_for_the_reader_are_lines_under_the_hips() -> None:
    note = "Left/right check: femoral heads of 19.8 and 25.5 mm radius differ"
    lines = card_text(PREDICTIONS, DEVICE, notes=[note]).lines()
    assert lines.index(note) == 3  # banner, right hip, left hip, then the note
    assert note not in card_text(PREDICTIONS, DEVICE).lines()
