"""The result card as an Encapsulated PDF, for destinations that file documents, not images.

Some archives and EHR viewers show a study's PDF documents but not a Secondary Capture
(or show it without its comments). The PDF holds the card's image on one page — the
same image (JPEG at quality 95 without chroma subsampling, so the burned-in text stays
sharp), so it says exactly what the card says — and the DICOM object
(Encapsulated PDF Storage) carries the card's patient, study and equipment, its own
series in the study, and a Source Instance reference to the card it was made from.

highdicom has no Encapsulated Document class: the object is built with pydicom, the
PDF with Pillow. The PDF's creation date is the card's content date/time, so the same
job gives the same bytes. A destination receives it only when
``ONFH_DESTINATION_OBJECTS`` names the kind ``pdf`` for it (opt-in).
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import Final

from PIL import Image, PdfParser
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    EncapsulatedPDFStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)
from pydicom.valuerep import DA, DT, TM

from onfh_dlr.errors import OutputError, OutputValidationError

__all__ = ["PDF_PAGE_WIDTH_INCHES", "build_result_pdf", "validate_result_pdf"]

#: The page is the card scaled to this width (A4 portrait width): printable as is.
PDF_PAGE_WIDTH_INCHES: Final = 8.27

# Patient, General Study and equipment attributes the PDF carries over from the card.
_FROM_CARD: Final = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "Manufacturer",
    "ManufacturerModelName",
    "SoftwareVersions",
    "ContributingEquipmentSequence",
)


def _pdf_bytes(card: Dataset, title: str, when: datetime) -> bytes:
    pixels = card.pixel_array
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise OutputError(f"result card {card.SOPInstanceUID}: RGB pixels expected")
    image = Image.fromarray(pixels, mode="RGB")
    buffer = io.BytesIO()
    image.save(
        buffer,
        format="PDF",
        resolution=image.width / PDF_PAGE_WIDTH_INCHES,
        quality=95,  # Pillow embeds RGB as JPEG; these keep the card's text crisp
        subsampling=0,
        title=title,
        author=str(card.get("Manufacturer", "")),
        creator=str(card.get("ManufacturerModelName", "")),
        # Pillow writes a struct_time as the PDF date; a fixed one keeps re-runs identical.
        creationDate=when.timetuple(),
        modDate=when.timetuple(),
    )
    data = buffer.getvalue()
    return data if len(data) % 2 == 0 else data + b"\0"  # OB values have even length


def build_result_pdf(
    card: Dataset,
    *,
    series_number: int,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    instance_number: int = 1,
) -> Dataset:
    """The Encapsulated PDF of a result card (see the module doc).

    Parameters
    ----------
    card
        The result card (:func:`worker.result_card.build_result_card`), with pixels.
    series_number, series_instance_uid, sop_instance_uid, instance_number
        Of the PDF object (UIDs random when omitted).

    Raises
    ------
    onfh_dlr.errors.OutputError
        The card has no RGB pixels.
    """
    when = _card_datetime(card)
    title = f"{card.get('SeriesDescription', 'DLR result card')}"[:64]
    ds = Dataset()
    for keyword in _FROM_CARD:
        if keyword in card:
            ds[keyword] = card[keyword]
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
        ds.setdefault(keyword, "")  # Type 2
    ds.SOPClassUID = EncapsulatedPDFStorage
    ds.SOPInstanceUID = sop_instance_uid or generate_uid()
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = series_instance_uid or generate_uid()
    ds.SeriesNumber = series_number
    ds.SeriesDescription = title
    ds.SeriesDate, ds.SeriesTime = DA(when.date()), TM(when.time())
    ds.InstanceCreationDate, ds.InstanceCreationTime = ds.SeriesDate, ds.SeriesTime
    ds.ConversionType = "WSD"  # made by software on a workstation, not scanned
    ds.InstanceNumber = instance_number
    ds.ContentDate, ds.ContentTime = ds.SeriesDate, ds.SeriesTime
    ds.AcquisitionDateTime = DT(when)
    ds.BurnedInAnnotation = "YES"  # the card's image shows patient-identifying text
    ds.DocumentTitle = title
    ds.ConceptNameCodeSequence = Sequence()  # Type 2: no code names this document
    source = Dataset()
    source.ReferencedSOPClassUID = card.SOPClassUID
    source.ReferencedSOPInstanceUID = card.SOPInstanceUID
    ds.SourceInstanceSequence = Sequence([source])
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    document = _pdf_bytes(card, title, when)
    ds.EncapsulatedDocument = document
    ds.EncapsulatedDocumentLength = len(document.rstrip(b"\0"))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def validate_result_pdf(pdf: Dataset, card: Dataset) -> None:
    """Check that ``pdf`` is a one-page PDF of ``card``'s image in ``card``'s study.

    Raises
    ------
    onfh_dlr.errors.OutputValidationError
        When it is not.
    """
    problems = []
    if pdf.StudyInstanceUID != card.StudyInstanceUID:
        problems.append("not in the card's study")
    if pdf.SourceInstanceSequence[0].ReferencedSOPInstanceUID != card.SOPInstanceUID:
        problems.append("does not reference the card")
    document = bytes(pdf.EncapsulatedDocument)[: int(pdf.EncapsulatedDocumentLength)]
    try:
        sizes = _page_image_sizes(document)
    except Exception as exc:  # any parse error means a broken document, whatever its type
        problems.append(f"PDF does not read back: {exc}")
    else:
        if sizes != [(int(card.Columns), int(card.Rows))]:
            problems.append(f"pages' images {sizes}, expected the card's one image")
    if problems:
        raise OutputValidationError(f"result PDF {pdf.SOPInstanceUID}: " + "; ".join(problems))


def _page_image_sizes(document: bytes) -> list[tuple[int, int]]:
    """(width, height) of the image on each page of a PDF written by Pillow."""
    parser = PdfParser.PdfParser(buf=document)
    try:
        sizes = []
        for page_ref in parser.pages:
            page = parser.read_indirect(page_ref)
            for image_ref in page[b"Resources"][b"XObject"].values():
                image = parser.read_indirect(image_ref).dictionary
                sizes.append((int(image[b"Width"]), int(image[b"Height"])))
        return sizes
    finally:
        parser.close()


def _card_datetime(card: Dataset) -> datetime:
    """The card's content date/time (stamped from the job, so a re-run is identical)."""
    try:
        return datetime.combine(DA(card.ContentDate), TM(card.ContentTime))
    except (AttributeError, TypeError, ValueError) as exc:
        raise OutputError(f"result card {card.SOPInstanceUID}: no content date/time") from exc
