"""The TID 1500 Comprehensive 3D SR (worker.sr_output), on a phantom study.

Predictions are made up (no model runs here): the left hip below the threshold, the
right one above, so both calls are exercised.
"""

from __future__ import annotations

import html
import io
import json
import math
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_checks import dciodvfy_errors
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from model_bundle.imaging import HipROI, LoadedSeries, Side, load_series
from model_bundle.serving import HipPrediction, ModelName
from onfh_dlr.errors import OutputError
from phantom.dicom_writer import write_series
from phantom.generator import generate_study
from worker.seg_output import (
    SEGMENT_LABELS,
    OutputDevice,
    build_segmentation,
    segment_numbers_by_side,
)
from worker.sr_output import (
    AREA,
    LOG_ODDS,
    PROBABILITY,
    build_report,
    call_concept,
    largest_slice_outline,
    read_report,
    roi_volume_ml,
)

DEVICE = OutputDevice(
    name="onfh-dlr-test",
    version="2.3.4",
    device_uid="1.2.826.0.1.3680043.8.498.1234567890",
    not_for_clinical_use=True,
    warning="synthetic demonstration \u2014 not for clinical use",
    threshold=0.4,
    deployed_model=ModelName.DLR,
    intended_use="Second reader for early ONFH.",
)


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
        inputs=INPUTS,
    )


# One feature of each kind of coding: IBSI on a filtered image, IBSI with a unit, a
# PyRadiomics name (its Kurtosis is not IBSI's), a deep PCA component.
INPUTS: dict[str, float] = {
    "wavelet-LHL_firstorder_Skewness": 0.42,
    "original_shape_MeshVolume": 4100.5,
    "log-sigma-3-0-mm-3D_firstorder_Kurtosis": 3.3,
    "deep_pca_003": -1.25,
}
INPUT_MEANINGS = ("Skewness", "Volume", "firstorder_Kurtosis", "deep_pca_003")
PREDICTIONS: dict[Side, HipPrediction] = {
    Side.LEFT: _prediction(Side.LEFT, 0.123),
    Side.RIGHT: _prediction(Side.RIGHT, 0.87),
}


@dataclass(frozen=True)
class Case:
    series: LoadedSeries
    rois: dict[Side, HipROI]
    seg: hd.seg.Segmentation
    sr_path: Path
    sr: hd.sr.Comprehensive3DSR


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Case:
    study = generate_study(11, 1, (True, False))
    directory = tmp_path_factory.mktemp("sr_output")
    write_series(study, directory / "series")
    series = load_series(directory / "series")
    rois: dict[Side, HipROI] = {}
    for segment in study.segments:
        if segment.kind == "femoral_head":
            side = segment.side
            mask = sitk.GetImageFromArray(segment.mask.astype(np.uint8))
            mask.CopyInformation(series.image)
            rois[Side(side)] = HipROI(Side(side), mask, "auto", "truth")
    seg = build_segmentation(series, rois, DEVICE, series_number=9001)
    sr = build_report(
        series,
        seg,
        PREDICTIONS,
        DEVICE,
        series_number=9002,
        roi_volumes_ml={side: roi_volume_ml(roi) for side, roi in rois.items()},
        outlines={side: largest_slice_outline(roi, series) for side, roi in rois.items()},
    )
    path = directory / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    back = hd.sr.srread(path)
    assert isinstance(back, hd.sr.Comprehensive3DSR)
    return Case(series, rois, seg, path, back)


def _groups(
    sr: hd.sr.Comprehensive3DSR,
) -> list[hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations]:
    content = sr.content
    assert isinstance(content, hd.sr.MeasurementReport)
    return content.get_volumetric_roi_measurement_groups()


def test_sr_passes_dciodvfy(case: Case) -> None:
    assert dciodvfy_errors(case.sr_path) == []


def test_sr_reads_back_with_the_prediction_of_each_hip(case: Case) -> None:
    hips = read_report(case.sr)
    assert set(hips) == {"L", "R"}
    numbers = segment_numbers_by_side(case.seg)
    for side, hip in hips.items():
        prediction = PREDICTIONS[side]
        assert hip.score == pytest.approx(prediction.score, rel=1e-12)
        assert hip.probability == pytest.approx(prediction.probability, rel=1e-12)
        assert hip.necrosis_present is bool(prediction.call)
        assert hip.segmentation_uid == case.seg.SOPInstanceUID
        assert hip.segment_number == numbers[side]
        assert hip.volume_ml == pytest.approx(roi_volume_ml(case.rois[side]))
    assert hips[Side.RIGHT].necrosis_present and not hips[Side.LEFT].necrosis_present


