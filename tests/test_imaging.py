"""Series loading, geometry checks, pixel decoding and preprocessing (model_bundle.imaging)."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
import pytest
import SimpleITK as sitk
from dicom_factory import (
    CORONAL,
    SeriesSpec,
    SyntheticSeries,
    decode_with_pillow,
    ds_values,
    make_enhanced,
    make_series,
    mr_stack_with_pixels_of,
    recode,
    rotate_orientation,
    stack_of,
    write_datasets,
)
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels.decoders.base import RLELosslessDecoder
from pydicom.pixels.utils import pixel_array
from pydicom.uid import (
    JPEG2000,
    MPEG2MPML,
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)

import onfh_dlr
from model_bundle import LoadedSeries, load_series, resample_isotropic, resample_labels, zscore
from onfh_dlr.errors import (
    ConstantImageError,
    DuplicateSliceError,
    ImageSizeError,
    InconsistentSlicesError,
    MissingAttributeError,
    MissingDecoderError,
    MissingGeometryError,
    MissingSliceError,
    MixedOrientationError,
    ModalityError,
    MultipleSeriesError,
    SegmentationError,
    SeriesError,
    SeriesNotFoundError,
    SkewedStackError,
    TooFewSlicesError,
    UnevenSpacingError,
    UnreadableFileError,
    UnsupportedPixelDataError,
)

FloatArray = npt.NDArray[np.float64]

OBLIQUE = rotate_orientation(CORONAL, ("z", 7.0), ("x", -4.0), ("y", 3.0))


# --- helpers -----------------------------------------------------------------------------


def load_from_directory(datasets: list[Dataset], directory: Path, **kwargs: Any) -> LoadedSeries:
    write_datasets(datasets, directory)
    return load_series(directory, **kwargs)


def voxels(image: sitk.Image) -> FloatArray:
    """The image as a numpy array, (slice, row, column)."""
    return sitk.GetArrayFromImage(image).astype(np.float64)


def weighted_centre(image: sitk.Image, background: float) -> FloatArray:
    """Intensity-weighted centroid above ``background``, in patient coordinates (mm).

    The index-to-patient mapping is affine, so the centroid of the indices maps to the
    centroid in patient space: this checks origin, spacing and direction at once.
    """
    weights = voxels(image) - background
    k, r, c = (float((weights * i).sum() / weights.sum()) for i in np.indices(weights.shape))
    return np.array(image.TransformContinuousIndexToPhysicalPoint((c, r, k)))


def spacing_of(image: sitk.Image) -> FloatArray:
    return np.array(image.GetSpacing(), dtype=np.float64)


def grid_centre(image: sitk.Image) -> FloatArray:
    middle = [(n - 1) / 2 for n in image.GetSize()]
    return np.array(image.TransformContinuousIndexToPhysicalPoint(middle))


def in_position_order(series: SyntheticSeries) -> list[Dataset]:
    """Deep copies of the series' datasets, sorted by position along the normal."""
    by_uid = {str(ds.SOPInstanceUID): ds for ds in series.datasets}
    return [copy.deepcopy(by_uid[uid]) for uid in series.sop_uids_in_order]


@pytest.fixture
def series() -> SyntheticSeries:
    return make_series()


# --- ordering, rescale, spacing, geometry ------------------------------------------------


def test_slices_are_ordered_by_position_not_by_file_order_or_instance_number(
    series: SyntheticSeries, tmp_path: Path
) -> None:
    file_order = [str(ds.SOPInstanceUID) for ds in series.datasets]
    instance_numbers = [int(ds.InstanceNumber) for ds in in_position_order(series)]
    assert file_order != series.sop_uids_in_order  # the test would prove nothing otherwise
    assert instance_numbers != sorted(instance_numbers)

    loaded = load_from_directory(series.datasets, tmp_path)

    assert loaded.image.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_array_equal(voxels(loaded.image), series.values)
    assert loaded.sop_instance_uids == tuple(series.sop_uids_in_order)
    assert [str(ds.SOPInstanceUID) for ds in loaded.datasets] == series.sop_uids_in_order
    assert loaded.frame_numbers == (None,) * series.spec.n_slices
    assert loaded.slice_count == series.spec.n_slices
    assert (loaded.study_instance_uid, loaded.series_instance_uid) == (
        series.study_uid,
        series.series_uid,
    )
    assert loaded.frame_of_reference_uid == series.frame_of_reference_uid


