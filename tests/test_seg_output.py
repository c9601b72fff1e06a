"""The DICOM-SEG of the ROIs used (worker.seg_output), on a phantom study and synthetic series.

ROIs are the phantom's true femoral heads put on the series grid, so no model and no
auto-segmentation run here.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pydicom
import pytest
import SimpleITK as sitk
from dicom_checks import dciodvfy_errors
from dicom_factory import SeriesSpec, make_enhanced, make_series
from pydicom.dataset import Dataset

from model_bundle.imaging import HipROI, LoadedSeries, Side, load_series, rois_from_seg
from onfh_dlr.errors import OutputError
from phantom.dicom_writer import write_series
from phantom.generator import generate_study
from worker.seg_output import (
    SEGMENT_LABELS,
    OutputDevice,
    build_segmentation,
    segment_numbers_by_side,
)

DEVICE = OutputDevice(
    name="onfh-dlr-test",
    version="2.3.4",
    device_uid="1.2.826.0.1.3680043.8.498.1234567890",
    not_for_clinical_use=True,
    warning="synthetic demonstration \u2014 not for clinical use",
    threshold=0.4,
    deployed_model="dlr",
)


@dataclass(frozen=True)
class Case:
    series: LoadedSeries
    rois: dict[Side, HipROI]
    seg_path: Path
    seg: hd.seg.Segmentation


def _mask(series: LoadedSeries, array: npt.NDArray[np.bool_]) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.CopyInformation(series.image)
    return image


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Case:
    study = generate_study(11, 0, (False, True))
    directory = tmp_path_factory.mktemp("seg_output")
    write_series(study, directory / "series")
    series = load_series(directory / "series")
    rois: dict[Side, HipROI] = {}
    for segment in study.segments:
        if segment.kind == "femoral_head":
            rois[Side(segment.side)] = HipROI(
                Side(segment.side), _mask(series, segment.mask), "auto", "truth"
            )
    seg = build_segmentation(series, rois, DEVICE, series_number=9001)
    path = directory / "seg.dcm"
    seg.save_as(path, enforce_file_format=True)
    return Case(series, rois, path, hd.seg.segread(path))


def test_seg_passes_dciodvfy(case: Case) -> None:
    assert dciodvfy_errors(case.seg_path) == []


def test_seg_masks_round_trip_voxel_for_voxel_by_source_instance(case: Case) -> None:
    numbers = segment_numbers_by_side(case.seg)
    assert numbers == {"L": 1, "R": 2}
    pixels = case.seg.get_pixels_by_source_instance(
        source_sop_instance_uids=list(case.series.sop_instance_uids),
        segment_numbers=[numbers[Side.LEFT], numbers[Side.RIGHT]],
        assert_missing_frames_are_empty=True,
    )
    sides: tuple[Side, Side] = (Side.LEFT, Side.RIGHT)
    for i, side in enumerate(sides):
        expected = sitk.GetArrayFromImage(case.rois[side].mask) > 0
        assert expected.any()
        np.testing.assert_array_equal(pixels[..., i] > 0, expected)


def test_seg_frames_reference_the_source_slice_they_lie_on(case: Case) -> None:
    positions = {
        str(ds.SOPInstanceUID): [float(v) for v in ds.ImagePositionPatient]
        for ds in case.series.datasets
    }
    assert int(case.seg.NumberOfFrames) > 0
    for frame in case.seg.PerFrameFunctionalGroupsSequence:
        source = frame.DerivationImageSequence[0].SourceImageSequence[0]
        position = frame.PlanePositionSequence[0].ImagePositionPatient
        np.testing.assert_allclose(
            [float(v) for v in position], positions[source.ReferencedSOPInstanceUID], atol=1e-3
        )
    referenced = {
        item.ReferencedSOPInstanceUID
        for series in case.seg.ReferencedSeriesSequence
        for item in series.ReferencedInstanceSequence
    }
    assert referenced == set(case.series.sop_instance_uids)  # empty slices too


def test_seg_is_in_the_source_study_in_a_new_series_on_the_source_frame(case: Case) -> None:
    seg, series = case.seg, case.series
    assert seg.StudyInstanceUID == series.study_instance_uid
    assert seg.FrameOfReferenceUID == series.frame_of_reference_uid
    assert seg.SeriesInstanceUID != series.series_instance_uid
    assert seg.SeriesNumber == 9001
    assert seg.PatientID == series.datasets[0].PatientID


def test_segments_are_labelled_and_coded_as_left_and_right_femoral_heads(case: Case) -> None:
    sides = {"L": "7771000", "R": "24028007"}
    for side, number in segment_numbers_by_side(case.seg).items():
        desc = case.seg.get_segment_description(number)
        assert desc.segment_label == SEGMENT_LABELS[side]
        assert desc.segmented_property_category.value == "123037004"
        prop = desc.SegmentedPropertyTypeCodeSequence[0]
        assert (prop.CodingSchemeDesignator, prop.CodeValue) == ("SCT", "2812003")
        assert prop.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == sides[side]
        assert desc.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        algorithm = desc.SegmentationAlgorithmIdentificationSequence[0]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("onfh-dlr-test", "2.3.4")


def test_seg_names_the_model_as_equipment_with_its_device_uid(case: Case) -> None:
    seg = case.seg
    assert seg.Manufacturer == "onfh-dlr"
    assert seg.ManufacturerModelName == DEVICE.name
    assert seg.SoftwareVersions == DEVICE.version
    ours = [
        item
        for item in seg.ContributingEquipmentSequence
        if item.get("DeviceUID") == DEVICE.device_uid
    ]
    assert len(ours) == 1
    assert ours[0].PurposeOfReferenceCodeSequence[0].CodeValue == "109102"
    assert ours[0].ManufacturerModelName == DEVICE.name


def test_not_for_clinical_use_is_visible_in_series_and_content_description(case: Case) -> None:
    assert "NOT FOR CLINICAL USE" in case.seg.SeriesDescription
    assert "NOT FOR CLINICAL USE" in case.seg.ContentDescription
    # The bundle's typographic dash is written in the source's Latin-1, not mangled.
    contribution = next(
        i.ContributionDescription
        for i in case.seg.ContributingEquipmentSequence
        if "DeviceUID" in i
    )
    assert "demonstration - not for clinical use" in contribution


def test_clinical_bundle_outputs_carry_no_warning(case: Case) -> None:
    seg = build_segmentation(
        case.series,
        case.rois,
        replace(DEVICE, not_for_clinical_use=False, warning=""),
        series_number=9001,
    )
    assert "NOT FOR CLINICAL USE" not in seg.SeriesDescription
    assert "NOT FOR CLINICAL USE" not in seg.ContentDescription


def test_model_bundle_reads_the_seg_back_as_the_same_rois(case: Case) -> None:
    back = rois_from_seg(pydicom.dcmread(case.seg_path), case.series)
    assert set(back) == {"L", "R"}
    for side, roi in back.items():
        expected = case.rois[side].mask
        np.testing.assert_array_equal(
            sitk.GetArrayFromImage(roi.mask), sitk.GetArrayFromImage(expected)
        )


def test_roi_from_a_received_manual_segment_stays_manual(case: Case) -> None:
    received = Dataset()
    received.SegmentAlgorithmType = "MANUAL"
    rois = {side: replace(roi, source="seg") for side, roi in case.rois.items()}
    seg = build_segmentation(
        case.series, rois, DEVICE, series_number=9001, source_segments={Side.LEFT: received}
    )
    left, right = (seg.get_segment_description(n) for n in (1, 2))
    assert left.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.MANUAL
    assert "SegmentationAlgorithmIdentificationSequence" not in left
    assert "received SEG" in left.SegmentDescription
    # Unknown provenance: this software chose and placed it.
    assert right.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC
    assert right.SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == DEVICE.name


def test_one_hip_gives_one_segment_numbered_one(case: Case) -> None:
    seg = build_segmentation(
        case.series, {Side.RIGHT: case.rois[Side.RIGHT]}, DEVICE, series_number=9001
    )
    assert segment_numbers_by_side(seg) == {"R": 1}


def test_a_mask_off_the_series_grid_is_refused(case: Case) -> None:
    mask = sitk.Image(case.rois[Side.LEFT].mask)
    mask.SetOrigin(tuple(v + 1.0 for v in mask.GetOrigin()))
    with pytest.raises(OutputError, match="not on the grid"):
        build_segmentation(
            case.series,
            {Side.LEFT: HipROI(Side.LEFT, mask, "auto", "shifted")},
            DEVICE,
            series_number=1,
        )


def test_no_roi_is_refused(case: Case) -> None:
    with pytest.raises(OutputError, match="no ROI"):
        build_segmentation(case.series, {}, DEVICE, series_number=1)


def test_enhanced_mr_source_round_trips_by_source_frame(tmp_path: Path) -> None:
    synthetic = make_series(SeriesSpec(n_slices=8, rows=48, cols=48))
    series = load_series([make_enhanced(synthetic)])  # frames stored out of order
    array = np.zeros(sitk.GetArrayFromImage(series.image).shape, dtype=bool)
    array[2:5, 10:30, 5:20] = True
    roi = HipROI(Side.LEFT, _mask(series, array), "auto", "box")
    seg = build_segmentation(series, {Side.LEFT: roi}, DEVICE, series_number=3)
    path = tmp_path / "seg.dcm"
    seg.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    back = hd.seg.segread(path)
    frames = [f for f in series.frame_numbers if f is not None]
    pixels = back.get_pixels_by_source_frame(
        source_sop_instance_uid=series.sop_instance_uids[0],
        source_frame_numbers=frames,
        segment_numbers=[1],
        assert_missing_frames_are_empty=True,
    )
    np.testing.assert_array_equal(pixels[..., 0] > 0, array)


def test_same_uids_and_time_give_the_same_bytes(case: Case) -> None:
    def encoded() -> bytes:
        seg = build_segmentation(
            case.series,
            case.rois,
            DEVICE,
            series_number=9001,
            series_instance_uid="1.2.826.0.1.3680043.8.498.1",
            sop_instance_uid="1.2.826.0.1.3680043.8.498.2",
            content_datetime=datetime(2025, 1, 2, 3, 4, 5),
        )
        buffer = io.BytesIO()
        seg.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()

    assert encoded() == encoded()