def _probabilities_rewritten(sr_path: Path, unit: str, scale: float) -> Dataset:
    """The SR with each Probability written in ``unit`` (its value times ``scale``)."""
    sr = pydicom.dcmread(sr_path)

    def walk(items: Sequence[Dataset]) -> None:
        for item in items:
            if item.get("ValueType") == "NUM" and item.ConceptNameCodeSequence[0].CodeValue == (
                PROBABILITY.value
            ):
                measured = item.MeasuredValueSequence[0]
                measured.NumericValue = f"{float(measured.NumericValue) * scale:.12g}"
                if "FloatingPointValue" in measured:  # highdicom's exact copy of the value
                    measured.FloatingPointValue = float(measured.FloatingPointValue) * scale
                measured.MeasurementUnitsCodeSequence[0].CodeValue = unit
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    return sr


def test_a_probability_written_in_unit_1_by_an_older_version_reads_back_the_same(
    case: Case,
) -> None:
    older = read_report(_probabilities_rewritten(case.sr_path, "1", 0.01))
    for side, hip in older.items():
        assert hip.probability == pytest.approx(PREDICTIONS[side].probability, rel=1e-9)
    with pytest.raises(OutputError, match="Probability in 'mm'"):
        read_report(_probabilities_rewritten(case.sr_path, "mm", 1.0))


def test_each_hip_is_one_group_with_its_label_laterality_and_tracking_uid(case: Case) -> None:
    groups = _groups(case.sr)
    assert len(groups) == 2
    laterality = {}
    for group in groups:
        sites = group.finding_sites
        assert len(sites) == 1 and sites[0].value == codes.SCT.FemoralHead
        assert sites[0].laterality is not None
        laterality[group.tracking_identifier] = sites[0].laterality.value
        assert group.finding_type == codes.SCT.FemoralHead
        assert group.reference_type == codes.DCM.ReferencedSegment
    assert laterality == {"Left femoral head": "7771000", "Right femoral head": "24028007"}
    assert len({g.tracking_uid for g in groups}) == 2


def test_measurements_name_the_algorithm_and_use_ucum_units(case: Case) -> None:
    for group in _groups(case.sr):
        measurements = {
            m.name.meaning: m
            for m in group.get_measurements()
            if m.name.scheme_designator != "IBSI"
        }
        assert set(measurements) == {"Score", "Probability", "Volume", *INPUT_MEANINGS[2:]}
        # Dimensionless, in units OHIF prints readably: "{log-odds}" is UCUM's unity with
        # an annotation, and the probability is written in percent.
        assert measurements["Score"].unit == LOG_ODDS and LOG_ODDS.value == "{log-odds}"
        assert measurements["Probability"].unit.value == "%"
        side = next(s for s, label in SEGMENT_LABELS.items() if label == group.tracking_identifier)
        assert measurements["Probability"].value == pytest.approx(
            100 * PREDICTIONS[side].probability
        )
        assert measurements["Volume"].unit.value == "ml"
        for name in ("Score", "Probability"):
            # highdicom has no accessor for a measurement's TID 4019 items.
            modifiers = {
                item.ConceptNameCodeSequence[0].CodeValue: item.get("TextValue")
                for item in measurements[name][0].ContentSequence
            }
            assert modifiers["111001"] == DEVICE.name  # Algorithm Name
            assert modifiers["111003"] == DEVICE.version  # Algorithm Version


def test_referenced_segments_point_at_the_seg_and_its_source_series(case: Case) -> None:
    numbers = segment_numbers_by_side(case.seg)
    by_label: dict[str, Side] = {"Left femoral head": Side.LEFT, "Right femoral head": Side.RIGHT}
    for group in _groups(case.sr):
        ref = group.referenced_segment
        assert ref is not None
        item = ref[0].ReferencedSOPSequence[0]
        assert item.ReferencedSOPInstanceUID == case.seg.SOPInstanceUID
        assert item.ReferencedSegmentNumber == numbers[by_label[str(group.tracking_identifier)]]
    evidence_series = {
        s.SeriesInstanceUID
        for s in case.sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    }
    assert evidence_series == {case.series.series_instance_uid, case.seg.SeriesInstanceUID}