def test_rescale_slope_and_intercept_are_applied_as_float(tmp_path: Path) -> None:
    series = make_series(SeriesSpec(slope=2.5, intercept=-300.5))

    loaded = load_from_directory(series.datasets, tmp_path)

    expected = series.stored * 2.5 - 300.5
    np.testing.assert_array_equal(voxels(loaded.image), expected.astype(np.float32))
    assert voxels(loaded.image).min() < 0 < voxels(loaded.image).max()


def test_rescale_may_differ_between_slices(series: SyntheticSeries, tmp_path: Path) -> None:
    datasets = in_position_order(series)
    datasets[3].RescaleSlope, datasets[3].RescaleIntercept = "2", "-5"

    loaded = load_from_directory(datasets, tmp_path)

    expected = series.values.copy()
    expected[3] = series.stored[3] * 2.0 - 5.0
    np.testing.assert_array_equal(voxels(loaded.image), expected)


def test_slice_spacing_is_measured_from_positions_not_taken_from_slice_thickness(
    tmp_path: Path,
) -> None:
    series = make_series(SeriesSpec(slice_spacing=3.3, slice_thickness=2.0))

    loaded = load_from_directory(series.datasets, tmp_path)

    # ITK order: (between columns, between rows, between slices).
    np.testing.assert_allclose(spacing_of(loaded.image), [0.7, 0.8, 3.3], atol=1e-9)
    assert loaded.notes == ()


def test_disagreeing_spacing_between_slices_is_only_noted(tmp_path: Path) -> None:
    series = make_series(SeriesSpec(slice_spacing=3.0, spacing_between_slices=4.0))

    loaded = load_from_directory(series.datasets, tmp_path)

    assert loaded.image.GetSpacing()[2] == pytest.approx(3.0)
    assert len(loaded.notes) == 1
    assert "Spacing Between Slices 4" in loaded.notes[0]
    assert series.series_uid in loaded.notes[0]


def test_agreeing_spacing_between_slices_gives_no_note(tmp_path: Path) -> None:
    series = make_series(SeriesSpec(slice_spacing=3.0, spacing_between_slices=3.0))

    assert load_from_directory(series.datasets, tmp_path).notes == ()


@pytest.mark.parametrize("orientation", [CORONAL, OBLIQUE], ids=["coronal", "oblique"])
def test_origin_direction_and_spacing_come_from_the_sorted_stack(
    orientation: tuple[float, ...], tmp_path: Path
) -> None:
    series = make_series(SeriesSpec(orientation=orientation))

    image = load_from_directory(series.datasets, tmp_path).image

    np.testing.assert_allclose(image.GetOrigin(), series.positions[0], atol=1e-9)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(direction[:, 0], series.row_cosine, atol=1e-9)
    np.testing.assert_allclose(direction[:, 1], series.col_cosine, atol=1e-9)
    np.testing.assert_allclose(direction[:, 2], series.normal, atol=1e-9)
    np.testing.assert_allclose(spacing_of(image), [0.7, 0.8, 3.0], atol=1e-9)
    # The last slice lands where its Image Position (Patient) says.
    last = image.TransformIndexToPhysicalPoint((0, 0, series.spec.n_slices - 1))
    np.testing.assert_allclose(last, series.positions[-1], atol=1e-6)


@pytest.mark.parametrize(
    "orientation",
    [CORONAL, OBLIQUE, rotate_orientation(CORONAL, ("x", 180.0))],
    ids=["coronal", "oblique", "coronal-normal-reversed"],
)
def test_blob_centre_maps_to_its_patient_coordinate(
    orientation: tuple[float, ...], tmp_path: Path
) -> None:
    series = make_series(SeriesSpec(orientation=orientation))

    loaded = load_from_directory(series.datasets, tmp_path)

    centre = weighted_centre(loaded.image, series.spec.background)
    np.testing.assert_allclose(centre, series.spec.blob_centre, atol=0.01)
    # And the brightest voxel is the one nearest to the blob centre.
    peak = np.unravel_index(np.argmax(voxels(loaded.image)), loaded.image.GetSize()[::-1])
    peak_point = loaded.image.TransformIndexToPhysicalPoint([int(i) for i in peak[::-1]])
    assert np.linalg.norm(np.subtract(peak_point, series.spec.blob_centre)) < 2.0


