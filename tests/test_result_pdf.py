"""The result card as Encapsulated PDF (worker.result_pdf), from a phantom study's card."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_checks import dciodvfy_errors
from PIL import Image, PdfParser

from model_bundle.imaging import HipROI, Side, load_series
from model_bundle.serving import HipPrediction, ModelName
from onfh_dlr.errors import OutputValidationError
from phantom.dicom_writer import write_series
from phantom.generator import generate_study
from worker.result_card import build_result_card
from worker.result_pdf import build_result_pdf, validate_result_pdf
from worker.seg_output import OutputDevice

DEVICE = OutputDevice(
    name="onfh-dlr-test",
    version="2.3.4",
    device_uid="1.2.826.0.1.3680043.8.498.1234567890",
    not_for_clinical_use=True,
    warning="synthetic demonstration - not for clinical use",
    threshold=0.4,
    deployed_model="dlr",
)
ENCAPSULATED_PDF_STORAGE = "1.2.840.10008.5.1.4.1.1.104.1"
WHEN = datetime(2026, 12, 7, 8, 30, 0)


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


@dataclass(frozen=True)
class Case:
    card: pydicom.Dataset
    pdf_path: Path
    pdf: pydicom.Dataset


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Case:
    study = generate_study(11, 1, (True, False))
    directory = tmp_path_factory.mktemp("result_pdf")
    write_series(study, directory / "series")
    series = load_series(directory / "series")
    rois: dict[Side, HipROI] = {}
    for segment in study.segments:
        if segment.kind == "femoral_head":
            mask = sitk.GetImageFromArray(segment.mask.astype(np.uint8))
            mask.CopyInformation(series.image)
            rois[Side(segment.side)] = HipROI(Side(segment.side), mask, "auto", "truth")
    predictions = {
        Side.LEFT: _prediction(Side.LEFT, 0.12),
        Side.RIGHT: _prediction(Side.RIGHT, 0.87),
    }
    card = build_result_card(
        series, rois, predictions, DEVICE, series_number=9003, content_datetime=WHEN
    )
    pdf = build_result_pdf(card, series_number=9004)
    path = directory / "pdf.dcm"
    pdf.save_as(path, enforce_file_format=True)
    (directory / "card.pdf").write_bytes(
        bytes(pdf.EncapsulatedDocument)[: pdf.EncapsulatedDocumentLength]
    )
    return Case(card, path, pydicom.dcmread(path))


def _page_jpeg(document: bytes) -> Image.Image:
    parser = PdfParser.PdfParser(buf=document)
    try:
        (page_ref,) = parser.pages
        (image_ref,) = parser.read_indirect(page_ref)[b"Resources"][b"XObject"].values()
        stream = parser.read_indirect(image_ref)
        return Image.open(io.BytesIO(bytes(stream.buf))).convert("RGB")
    finally:
        parser.close()


def test_the_pdf_passes_dciodvfy(case: Case) -> None:
    assert dciodvfy_errors(case.pdf_path) == []


def test_the_pdf_is_an_encapsulated_document_in_the_cards_study_made_from_the_card(
    case: Case,
) -> None:
    pdf, card = case.pdf, case.card
    assert pdf.SOPClassUID == ENCAPSULATED_PDF_STORAGE and pdf.Modality == "DOC"
    assert pdf.StudyInstanceUID == card.StudyInstanceUID
    assert pdf.SeriesInstanceUID != card.SeriesInstanceUID
    assert pdf.PatientID == card.PatientID and pdf.SeriesNumber == 9004
    assert pdf.SourceInstanceSequence[0].ReferencedSOPInstanceUID == card.SOPInstanceUID
    assert pdf.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert pdf.BurnedInAnnotation == "YES"
    assert "NOT FOR CLINICAL USE" in pdf.DocumentTitle
    assert pdf.ContentDate == "20261207" and pdf.ContentTime.startswith("083000")
    document = bytes(pdf.EncapsulatedDocument)
    assert document.startswith(b"%PDF-") and len(document) % 2 == 0
    assert document[: pdf.EncapsulatedDocumentLength].rstrip().endswith(b"%%EOF")


def test_the_pdf_page_shows_the_cards_image(case: Case) -> None:
    page = np.asarray(_page_jpeg(bytes(case.pdf.EncapsulatedDocument)), dtype=np.float64)
    card = case.card.pixel_array.astype(np.float64)
    assert page.shape == card.shape
    assert np.abs(page - card).mean() < 2.0  # JPEG at quality 95: close, not identical
    validate_result_pdf(case.pdf, case.card)


def test_the_same_card_gives_the_same_pdf_bytes(case: Case) -> None:
    again = build_result_pdf(
        case.card,
        series_number=9004,
        series_instance_uid=case.pdf.SeriesInstanceUID,
        sop_instance_uid=case.pdf.SOPInstanceUID,
    )
    assert bytes(again.EncapsulatedDocument) == bytes(case.pdf.EncapsulatedDocument)


def test_a_pdf_of_another_card_does_not_validate(case: Case) -> None:
    other = pydicom.Dataset()
    other.update(case.card)
    other.SOPInstanceUID = "1.2.3.4"
    with pytest.raises(OutputValidationError, match="does not reference the card"):
        validate_result_pdf(case.pdf, other)