def test_sr_is_a_complete_unverified_document_in_the_source_study(case: Case) -> None:
    sr = case.sr
    assert sr.StudyInstanceUID == case.series.study_instance_uid
    assert sr.SeriesInstanceUID not in {case.series.series_instance_uid, case.seg.SeriesInstanceUID}
    assert (sr.CompletionFlag, sr.VerificationFlag) == ("COMPLETE", "UNVERIFIED")
    assert sr.Modality == "SR" and sr.SeriesNumber == 9002
    assert sr.PatientID == case.series.datasets[0].PatientID


def test_observer_is_the_model_as_a_device(case: Case) -> None:
    content = case.sr.content
    assert isinstance(content, hd.sr.MeasurementReport)
    (observer,) = content.get_observer_contexts(observer_type=codes.DCM.Device)
    attributes = observer.observer_identifying_attributes
    assert isinstance(attributes, hd.sr.DeviceObserverIdentifyingAttributes)
    assert attributes.uid == DEVICE.device_uid
    assert attributes.manufacturer_name == "onfh-dlr"


def test_contributing_equipment_carries_the_device_uid(case: Case) -> None:
    ours = [i for i in case.sr.ContributingEquipmentSequence if "DeviceUID" in i]
    assert [i.DeviceUID for i in ours] == [DEVICE.device_uid]
    assert ours[0].Manufacturer == "onfh-dlr"
    assert ours[0].SoftwareVersions == DEVICE.version


def test_not_for_clinical_use_is_in_the_series_description_and_the_text(case: Case) -> None:
    assert case.sr.SeriesDescription.startswith("NOT FOR CLINICAL USE")
    texts = [
        item.TextValue
        for item in case.sr.ContentSequence
        if item.ValueType == "CONTAINER" and item.ConceptNameCodeSequence[0].CodeValue == "C0034375"
        for item in item.ContentSequence
    ]
    assert texts[0] == "NOT FOR CLINICAL USE: synthetic demonstration - not for clinical use"
    assert any("Right femoral head: early ONFH suspected" in t and "0.400" in t for t in texts)
    assert any("Left femoral head: early ONFH not suspected" in t for t in texts)


def test_same_uids_and_time_give_the_same_document(case: Case) -> None:
    def encoded() -> bytes:
        sr = build_report(
            case.series,
            case.seg,
            PREDICTIONS,
            DEVICE,
            series_number=9002,
            series_instance_uid="1.2.826.0.1.3680043.8.498.3",
            sop_instance_uid="1.2.826.0.1.3680043.8.498.4",
            content_datetime=datetime(2025, 1, 2, 3, 4, 5),
        )
        buffer = io.BytesIO()
        sr.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()

    assert encoded() == encoded()


def test_a_previous_report_is_listed_as_predecessor(case: Case) -> None:
    sr = build_report(
        case.series, case.seg, PREDICTIONS, DEVICE, series_number=9002, previous_versions=[case.sr]
    )
    item = sr.PredecessorDocumentsSequence[0]
    assert item.StudyInstanceUID == case.series.study_instance_uid
    referenced = item.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert referenced.ReferencedSOPInstanceUID == case.sr.SOPInstanceUID


def test_a_predicted_hip_without_its_segment_is_refused(case: Case) -> None:
    seg = build_segmentation(
        case.series, {Side.RIGHT: case.rois[Side.RIGHT]}, DEVICE, series_number=9001
    )
    with pytest.raises(OutputError, match="Left femoral head"):
        build_report(case.series, seg, PREDICTIONS, DEVICE, series_number=9002)


def test_one_hip_report_references_a_one_segment_seg(case: Case) -> None:
    seg = build_segmentation(
        case.series, {Side.RIGHT: case.rois[Side.RIGHT]}, DEVICE, series_number=9001
    )
    sr = build_report(
        case.series, seg, {Side.RIGHT: PREDICTIONS[Side.RIGHT]}, replace(DEVICE), series_number=9002
    )
    hips = read_report(sr)
    assert set(hips) == {"R"} and hips[Side.RIGHT].segment_number == 1


def _planar_groups(
    sr: hd.sr.Comprehensive3DSR,
) -> list[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations]:
    content = sr.content
    assert isinstance(content, hd.sr.MeasurementReport)
    return content.get_planar_roi_measurement_groups()