# --- Enhanced MR (multi-frame) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("per_frame_orientation", "per_frame_rescale"),
    [(False, False), (True, False), (False, True), (True, True)],
    ids=["all-shared", "orientation-per-frame", "rescale-per-frame", "both-per-frame"],
)
def test_enhanced_multiframe_loads_like_the_single_frame_series(
    per_frame_orientation: bool, per_frame_rescale: bool, tmp_path: Path
) -> None:
    series = make_series(SeriesSpec(orientation=OBLIQUE, slope=2.0, intercept=-10.0))
    enhanced = make_enhanced(
        series, per_frame_orientation=per_frame_orientation, per_frame_rescale=per_frame_rescale
    )
    path = write_datasets([enhanced], tmp_path)[0]

    single = load_series(series.datasets)
    multi = load_series(path)

    np.testing.assert_array_equal(voxels(multi.image), voxels(single.image))
    np.testing.assert_allclose(multi.image.GetOrigin(), single.image.GetOrigin(), atol=1e-9)
    np.testing.assert_allclose(multi.image.GetSpacing(), single.image.GetSpacing(), atol=1e-9)
    np.testing.assert_allclose(multi.image.GetDirection(), single.image.GetDirection(), atol=1e-12)
    assert multi.sop_instance_uids == (str(enhanced.SOPInstanceUID),) * series.spec.n_slices
    # Frame f holds slice InStackPositionNumber - 1, so slice k is frame (that f) + 1.
    stack_position = [
        int(item.FrameContentSequence[0].InStackPositionNumber)
        for item in enhanced.PerFrameFunctionalGroupsSequence
    ]
    expected_frames = tuple(stack_position.index(k + 1) + 1 for k in range(len(stack_position)))
    assert multi.frame_numbers == expected_frames
    assert len(multi.datasets) == 1 and "PixelData" not in multi.datasets[0]


def test_enhanced_frame_without_a_position_is_refused(series: SyntheticSeries) -> None:
    enhanced = make_enhanced(series)
    del enhanced.PerFrameFunctionalGroupsSequence[4].PlanePositionSequence

    with pytest.raises(MissingGeometryError, match="frame 5 has no ImagePositionPatient"):
        load_series([enhanced])


def test_enhanced_frame_count_disagreeing_with_functional_groups_is_refused(
    series: SyntheticSeries,
) -> None:
    enhanced = make_enhanced(series)
    enhanced.NumberOfFrames = series.spec.n_slices + 1

    with pytest.raises(MissingGeometryError, match="Per-frame Functional Groups"):
        load_series([enhanced])


# --- sources: datasets, directories, several series --------------------------------------


def test_in_memory_datasets_load_like_files_and_are_left_untouched(
    series: SyntheticSeries, tmp_path: Path
) -> None:
    from_memory = load_series(series.datasets)
    from_files = load_from_directory(series.datasets, tmp_path)

    np.testing.assert_array_equal(voxels(from_memory.image), voxels(from_files.image))
    assert from_memory.sop_instance_uids == from_files.sop_instance_uids
    assert all("PixelData" in ds for ds in series.datasets)
    assert all("PixelData" not in ds for ds in from_memory.datasets)
    assert not any(h is ds for h in from_memory.datasets for ds in series.datasets)


def test_directory_skips_non_dicom_files_dicomdir_non_images_and_subdirectories(
    series: SyntheticSeries, tmp_path: Path
) -> None:
    write_datasets(series.datasets, tmp_path)
    (tmp_path / "README.txt").write_text("not DICOM\n")
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    shutil.copy(get_testdata_file("DICOMDIR"), tmp_path / "DICOMDIR")  # type: ignore[arg-type]
    shutil.copy(get_testdata_file("test-SR.dcm"), tmp_path / "SR.dcm")  # type: ignore[arg-type]
    write_datasets(make_series(SeriesSpec(seed=5)).datasets, tmp_path / "other_series")

    loaded = load_series(str(tmp_path))

    assert loaded.sop_instance_uids == tuple(series.sop_uids_in_order)


def test_several_series_are_refused_unless_one_is_selected(tmp_path: Path) -> None:
    first, second = make_series(SeriesSpec(seed=1)), make_series(SeriesSpec(seed=2))
    write_datasets(first.datasets, tmp_path / "a")
    write_datasets(second.datasets, tmp_path / "b")
    for path in (tmp_path / "b").iterdir():
        path.rename(tmp_path / "a" / f"b_{path.name}")

    with pytest.raises(MultipleSeriesError) as info:
        load_series(tmp_path / "a")
    assert first.series_uid in str(info.value) and second.series_uid in str(info.value)

    loaded = load_series(tmp_path / "a", series_uid=second.series_uid)
    assert loaded.series_instance_uid == second.series_uid
    np.testing.assert_array_equal(voxels(loaded.image), second.values)

    with pytest.raises(SeriesNotFoundError, match=r"1\.2\.3\.4"):
        load_series(tmp_path / "a", series_uid="1.2.3.4")


