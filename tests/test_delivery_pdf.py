"""The result card's Encapsulated PDF is opt-in per destination (``ONFH_DESTINATION_OBJECTS``).

End to end with the real service: a destination configured ``pdf`` (e.g. a document
archive) receives the PDF and nothing else; the PACS, not named in the setting, receives
the SR, SEG and card as before and no PDF.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
from dicom_checks import dciodvfy_errors
from service_harness import CohortMaker, Service

from onfh_dlr.broker import free_port
from onfh_dlr.cli.receiver import Receiver

FINISHED = {"done", "failed", "dead_letter"}


def test_only_a_destination_configured_for_pdf_receives_the_cards_pdf(
    service: Service, phantom_cohort: CohortMaker, tmp_path: Path
) -> None:
    archive = Receiver(tmp_path / "archive", free_port(), ae_title="DOC_ARCHIVE").start()
    destinations = service.env["ONFH_DESTINATIONS"]
    try:
        service.restart_worker(
            destinations=f"{destinations},DOC_ARCHIVE@127.0.0.1:{archive.port}",
            destination_objects="DOC_ARCHIVE=pdf",
        )
        (study,) = phantom_cohort(1, 47, onfh_fraction=1.0).studies
        assert set(service.push(study.slices)) == {0x0000}
        job = service.wait_for_job(study.series_uid, FINISHED)
        assert job.state == "done", job.reason
        at_archive = [r for r in archive.received if r.study_uid == study.study_uid]
        assert [r.sop_instance_uid for r in at_archive] == [job.result["pdf_uid"]]
        pdf = pydicom.dcmread(at_archive[0].path)
        assert pdf.Modality == "DOC" and pdf.MIMETypeOfEncapsulatedDocument == "application/pdf"
        assert pdf.SourceInstanceSequence[0].ReferencedSOPInstanceUID == job.result["card_uid"]
        assert bytes(pdf.EncapsulatedDocument).startswith(b"%PDF-")
        assert dciodvfy_errors(at_archive[0].path) == []
        at_pacs = [r for r in service.pacs.received if r.study_uid == study.study_uid]
        assert sorted(r.modality for r in at_pacs) == ["OT", "SEG", "SR"]
    finally:
        service.restart_worker(destinations=destinations, destination_objects=None)
        archive.stop()