def test_each_hip_has_a_planar_group_tracked_with_its_volumetric_group(case: Case) -> None:
    # Same Tracking Identifier and UID: viewers (OHIF) merge the two into one finding.
    volumetric = {(g.tracking_identifier, g.tracking_uid) for g in _groups(case.sr)}
    planar = _planar_groups(case.sr)
    assert len(planar) == 2
    assert {(g.tracking_identifier, g.tracking_uid) for g in planar} == volumetric
    for group in planar:
        (site,) = group.finding_sites
        assert site.value == codes.SCT.FemoralHead and site.laterality is not None
        assert group.finding_type == codes.SCT.FemoralHead


def test_the_planar_outline_is_the_rois_closed_polyline_on_its_largest_slice(
    case: Case,
) -> None:
    by_label = {"Left femoral head": Side.LEFT, "Right femoral head": Side.RIGHT}
    for group in _planar_groups(case.sr):
        side = by_label[str(group.tracking_identifier)]
        mask = sitk.GetArrayFromImage(case.rois[side].mask) > 0
        areas = mask.sum(axis=(1, 2))
        largest = int(np.argmax(areas))
        region = group.roi
        assert isinstance(region, hd.sr.ImageRegion)
        assert region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        points = region.value
        assert len(points) >= 8 and np.array_equal(points[0], points[-1])
        source = region.ContentSequence[0].ReferencedSOPSequence[0]
        assert source.ReferencedSOPInstanceUID == case.series.sop_instance_uids[largest]
        # The polygon encloses the mask's pixels: its area is the pixel count, give or
        # take the half-pixel rim the outline cuts through.
        columns, rows = points[:, 0], points[:, 1]
        polygon = 0.5 * abs(np.dot(columns, np.roll(rows, 1)) - np.dot(rows, np.roll(columns, 1)))
        assert polygon == pytest.approx(areas[largest], rel=0.1)
        # Every mask pixel centre of that slice lies inside the outline's bounding box.
        mask_rows, mask_columns = np.nonzero(mask[largest])
        assert columns.min() < mask_columns.min() + 0.5 < mask_columns.max() + 0.5 < columns.max()
        assert rows.min() < mask_rows.min() + 0.5 < mask_rows.max() + 0.5 < rows.max()
        (area,) = group.get_measurements(name=AREA)
        spacing = case.rois[side].mask.GetSpacing()
        assert area.unit.value == "mm2"
        assert area.value == pytest.approx(areas[largest] * spacing[0] * spacing[1])


def test_every_container_is_separate(case: Case) -> None:
    def containers(items: Sequence[Dataset]) -> Iterator[Dataset]:
        for item in items:
            if item.ValueType == "CONTAINER":
                yield item
            yield from containers(item.get("ContentSequence", []))

    assert case.sr.ContinuityOfContent == "SEPARATE"
    found = list(containers(case.sr.ContentSequence))
    assert len(found) >= 6  # measurements, 4 groups, qualitative evaluations
    assert {c.ContinuityOfContent for c in found} == {"SEPARATE"}


def test_dsr2html_renders_every_value_with_its_concept_name(case: Case) -> None:
    exe = shutil.which("dsr2html")
    if exe is None:
        raise RuntimeError("dsr2html (Debian package dcmtk) is required: run `make system-deps`")
    rendered = subprocess.run(
        [exe, str(case.sr_path)], capture_output=True, text=True, check=True
    ).stdout
    text = html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", rendered)))
    for side, prediction in PREDICTIONS.items():
        label = SEGMENT_LABELS[side]
        call = "Present" if prediction.call else "Absent"
        group = re.search(
            rf'Tracking Identifier = "{label}".*?Score: (\S+) \{{log-odds\}} '
            rf".*?Probability: (\S+) % "
            rf".*?Volume: (\S+) ml .*?Necrosis: {call} ",
            text,
        )
        assert group is not None, text
        assert float(group[1]) == pytest.approx(prediction.score)
        assert float(group[2]) == pytest.approx(100 * prediction.probability)
        assert re.search(
            rf'Tracking Identifier = "{label}"[^"]*?Area: [0-9.]+ mm2 Image Region: Polyline',
            text,
        ), text
    # A CONTINUOUS container renders its values as one run with footnotes.
    assert "Footnote" not in text