def test_source_without_images_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SeriesNotFoundError):
        load_series(tmp_path)
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(SeriesNotFoundError):
        load_series(tmp_path)
    with pytest.raises(SeriesNotFoundError):
        load_series(tmp_path / "missing")
    with pytest.raises(SeriesNotFoundError):
        load_series([])


def test_a_single_named_file_that_is_not_dicom_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "image.dcm"
    path.write_text("not DICOM")

    with pytest.raises(UnreadableFileError, match="not a DICOM file"):
        load_series(path)


# --- refusals: each its own error class, each naming the series --------------------------

Mutation = Callable[[SyntheticSeries], list[Dataset]]


def _mixed_orientation(s: SyntheticSeries) -> list[Dataset]:
    ds = in_position_order(s)
    # A 1 degree turn about the normal (+y for coronal) keeps the position valid.
    ds[4].ImageOrientationPatient = ds_values(rotate_orientation(CORONAL, ("y", 1.0)))
    return ds


def _orientation_within_tolerance(s: SyntheticSeries) -> list[Dataset]:
    ds = in_position_order(s)
    ds[4].ImageOrientationPatient = ds_values(rotate_orientation(CORONAL, ("y", 0.03)))
    return ds


def _drop_middle_slice(s: SyntheticSeries) -> list[Dataset]:
    ds = in_position_order(s)
    del ds[5]
    return ds


def _duplicate_position(s: SyntheticSeries) -> list[Dataset]:
    ds = in_position_order(s)
    ds[5].ImagePositionPatient = ds[4].ImagePositionPatient
    return ds


def _same_instance_twice(s: SyntheticSeries) -> list[Dataset]:
    ds = in_position_order(s)
    return [*ds, copy.deepcopy(ds[3])]


def _uneven_spacing(s: SyntheticSeries) -> list[Dataset]:
    ds = in_position_order(s)
    ds[6].ImagePositionPatient = ds_values(s.positions[6] + 0.5 * s.normal)
    return ds


def _sheared(s: SyntheticSeries) -> list[Dataset]:
    ds = in_position_order(s)
    for k, d in enumerate(ds):
        d.ImagePositionPatient = ds_values(s.positions[k] + 0.5 * k * s.row_cosine)
    return ds


def _set_all(**values: Any) -> Mutation:
    def mutate(s: SyntheticSeries) -> list[Dataset]:
        ds = in_position_order(s)
        for d in ds:
            for keyword, value in values.items():
                setattr(d, keyword, value)
        return ds

    return mutate


def _set_one(index: int, **values: Any) -> Mutation:
    def mutate(s: SyntheticSeries) -> list[Dataset]:
        ds = in_position_order(s)
        for keyword, value in values.items():
            setattr(ds[index], keyword, value)
        return ds

    return mutate


def _delete_one(index: int, keyword: str) -> Mutation:
    def mutate(s: SyntheticSeries) -> list[Dataset]:
        ds = in_position_order(s)
        delattr(ds[index], keyword)
        return ds

    return mutate


def _ct_sop_class(s: SyntheticSeries) -> list[Dataset]:
    ds = in_position_order(s)
    for d in ds:
        d.SOPClassUID = d.file_meta.MediaStorageSOPClassUID = CTImageStorage
    return ds


def _first(n: int) -> Mutation:
    return lambda s: in_position_order(s)[:n]


def _matrix(rows: int, cols: int) -> Mutation:
    return lambda s: make_series(SeriesSpec(n_slices=3, rows=rows, cols=cols)).datasets


def _smaller_slice(s: SyntheticSeries) -> list[Dataset]:
    ds = in_position_order(s)
    ds[2].Rows = 48
    ds[2].PixelData = s.stored[2, :48].astype("<u2").tobytes()
    return ds


