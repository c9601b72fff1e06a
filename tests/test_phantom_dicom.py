"""The phantom's DICOM writer: valid MR series and SEG, exact and deterministic."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from dicom_checks import dciodvfy_errors
from numpy.typing import NDArray
from pydicom.uid import UID

from onfh_dlr.errors import PhantomError
from phantom.case import (
    HipTruth,
    PatientInfo,
    PhantomStudy,
    ScannerProfile,
    Segment,
    SeriesGeometry,
    Side,
)
from phantom.dicom_writer import write_segmentation, write_series

N_SLICES, ROWS, COLUMNS = 12, 96, 128

PHILIPS = ScannerProfile(
    manufacturer="Philips Medical Systems",
    model_name="Ingenia",
    software_versions="5.7.1",
    magnetic_field_strength=3.0,
    series_description="COR T2 SPAIR",
    protocol_name="COR T2 SPAIR",
    sequence_name="TSE",
    scan_options=("FS",),
    scanning_sequence=("SE",),
    sequence_variant=("SK",),
    receive_coil_name="dS Torso",
    station_name="MR3T01",
    institution_name="Phantom General Hospital",
    repetition_time=3500.0,
    echo_time=70.0,
    inversion_time=None,
    echo_train_length=15,
    flip_angle=90.0,
    number_of_averages=2.0,
    pixel_bandwidth=250.0,
    imaging_frequency=127.768,
    rescale=(1.84, 0.0),
    bits_stored=12,
)

SIEMENS = dataclasses.replace(
    PHILIPS,
    manufacturer="SIEMENS",
    model_name="Skyra",
    software_versions="syngo MR E11",
    series_description="t2_tirm_cor",
    protocol_name="t2_tirm_cor",
    sequence_name="*tir2d1_15",
    scanning_sequence=("SE", "IR"),
    sequence_variant=("SK", "SP", "MP"),
    scan_options=(),  # Siemens STIR: Type 2, sent empty
    inversion_time=220.0,
    receive_coil_name="Body",
    rescale=None,
    bits_stored=16,
)


def _geometry() -> SeriesGeometry:
    """Coronal slices, rotated 2 degrees about the vertical and 1 about the AP axis."""
    a, b = np.deg2rad(2.0), np.deg2rad(1.0)
    rot_z = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rot_y = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rot = rot_y @ rot_z
    row_dir = rot @ np.array([1.0, 0.0, 0.0])
    col_dir = rot @ np.array([0.0, 0.0, -1.0])
    return SeriesGeometry(
        rows=ROWS,
        columns=COLUMNS,
        n_slices=N_SLICES,
        pixel_spacing=(0.9, 0.9),
        slice_thickness=4.0,
        slice_spacing=4.4,
        row_direction=row_dir,
        column_direction=col_dir,
        origin=np.array([-57.15, -30.0, 45.3]),
    )


def _sphere(
    geometry: SeriesGeometry, centre: NDArray[np.float64], radius: float
) -> NDArray[np.bool_]:
    """Voxels whose centres lie within ``radius`` mm of ``centre``."""
    index = np.moveaxis(np.indices(geometry.shape), 0, -1).astype(np.float64)
    points = geometry.index_to_patient(index)
    return np.asarray(np.linalg.norm(points - centre, axis=-1) <= radius)


def _hip(side: Side, centre: NDArray[np.float64], label: int) -> HipTruth:
    return HipTruth(
        side=side,
        label=label,
        stage="ARCO II" if label else "none",
        lesion_fraction=0.1 if label else 0.0,
        lesion_size_class="small" if label else "none",
        lesion_centre="fat-like" if label else "none",
        double_line=bool(label),
        band_contrast=0.5 if label else 0.0,
        marrow_oedema=False,
        effusion=False,
        subtle=False,
        benign_findings=(),
        head_centre=(float(centre[0]), float(centre[1]), float(centre[2])),
        head_radius=20.0,
    )


def _study(scanner: ScannerProfile, seed: int = 7) -> PhantomStudy:
    geometry = _geometry()
    rng = np.random.default_rng(seed)
    # Smooth random image: coarse noise upsampled by repetition, plus a gradient.
    coarse = rng.uniform(0.2, 1.0, size=(N_SLICES, ROWS // 8, COLUMNS // 8))
    image = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)
    image *= np.linspace(0.8, 1.0, COLUMNS)[None, None, :]
    stored = np.round(image * ((1 << scanner.bits_stored) - 1)).astype(np.uint16)

    mid = geometry.index_to_patient(np.array([(N_SLICES - 1) / 2, ROWS / 2, COLUMNS / 2]))
    left_centre = mid + 25.0 * geometry.row_direction  # patient left is +x
    right_centre = mid - 25.0 * geometry.row_direction
    left = _sphere(geometry, left_centre, 20.0)
    right = _sphere(geometry, right_centre, 20.0)
    lesion_centre = left_centre - 8.0 * geometry.column_direction  # superior part
    lesion = _sphere(geometry, lesion_centre, 7.0) & left
    patient = PatientInfo(
        patient_id="PHANTOM0001",
        patient_name="PHANTOM^ONE",
        birth_date="19800314",
        sex="M",
        age_years=44,
        weight_kg=81.5,
        study_instance_uid="1.2.826.0.1.3680043.8.498.1001",
        series_instance_uid="1.2.826.0.1.3680043.8.498.1001.1",
        frame_of_reference_uid="1.2.826.0.1.3680043.8.498.1001.2",
        accession_number="ACC0001",
        study_id="1",
        study_date="20240612",
        study_time="093015",
        study_description="MRI HIPS BILATERAL",
        series_number=3,
    )
    return PhantomStudy(
        patient=patient,
        scanner=scanner,
        geometry=geometry,
        stored=stored,
        segments=(
            Segment("Left femoral head", "femoral_head", "L", left),
            Segment("Right femoral head", "femoral_head", "R", right),
            Segment("Left femoral head necrotic lesion", "necrotic_lesion", "L", lesion),
        ),
        hips=(_hip("R", right_centre, 0), _hip("L", left_centre, 1)),
        seed=seed,
    )


@pytest.fixture(params=[PHILIPS, SIEMENS], ids=["philips-rescale", "siemens-no-rescale"])
def study(request: pytest.FixtureRequest) -> PhantomStudy:
    scanner: ScannerProfile = request.param
    return _study(scanner)


@pytest.fixture
def written(study: PhantomStudy, tmp_path: Path) -> tuple[PhantomStudy, list[Path]]:
    write_series(study, tmp_path / "series")
    return study, sorted((tmp_path / "series").glob("*.dcm"))


@pytest.fixture
def seg_path(study: PhantomStudy, tmp_path: Path) -> Path:
    images = write_series(study, tmp_path / "series")
    path = tmp_path / "seg" / "truth.dcm"
    write_segmentation(study, images, path)
    return path


def test_each_slice_is_written_as_numbered_file(written: tuple[PhantomStudy, list[Path]]) -> None:
    _, paths = written
    assert [p.name for p in paths] == [f"IM{k:04d}.dcm" for k in range(1, N_SLICES + 1)]


def test_every_slice_passes_dciodvfy_without_errors(
    written: tuple[PhantomStudy, list[Path]],
) -> None:
    _, paths = written
    errors = {p.name: dciodvfy_errors(p) for p in paths}
    assert not any(errors.values()), errors


def test_read_back_geometry_matches_series_geometry(
    written: tuple[PhantomStudy, list[Path]],
) -> None:
    study, paths = written
    g = study.geometry
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.SOPClassUID == pydicom.uid.MRImageStorage
        assert ds.InstanceNumber == k + 1
        np.testing.assert_allclose(
            [float(v) for v in ds.ImagePositionPatient], g.slice_position(k), atol=1e-6
        )
        np.testing.assert_allclose(
            [float(v) for v in ds.ImageOrientationPatient], g.image_orientation(), atol=1e-9
        )
        np.testing.assert_allclose([float(v) for v in ds.PixelSpacing], g.pixel_spacing)
        assert float(ds.SliceThickness) == pytest.approx(g.slice_thickness)
        assert float(ds.SpacingBetweenSlices) == pytest.approx(g.slice_spacing)
        assert float(ds.SliceLocation) == pytest.approx(float(g.slice_position(k) @ g.normal))
        assert (ds.Rows, ds.Columns) == (g.rows, g.columns)


def test_read_back_pixels_equal_stored_values(written: tuple[PhantomStudy, list[Path]]) -> None:
    study, paths = written
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        assert ds.BitsStored == study.scanner.bits_stored
        assert ds.HighBit == study.scanner.bits_stored - 1
        np.testing.assert_array_equal(ds.pixel_array, study.stored[k])


def test_rescale_tags_only_for_vendor_that_writes_them(
    written: tuple[PhantomStudy, list[Path]],
) -> None:
    study, paths = written
    ds = pydicom.dcmread(paths[0])
    if study.scanner.rescale is None:
        assert "RescaleSlope" not in ds
        assert "RescaleIntercept" not in ds
        assert "RescaleType" not in ds
    else:
        slope, intercept = study.scanner.rescale
        assert float(ds.RescaleSlope) == pytest.approx(slope)
        assert float(ds.RescaleIntercept) == pytest.approx(intercept)
        assert ds.RescaleType == "US"


def test_inversion_time_only_when_scanner_has_one(
    written: tuple[PhantomStudy, list[Path]],
) -> None:
    study, paths = written
    ds = pydicom.dcmread(paths[0])
    assert ("InversionTime" in ds) == (study.scanner.inversion_time is not None)


def test_window_covers_most_of_the_output_range(
    written: tuple[PhantomStudy, list[Path]],
) -> None:
    study, paths = written
    ds = pydicom.dcmread(paths[0])
    slope, intercept = study.scanner.rescale or (1.0, 0.0)
    values = study.stored.astype(np.float64) * slope + intercept
    lo = float(ds.WindowCenter) - float(ds.WindowWidth) / 2
    hi = float(ds.WindowCenter) + float(ds.WindowWidth) / 2
    inside = np.mean((values >= lo) & (values <= hi))
    assert inside > 0.95


def test_uids_are_valid_unique_and_taken_from_patient_info(
    written: tuple[PhantomStudy, list[Path]],
) -> None:
    study, paths = written
    datasets = [pydicom.dcmread(p) for p in paths]
    sop_uids = [ds.SOPInstanceUID for ds in datasets]
    assert len(set(sop_uids)) == len(sop_uids)
    for ds in datasets:
        assert UID(ds.SOPInstanceUID).is_valid
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.StudyInstanceUID == study.patient.study_instance_uid
        assert ds.SeriesInstanceUID == study.patient.series_instance_uid
        assert ds.FrameOfReferenceUID == study.patient.frame_of_reference_uid
        assert "Laterality" not in ds


def test_writing_twice_gives_byte_identical_files(study: PhantomStudy, tmp_path: Path) -> None:
    first = write_series(study, tmp_path / "a")
    write_series(study, tmp_path / "b")
    write_segmentation(study, first, tmp_path / "a" / "seg.dcm")
    write_segmentation(study, first, tmp_path / "b" / "seg.dcm")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_stored_value_beyond_bits_stored_is_rejected(tmp_path: Path) -> None:
    study = _study(PHILIPS)
    stored = study.stored.copy()
    stored[3, 10, 10] = 1 << PHILIPS.bits_stored
    with pytest.raises(PhantomError, match="bits stored"):
        write_series(dataclasses.replace(study, stored=stored), tmp_path)
    assert not list(tmp_path.glob("*.dcm"))


@pytest.mark.filterwarnings("ignore:The value length:UserWarning")  # pydicom warns, we raise
def test_header_value_too_long_for_its_vr_is_rejected(tmp_path: Path) -> None:
    scanner = dataclasses.replace(SIEMENS, receive_coil_name="Atlas SPEEDER Body")  # SH > 16
    with pytest.raises(PhantomError, match="ReceiveCoilName"):
        write_series(_study(scanner), tmp_path)


def test_multi_valued_software_versions_are_split(tmp_path: Path) -> None:
    scanner = dataclasses.replace(PHILIPS, software_versions="5.7.1\\5.7.1.2")
    write_series(_study(scanner), tmp_path)
    ds = pydicom.dcmread(tmp_path / "IM0001.dcm")
    assert list(ds.SoftwareVersions) == ["5.7.1", "5.7.1.2"]


def test_segmentation_passes_dciodvfy_without_errors(seg_path: Path) -> None:
    errors = dciodvfy_errors(seg_path)
    assert not errors, "\n".join(errors)


def test_segmentation_labels_in_order(study: PhantomStudy, seg_path: Path) -> None:
    seg = hd.seg.segread(seg_path)
    assert seg.SegmentationType == "BINARY"
    labels = [item.SegmentLabel for item in seg.SegmentSequence]
    assert labels == [s.label for s in study.segments]
    for number, segment in enumerate(study.segments, 1):
        assert seg.get_segment_numbers(segment_label=segment.label) == [number]


def test_segmentation_masks_round_trip(study: PhantomStudy, seg_path: Path) -> None:
    seg = hd.seg.segread(seg_path)
    images = sorted(
        (pydicom.dcmread(p) for p in (seg_path.parent.parent / "series").glob("*.dcm")),
        key=lambda ds: int(ds.InstanceNumber),
    )
    p = study.patient
    # Every slice is referenced, also those without any truth (omitted frames).
    assert sorted(seg.get_source_image_uids()) == sorted(
        (p.study_instance_uid, p.series_instance_uid, ds.SOPInstanceUID) for ds in images
    )
    masks = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[ds.SOPInstanceUID for ds in images],
        segment_numbers=list(range(1, len(study.segments) + 1)),
        assert_missing_frames_are_empty=True,
    )
    assert masks.shape == (N_SLICES, ROWS, COLUMNS, len(study.segments))
    for i, segment in enumerate(study.segments):
        np.testing.assert_array_equal(masks[..., i].astype(bool), segment.mask, segment.label)


def test_segmentation_volume_round_trips(study: PhantomStudy, seg_path: Path) -> None:
    seg = hd.seg.segread(seg_path)
    volume = seg.get_volume(combine_segments=False)
    g = study.geometry
    assert volume.spatial_shape[1:] == (ROWS, COLUMNS)
    np.testing.assert_allclose(volume.spacing, (g.slice_spacing, *g.pixel_spacing))
    # Empty frames are omitted and highdicom picks its own slice direction: map each
    # volume slice back to the series slice it lies on.
    n = volume.spatial_shape[0]
    corners = np.asarray(volume.affine) @ np.array([[j, 0, 0, 1] for j in range(n)]).T
    index = g.patient_to_index(corners[:3].T)
    np.testing.assert_allclose(index, np.round(index), atol=1e-6)
    np.testing.assert_allclose(index[:, 1:], 0.0, atol=1e-6)
    slices = np.round(index[:, 0]).astype(int)
    for i, segment in enumerate(study.segments):
        np.testing.assert_array_equal(volume.array[..., i].astype(bool), segment.mask[slices])
        outside = np.setdiff1d(np.arange(g.n_slices), slices)
        assert not segment.mask[outside].any()


def test_segmentation_references_the_source_series(study: PhantomStudy, seg_path: Path) -> None:
    seg = hd.seg.segread(seg_path)
    p = study.patient
    assert seg.StudyInstanceUID == p.study_instance_uid
    assert seg.FrameOfReferenceUID == p.frame_of_reference_uid
    assert seg.SeriesInstanceUID != p.series_instance_uid
    assert seg.SeriesNumber == p.series_number + 1000
    assert seg.SeriesDescription == "Phantom ground truth"
    assert seg.Manufacturer == "onfh-dlr phantom"
    assert [item.SeriesInstanceUID for item in seg.ReferencedSeriesSequence] == [
        p.series_instance_uid
    ]


def test_segments_carry_anatomy_and_laterality_codes(seg_path: Path) -> None:
    seg = hd.seg.segread(seg_path)
    left_head, right_head, lesion = seg.SegmentSequence
    assert left_head.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "123037004"
    assert left_head.SegmentedPropertyTypeCodeSequence[0].CodeValue == "2812003"
    assert right_head.SegmentedPropertyTypeCodeSequence[0].CodeValue == "2812003"
    for item, side in ((left_head, "7771000"), (right_head, "24028007")):
        (prop_type,) = item.SegmentedPropertyTypeCodeSequence
        assert prop_type.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == side
    assert lesion.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert lesion.SegmentedPropertyTypeCodeSequence[0].CodeValue == "6574001"
    region = lesion.AnatomicRegionSequence[0]
    assert region.CodeValue == "2812003"
    assert region.AnatomicRegionModifierSequence[0].CodeValue == "7771000"
    for item in (left_head, right_head, lesion):
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        assert item.SegmentAlgorithmName == "onfh-dlr phantom"