def test_dcmqi_tid1500reader_reads_both_groups_of_each_hip(case: Case, tmp_path: Path) -> None:
    # dcmqi (a dev dependency) installs tid1500reader next to the interpreter.
    exe = shutil.which("tid1500reader") or shutil.which(
        "tid1500reader", path=str(Path(sys.executable).parent)
    )
    if exe is None:
        raise RuntimeError("dcmqi's tid1500reader is required: pip install -e '.[dev]'")
    out = tmp_path / "tid1500.json"
    subprocess.run(
        [exe, "--inputDICOM", str(case.sr_path), "--outputMetadata", str(out)],
        capture_output=True,
        check=True,
    )
    groups = json.loads(out.read_text())["Measurements"]
    quantities = {
        (
            g["TrackingIdentifier"],
            tuple(m["quantity"]["CodeMeaning"] for m in g["measurementItems"]),
        )
        for g in groups
    }
    volumetric = ("Score", "Probability", "Volume", *INPUT_MEANINGS)
    hips = read_report(case.sr)
    calls = {
        side: call_concept(side, bool(hips[side].necrosis_present)).meaning
        for side in SEGMENT_LABELS
    }
    assert quantities == {
        ("Left femoral head", volumetric),
        ("Left femoral head", (calls[Side.LEFT], "Area")),
        ("Right femoral head", volumetric),
        ("Right femoral head", (calls[Side.RIGHT], "Area")),
    }
    items = {
        m["quantity"]["CodeMeaning"]: m
        for g in groups
        if g["TrackingIdentifier"] == "Right femoral head"
        for m in g["measurementItems"]
    }
    assert items["Skewness"]["quantity"]["CodeValue"] == "KE2A"
    assert items["Skewness"]["quantity"]["CodingSchemeDesignator"] == "IBSI"
    assert float(items["Skewness"]["value"]) == pytest.approx(
        INPUTS["wavelet-LHL_firstorder_Skewness"]
    )
    # tid1500reader does not output a measurement's method (the image type): read by
    # highdicom in the next test.
    by_label = {g["TrackingIdentifier"]: g for g in groups if "ReferencedSegment" in g}
    assert by_label["Right femoral head"]["Laterality"]["CodeValue"] == "24028007"


def test_read_report_gives_each_hips_outline_image_and_area(case: Case) -> None:
    hips = read_report(case.sr)
    for side, hip in hips.items():
        outline = largest_slice_outline(case.rois[side], case.series)
        assert hip.outline_image_uid == outline.sop_instance_uid
        assert hip.area_mm2 == pytest.approx(outline.area_mm2)
    # A report built without outlines has none to read back.
    plain = build_report(case.series, case.seg, PREDICTIONS, DEVICE, series_number=9002)
    assert {h.outline_image_uid for h in read_report(plain).values()} == {None}


def test_the_models_inputs_are_coded_with_ibsi_codes_ucum_units_and_image_type(
    case: Case,
) -> None:
    for group in _groups(case.sr):
        found = {m.name.meaning: m for m in group.get_measurements()}
        skewness = found["Skewness"]
        assert (skewness.name.value, skewness.name.scheme_designator) == ("KE2A", "IBSI")
        assert skewness.method is not None and skewness.method.meaning == "wavelet-LHL"
        assert skewness.unit.value == "1"
        volume = next(m for m in group.get_measurements() if m.name.value == "RNU0")
        assert volume.unit.value == "mm3"
        assert volume.method is not None and volume.method.meaning == "original"
        kurtosis = found["firstorder_Kurtosis"]
        assert kurtosis.name.scheme_designator == "99PYRADIOMICS"
        assert len(kurtosis.name.value) <= 16
        assert found["deep_pca_003"].unit.value == "1"


def test_read_report_gives_back_the_models_inputs_by_feature_name(case: Case) -> None:
    for hip in read_report(case.sr).values():
        assert dict(hip.inputs) == pytest.approx(INPUTS, rel=1e-12)


def test_notes_for_the_reader_follow_the_calls_as_comments(case: Case) -> None:
    note = "Left/right check: femoral heads of 19.8 and 25.5 mm radius differ"
    sr = build_report(case.series, case.seg, PREDICTIONS, DEVICE, series_number=9002, notes=[note])
    texts = [
        item.TextValue
        for item in sr.ContentSequence
        if item.ValueType == "CONTAINER" and item.ConceptNameCodeSequence[0].CodeValue == "C0034375"
        for item in item.ContentSequence
    ]
    calls = [i for i, t in enumerate(texts) if "femoral head: early ONFH" in t]
    assert texts.count(note) == 1 and texts.index(note) > max(calls)