REFUSALS: list[tuple[str, Mutation, dict[str, Any], type[SeriesError]]] = [
    ("mixed-orientation", _mixed_orientation, {}, MixedOrientationError),
    ("missing-slice", _drop_middle_slice, {}, MissingSliceError),
    ("duplicated-position", _duplicate_position, {}, DuplicateSliceError),
    ("same-instance-twice", _same_instance_twice, {}, DuplicateSliceError),
    ("uneven-spacing", _uneven_spacing, {}, UnevenSpacingError),
    ("sheared-stack", _sheared, {}, SkewedStackError),
    ("ct-modality", _set_all(Modality="CT"), {}, ModalityError),
    ("ct-sop-class", _ct_sop_class, {}, ModalityError),
    (
        "colour",
        _set_all(SamplesPerPixel=3, PhotometricInterpretation="RGB"),
        {},
        UnsupportedPixelDataError,
    ),
    ("single-slice", _first(1), {}, TooFewSlicesError),
    ("two-slices", _first(2), {}, TooFewSlicesError),
    ("more-than-max-slices", lambda s: s.datasets, {"max_slices": 9}, ImageSizeError),
    ("rows-below-32", _matrix(16, 64), {}, ImageSizeError),
    ("rows-above-2048", _matrix(2049, 32), {}, ImageSizeError),
    ("zero-pixel-spacing", _set_all(PixelSpacing=["0", "0.7"]), {}, ImageSizeError),
    ("pixel-spacing-above-10mm", _set_all(PixelSpacing=["12", "12"]), {}, ImageSizeError),
    ("mixed-rows", _smaller_slice, {}, InconsistentSlicesError),
    ("mixed-pixel-spacing", _set_one(2, PixelSpacing=["0.9", "0.7"]), {}, InconsistentSlicesError),
    ("mixed-study", _set_one(2, StudyInstanceUID=generate_uid()), {}, InconsistentSlicesError),
    (
        "mixed-frame-of-reference",
        _set_one(2, FrameOfReferenceUID=generate_uid()),
        {},
        InconsistentSlicesError,
    ),
    ("no-position", _delete_one(3, "ImagePositionPatient"), {}, MissingGeometryError),
    ("no-orientation", _delete_one(3, "ImageOrientationPatient"), {}, MissingGeometryError),
    ("no-pixel-spacing", _delete_one(3, "PixelSpacing"), {}, MissingGeometryError),
    ("no-frame-of-reference", _delete_one(3, "FrameOfReferenceUID"), {}, MissingGeometryError),
    (
        "non-orthogonal-orientation",
        _set_all(ImageOrientationPatient=["1", "0", "0", "0.1", "0", "-0.995"]),
        {},
        MissingGeometryError,
    ),
    ("no-study-uid", _delete_one(3, "StudyInstanceUID"), {}, MissingAttributeError),
]


@pytest.mark.parametrize(
    ("mutate", "kwargs", "error"),
    [pytest.param(m, k, e, id=name) for name, m, k, e in REFUSALS],
)
def test_unusable_series_is_refused_with_its_own_error(
    series: SyntheticSeries,
    tmp_path: Path,
    mutate: Mutation,
    kwargs: dict[str, Any],
    error: type[SeriesError],
) -> None:
    datasets = mutate(series)
    series_uid = str(datasets[0].SeriesInstanceUID)

    with pytest.raises(SeriesError) as info:
        load_from_directory(datasets, tmp_path, **kwargs)

    assert type(info.value) is error
    assert series_uid in str(info.value)


def test_orientation_difference_within_tolerance_is_accepted(
    series: SyntheticSeries, tmp_path: Path
) -> None:
    loaded = load_from_directory(_orientation_within_tolerance(series), tmp_path)

    assert loaded.slice_count == series.spec.n_slices


def test_every_refusal_class_is_a_series_error_exported_by_onfh_dlr() -> None:
    classes = {error for *_, error in REFUSALS} | {
        UnreadableFileError,
        MissingDecoderError,
        SeriesNotFoundError,
        MultipleSeriesError,
        ConstantImageError,
    }
    assert len(classes) == 17
    for cls in classes:
        assert issubclass(cls, SeriesError) and cls is not SeriesError
        assert getattr(onfh_dlr, cls.__name__) is cls
        assert cls.__name__ in onfh_dlr.__all__


# --- unreadable files and missing decoders -----------------------------------------------


def test_file_truncated_inside_its_pixel_data_is_unreadable(
    series: SyntheticSeries, tmp_path: Path
) -> None:
    paths = write_datasets(series.datasets, tmp_path)
    paths[3].write_bytes(paths[3].read_bytes()[:-1000])

    with pytest.raises(UnreadableFileError, match=paths[3].name) as info:
        load_series(tmp_path)
    assert series.series_uid in str(info.value)


def test_bundled_truncated_mr_file_is_unreadable(tmp_path: Path) -> None:
    truncated = pydicom.dcmread(get_testdata_file("MR_truncated.dcm"))  # type: ignore[arg-type]

    with pytest.raises(UnreadableFileError, match="cannot be decoded"):
        load_from_directory(stack_of(truncated), tmp_path)


def test_damaged_dicom_file_is_unreadable(series: SyntheticSeries, tmp_path: Path) -> None:
    write_datasets(series.datasets, tmp_path)
    # Valid preamble and a sequence that ends mid-item: pydicom cannot parse it.
    broken = (
        b"\0" * 128
        + b"DICM"
        + b"\x02\x00\x00\x00UL\x04\x00\x1e\x00\x00\x00"
        + b"\x02\x00\x10\x00UI\x14\x00"
        + b"1.2.840.10008.1.2.1\x00"
        + b"\x08\x00\x05\x00SQ\x00\x00\xff\xff\xff\xff\xfe\xff\x00\xe0\x10\x00\x00\x00"
    )
    (tmp_path / "broken.dcm").write_bytes(broken)

    with pytest.raises(UnreadableFileError, match=r"broken\.dcm"):
        load_series(tmp_path)


def test_transfer_syntax_without_any_decoder_is_a_missing_decoder(
    series: SyntheticSeries, tmp_path: Path
) -> None:
    datasets = in_position_order(series)
    for ds in datasets:
        # A video syntax pydicom knows but has no pixel-data decoder for.
        ds.file_meta.TransferSyntaxUID = MPEG2MPML
        ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 28])
        ds["PixelData"].VR = "OB"

    with pytest.raises(MissingDecoderError, match=r"MPEG2.*1\.2\.840\.10008\.1\.2\.4\.100") as info:
        load_from_directory(datasets, tmp_path)
    assert series.series_uid in str(info.value)


def test_uninstalled_decoder_plugin_is_a_missing_decoder(
    series: SyntheticSeries, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_datasets(recode(series.datasets, RLELossless), tmp_path)
    # What pydicom reports when neither its own RLE plugin nor pylibjpeg-rle can run.
    # (pydicom keeps a decoder's plugins in these two dicts; monkeypatch restores them.)
    monkeypatch.setattr(RLELosslessDecoder, "_available", {})
    monkeypatch.setattr(
        RLELosslessDecoder, "_unavailable", {"pylibjpeg": ("pylibjpeg", "pylibjpeg-rle")}
    )

    with pytest.raises(MissingDecoderError, match=r"RLE Lossless.*pylibjpeg-rle"):
        load_series(tmp_path)


# --- decoding: pydicom's bundled MR files ------------------------------------------------


@pytest.fixture(scope="module")
def mr_small_pixels() -> npt.NDArray[Any]:
    """The uncompressed reference pixels of pydicom's MR_small test image."""
    return pixel_array(pydicom.dcmread(get_testdata_file("MR_small.dcm")), raw=True)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("filename", "transfer_syntax"),
    [
        ("MR_small.dcm", ExplicitVRLittleEndian),
        ("MR_small_implicit.dcm", ImplicitVRLittleEndian),
        ("MR_small_bigendian.dcm", ExplicitVRBigEndian),
        ("MR_small_RLE.dcm", RLELossless),
        ("MR_small_jpeg_ls_lossless.dcm", JPEGLSLossless),
        ("MR_small_jp2klossless.dcm", JPEG2000Lossless),
    ],
)
def test_bundled_mr_file_decodes_to_the_uncompressed_pixels(
    filename: str,
    transfer_syntax: UID,
    mr_small_pixels: npt.NDArray[Any],
    tmp_path: Path,
) -> None:
    source = pydicom.dcmread(get_testdata_file(filename))  # type: ignore[arg-type]
    assert source.file_meta.TransferSyntaxUID == transfer_syntax

    loaded = load_from_directory(stack_of(source), tmp_path)

    assert loaded.datasets[0].file_meta.TransferSyntaxUID == transfer_syntax
    volume = voxels(loaded.image)
    assert volume.shape == (3, 64, 64)
    for k in range(3):
        np.testing.assert_array_equal(volume[k], mr_small_pixels)


def test_bundled_jpeg_extended_12bit_stream_decodes_to_pydicoms_reference_values(
    tmp_path: Path,
) -> None:
    # No MR example exists for JPEG Extended; the NM codestream is carried by MR headers.
    # Reference values from pydicom's own test suite (JPGE_16_12_1_0_1F_M2).
    source = pydicom.dcmread(get_testdata_file("JPGExtended.dcm"))  # type: ignore[arg-type]
    assert source.file_meta.TransferSyntaxUID == JPEGExtended12Bit

    loaded = load_from_directory(mr_stack_with_pixels_of(source), tmp_path)

    volume = voxels(loaded.image)
    assert volume.shape == (3, 1024, 256)
    assert (volume[:, 420, 140] == 244).all()
    assert (volume[:, 230, 120] == 95).all()


# --- decoding: our own series, re-encoded ------------------------------------------------


@pytest.mark.parametrize(
    ("transfer_syntax", "options"),
    [
        pytest.param(ImplicitVRLittleEndian, {}, id="implicit-little"),
        pytest.param(DeflatedExplicitVRLittleEndian, {}, id="deflated"),
        pytest.param(RLELossless, {}, id="rle"),
        pytest.param(JPEGLSLossless, {}, id="jpeg-ls-lossless"),
        pytest.param(JPEG2000Lossless, {}, id="jpeg2000-lossless"),
        pytest.param(JPEGLosslessSV1, {}, id="jpeg-lossless-sv1"),
        pytest.param(JPEGLossless, {"predictor": 7}, id="jpeg-lossless-p14-predictor7"),
    ],
)
def test_lossless_encodings_decode_exactly(
    transfer_syntax: UID, options: dict[str, Any], tmp_path: Path
) -> None:
    series = make_series(SeriesSpec(slope=2.0, intercept=-7.0))

    loaded = load_from_directory(recode(series.datasets, transfer_syntax, **options), tmp_path)

    assert loaded.datasets[0].file_meta.TransferSyntaxUID == transfer_syntax
    np.testing.assert_array_equal(voxels(loaded.image), series.values)


def test_deflated_files_really_are_deflated(series: SyntheticSeries, tmp_path: Path) -> None:
    plain = write_datasets(series.datasets, tmp_path / "plain")
    deflated = write_datasets(
        recode(series.datasets, DeflatedExplicitVRLittleEndian), tmp_path / "z"
    )

    assert sum(p.stat().st_size for p in deflated) < 0.5 * sum(p.stat().st_size for p in plain)


def test_jpeg_ls_near_lossless_stays_within_its_error_bound(
    series: SyntheticSeries, tmp_path: Path
) -> None:
    loaded = load_from_directory(recode(series.datasets, JPEGLSNearLossless, jls_error=3), tmp_path)

    assert loaded.datasets[0].file_meta.TransferSyntaxUID == JPEGLSNearLossless
    error = np.abs(voxels(loaded.image) - series.values)
    assert error.max() <= 3


def test_lossy_jpeg_2000_decodes_close_to_the_original(
    series: SyntheticSeries, tmp_path: Path
) -> None:
    loaded = load_from_directory(recode(series.datasets, JPEG2000, j2k_psnr=[60.0]), tmp_path)

    assert loaded.datasets[0].file_meta.TransferSyntaxUID == JPEG2000
    error = voxels(loaded.image) - series.values
    peak = (1 << series.spec.bits_stored) - 1
    psnr = 10 * np.log10(peak**2 / np.mean(error**2))
    assert psnr > 50


def test_jpeg_baseline_8bit_decodes_close_to_the_original_and_to_pillow(tmp_path: Path) -> None:
    pytest.importorskip("PIL", reason="Pillow encodes the baseline JPEG test stream")
    series = make_series(SeriesSpec(bits_stored=8, background=20, amplitude=200))
    encoded = recode(series.datasets, JPEGBaseline8Bit, quality=92)

    loaded = load_from_directory(encoded, tmp_path)

    assert loaded.datasets[0].file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    volume = voxels(loaded.image)
    error = np.abs(volume - series.values)
    assert error.mean() < 1.5 and error.max() <= 12
    by_uid = {str(ds.SOPInstanceUID): ds for ds in encoded}
    for k, uid in enumerate(loaded.sop_instance_uids):
        stream = next(generate_frames(by_uid[uid].PixelData, number_of_frames=1))
        # Two decoders of one stream differ only by IDCT rounding.
        assert np.abs(volume[k] - decode_with_pillow(stream)).max() <= 2


# --- resampling and normalisation --------------------------------------------------------


@pytest.fixture
def oblique_image() -> tuple[SyntheticSeries, sitk.Image]:
    series = make_series(SeriesSpec(orientation=OBLIQUE))
    return series, load_series(series.datasets).image


def test_resample_isotropic_keeps_centre_extent_direction_and_blob_position(
    oblique_image: tuple[SyntheticSeries, sitk.Image],
) -> None:
    series, image = oblique_image

    resampled = resample_isotropic(image, 1.0)

    assert resampled.GetPixelID() == sitk.sitkFloat32
    assert resampled.GetSpacing() == (1.0, 1.0, 1.0)
    np.testing.assert_allclose(resampled.GetDirection(), image.GetDirection(), atol=1e-12)
    np.testing.assert_allclose(grid_centre(resampled), grid_centre(image), atol=1e-9)
    old_extent = np.multiply(image.GetSize(), image.GetSpacing())
    new_extent = np.multiply(resampled.GetSize(), resampled.GetSpacing())
    assert np.all(np.abs(new_extent - old_extent) <= 1.0)  # at most half a voxel per side
    assert resampled.GetSize() == (45, 51, 30)
    np.testing.assert_allclose(
        weighted_centre(resampled, series.spec.background), series.spec.blob_centre, atol=0.02
    )


def test_resample_isotropic_with_nearest_keeps_labels_and_pixel_type(
    oblique_image: tuple[SyntheticSeries, sitk.Image],
) -> None:
    series, image = oblique_image
    mask = sitk.Cast(image > series.spec.background + series.spec.amplitude / 2, sitk.sitkUInt8)

    resampled = resample_isotropic(mask, 1.0, interpolator="nearest")

    assert resampled.GetPixelID() == sitk.sitkUInt8
    assert set(np.unique(sitk.GetArrayViewFromImage(resampled))) == {0, 1}


def test_resample_labels_stays_binary_on_the_reference_grid_and_keeps_volume(
    oblique_image: tuple[SyntheticSeries, sitk.Image],
) -> None:
    series, image = oblique_image
    half_max = series.spec.background + series.spec.amplitude / 2
    mask = sitk.Cast(image > half_max, sitk.sitkUInt8)
    reference = resample_isotropic(image, 1.0)

    labels = resample_labels(mask, reference)

    assert labels.GetPixelID() == sitk.sitkUInt8
    assert labels.GetSize() == reference.GetSize()
    np.testing.assert_allclose(labels.GetOrigin(), reference.GetOrigin(), atol=1e-12)
    assert set(np.unique(sitk.GetArrayViewFromImage(labels))) == {0, 1}
    volume_before = np.count_nonzero(sitk.GetArrayViewFromImage(mask)) * np.prod(mask.GetSpacing())
    volume_after = float(np.count_nonzero(sitk.GetArrayViewFromImage(labels)))
    # Half-maximum sphere: radius sigma * sqrt(2 ln 2).
    radius = series.spec.blob_sigma * np.sqrt(2 * np.log(2))
    assert volume_after == pytest.approx(volume_before, rel=0.1)
    assert volume_after == pytest.approx(4 / 3 * np.pi * radius**3, rel=0.15)


def test_resample_isotropic_rejects_bad_arguments(
    oblique_image: tuple[SyntheticSeries, sitk.Image],
) -> None:
    _, image = oblique_image
    with pytest.raises(ValueError, match="spacing"):
        resample_isotropic(image, 0.0)
    with pytest.raises(ValueError, match="interpolator"):
        resample_isotropic(image, 1.0, interpolator="cubic")  # type: ignore[arg-type]


def test_zscore_gives_mean_zero_and_std_one_over_the_image(
    oblique_image: tuple[SyntheticSeries, sitk.Image],
) -> None:
    _, image = oblique_image

    normalised = zscore(image)

    values = voxels(normalised)
    assert normalised.GetPixelID() == sitk.sitkFloat32
    assert values.mean() == pytest.approx(0.0, abs=1e-6)
    assert values.std() == pytest.approx(1.0, abs=1e-6)
    assert normalised.GetOrigin() == image.GetOrigin()
    assert normalised.GetDirection() == image.GetDirection()


def test_zscore_with_a_mask_standardises_the_voxels_inside_it(
    oblique_image: tuple[SyntheticSeries, sitk.Image],
) -> None:
    series, image = oblique_image
    mask = sitk.Cast(image > series.spec.background + 100, sitk.sitkUInt8)

    normalised = zscore(image, mask)

    inside = voxels(normalised)[sitk.GetArrayViewFromImage(mask) != 0]
    assert inside.mean() == pytest.approx(0.0, abs=1e-6)
    assert inside.std() == pytest.approx(1.0, abs=1e-6)
    assert voxels(normalised).mean() < -0.5  # the darker background is below the ROI mean


def test_zscore_of_constant_intensities_is_refused(
    oblique_image: tuple[SyntheticSeries, sitk.Image],
) -> None:
    _, image = oblique_image
    flat = image * 0 + 5.0
    with pytest.raises(ConstantImageError):
        zscore(flat)

    corner = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    corner.CopyInformation(image)
    corner[0:3, 0:3, 0:2] = 1  # background only: constant inside the mask
    with pytest.raises(ConstantImageError):
        zscore(image, corner)


def test_zscore_rejects_empty_or_misaligned_masks(
    oblique_image: tuple[SyntheticSeries, sitk.Image],
) -> None:
    _, image = oblique_image
    empty = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(image)
    with pytest.raises(SegmentationError, match="no voxels"):
        zscore(image, empty)

    with pytest.raises(ValueError, match="grid"):
        zscore(image, resample_isotropic(empty, 1.0, interpolator="nearest"))
