"""Femoral-head ROIs from DICOM-SEG (model_bundle.imaging.seg_roi), on real phantom SEGs.

Every SEG here is a real object: the phantom's own, or one written with highdicom from
the phantom's MR datasets (other labels and codes, another grid, FRACTIONAL, one head
only), or a phantom SEG edited the way a broken sender would send it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pydicom
import pytest
import SimpleITK as sitk
from highdicom.sr.coding import CodedConcept
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from model_bundle.imaging import HipROI, LoadedSeries, Side, load_series
from model_bundle.imaging.seg_roi import _label_side, _normalise_label, rois_from_seg
from onfh_dlr.errors import (
    AmbiguousSegmentError,
    FemoralHeadNotFoundError,
    NotASegmentationError,
    SegmentationError,
    SegmentationGeometryError,
    SegmentationReferenceError,
)
from phantom.case import PhantomStudy
from phantom.dicom_writer import write_segmentation, write_series
from phantom.generator import generate_study

BoolArray = npt.NDArray[np.bool_]
CodeTuple = tuple[str, str, str]

TISSUE: CodeTuple = ("85756007", "SCT", "Tissue")
ANATOMICAL: CodeTuple = ("123037004", "SCT", "Anatomical Structure")
ABNORMAL: CodeTuple = ("49755003", "SCT", "Morphologically Abnormal Structure")
HEAD_OF_FEMUR: CodeTuple = ("2812003", "SCT", "Head of femur")
NECROSIS: CodeTuple = ("6574001", "SCT", "Necrosis")
LEFT: CodeTuple = ("7771000", "SCT", "Left")
RIGHT: CodeTuple = ("24028007", "SCT", "Right")


@dataclass(frozen=True)
class Case:
    """A written phantom study: truth, MR datasets, loaded series and phantom SEG."""

    study: PhantomStudy
    datasets: list[Dataset]
    series: LoadedSeries
    seg_path: Path
    directory: Path

    def head(self, side: str) -> BoolArray:
        return next(
            s.mask for s in self.study.segments if s.kind == "femoral_head" and s.side == side
        )

    def lesion(self, side: str) -> BoolArray:
        return next(
            s.mask for s in self.study.segments if s.kind == "necrotic_lesion" and s.side == side
        )


def _write_case(root: Path, seed: int, index: int, onfh: tuple[bool, bool]) -> Case:
    study = generate_study(seed, index, onfh)
    directory = root / f"case{index}"
    datasets = write_series(study, directory / "series")
    write_segmentation(study, datasets, directory / "seg.dcm")
    series = load_series(directory / "series")
    return Case(study, datasets, series, directory / "seg.dcm", directory)


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Case:
    """Right hip with ONFH: the phantom SEG has a right necrotic-lesion segment."""
    return _write_case(tmp_path_factory.mktemp("seg_roi"), 2024, 0, (True, False))


@pytest.fixture(scope="module")
def other_case(tmp_path_factory: pytest.TempPathFactory) -> Case:
    """A second patient (another series and frame of reference), both hips ONFH."""
    return _write_case(tmp_path_factory.mktemp("seg_roi_other"), 2024, 1, (True, True))


# --- helpers ----------------------------------------------------------------------------


def _concept(code: CodeTuple) -> CodedConcept:
    return CodedConcept(*code)


def _description(
    number: int,
    label: str,
    *,
    category: CodeTuple = TISSUE,
    prop_type: CodeTuple = TISSUE,
    type_side: CodeTuple | None = None,
    region: CodeTuple | None = None,
    region_side: CodeTuple | None = None,
) -> hd.seg.SegmentDescription:
    desc = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=label,
        segmented_property_category=_concept(category),
        segmented_property_type=_concept(prop_type),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        anatomic_regions=None if region is None else [_concept(region)],
    )
    if type_side is not None:
        item = desc.SegmentedPropertyTypeCodeSequence[0]
        item.SegmentedPropertyTypeModifierCodeSequence = [_concept(type_side)]
    if region_side is not None:
        desc.AnatomicRegionSequence[0].AnatomicRegionModifierSequence = [_concept(region_side)]
    return desc


def _segmentation(
    source_images: Sequence[Dataset],
    pixels: npt.NDArray[np.generic] | hd.Volume,
    descriptions: Sequence[hd.seg.SegmentDescription],
    *,
    kind: str = "BINARY",
) -> hd.seg.Segmentation:
    return hd.seg.Segmentation(
        source_images=source_images,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues(kind),
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=901,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="onfh-dlr tests",
        manufacturer_model_name="test_seg_roi",
        software_versions="0",
        device_serial_number="TEST",
    )


def _stack(*masks: BoolArray) -> npt.NDArray[np.uint8]:
    return np.stack(masks, axis=-1).astype(np.uint8)


def _array(roi: HipROI) -> BoolArray:
    return np.asarray(sitk.GetArrayFromImage(roi.mask)) > 0


def _dice(a: BoolArray, b: BoolArray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def _assert_on_series_grid(roi: HipROI, series: LoadedSeries) -> None:
    assert roi.mask.GetPixelID() == sitk.sitkUInt8
    for attribute in ("GetSize", "GetOrigin", "GetSpacing", "GetDirection"):
        assert getattr(roi.mask, attribute)() == getattr(series.image, attribute)()
    assert set(np.unique(sitk.GetArrayFromImage(roi.mask)).tolist()) <= {0, 1}


def _label_volume(case: Case) -> sitk.Image:
    """Left head = 1, right head = 2, as an image on the series grid."""
    labels = case.head("L").astype(np.uint8) + 2 * case.head("R").astype(np.uint8)
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(case.series.image)
    return image


def _to_volume(image: sitk.Image, frame_of_reference_uid: str) -> hd.Volume:
    """A SimpleITK image as a highdicom Volume (axes: slice, row, column)."""
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    spacing = image.GetSpacing()
    affine = np.eye(4)
    affine[:3, 0] = direction[:, 2] * spacing[2]
    affine[:3, 1] = direction[:, 1] * spacing[1]
    affine[:3, 2] = direction[:, 0] * spacing[0]
    affine[:3, 3] = image.GetOrigin()
    return hd.Volume(
        array=sitk.GetArrayFromImage(image),
        affine=affine,
        coordinate_system="PATIENT",
        frame_of_reference_uid=frame_of_reference_uid,
    )


def _two_heads_by_code() -> list[hd.seg.SegmentDescription]:
    return [
        _description(
            1,
            "Left femoral head",
            category=ANATOMICAL,
            prop_type=HEAD_OF_FEMUR,
            type_side=LEFT,
        ),
        _description(
            2,
            "Right femoral head",
            category=ANATOMICAL,
            prop_type=HEAD_OF_FEMUR,
            type_side=RIGHT,
        ),
    ]


# --- the phantom's own SEG ----------------------------------------------------------------


def test_phantom_seg_gives_the_truth_masks_exactly(case: Case) -> None:
    rois = rois_from_seg(case.seg_path, case.series)

    assert set(rois) == {"L", "R"}
    for side, roi in rois.items():
        assert roi.side == side
        assert roi.source == "seg"
        _assert_on_series_grid(roi, case.series)
        np.testing.assert_array_equal(_array(roi), case.head(side))
        assert "matched by coded" in roi.description
        assert "source references" in roi.description
    assert "segment 1 'Left femoral head'" in rois[Side.LEFT].description
    assert "segment 2 'Right femoral head'" in rois[Side.RIGHT].description


def test_lesion_segments_are_never_heads(case: Case, other_case: Case) -> None:
    # other_case has a necrotic lesion in each hip (segments 3 and 4 of its SEG).
    labels = [s.label for s in other_case.study.segments]
    assert labels[2:] == ["Left femoral head necrotic lesion", "Right femoral head necrotic lesion"]
    rois = rois_from_seg(other_case.seg_path, other_case.series)
    for side in ("L", "R"):
        np.testing.assert_array_equal(_array(rois[Side(side)]), other_case.head(side))
        assert "necrotic" not in rois[Side(side)].description

    # Lesions listed first, labelled with the head's name and a side, generic codes for
    # the heads: labels must still not take the lesion.
    seg = _segmentation(
        case.datasets,
        _stack(case.lesion("R"), case.head("R"), case.head("L")),
        [
            _description(
                1,
                "Right femoral head necrotic lesion",
                category=ABNORMAL,
                prop_type=NECROSIS,
                region=HEAD_OF_FEMUR,
                region_side=RIGHT,
            ),
            _description(2, "Right femoral head"),
            _description(3, "Left femoral head"),
        ],
    )
    rois = rois_from_seg(seg, case.series)
    assert "segment 2 'Right femoral head'" in rois[Side.RIGHT].description
    np.testing.assert_array_equal(_array(rois[Side.RIGHT]), case.head("R"))


def test_dataset_input_is_read_and_not_modified(case: Case) -> None:
    ds = pydicom.dcmread(case.seg_path)
    before, kind = copy.deepcopy(ds), type(ds)
    rois = rois_from_seg(ds, case.series)
    assert set(rois) == {"L", "R"}
    assert type(ds) is kind  # highdicom converts by changing __class__: not the caller's
    assert ds == before


# --- matching by code, label and position -------------------------------------------------


def test_coded_match_ignores_labels(case: Case) -> None:
    descriptions = [
        # Right head (by code) labelled "Left femoral head", and the other way round.
        _description(
            1,
            "Left femoral head",
            category=ANATOMICAL,
            prop_type=HEAD_OF_FEMUR,
            type_side=RIGHT,
        ),
        # Laterality in an anatomic region modifier instead of the type modifier.
        _description(
            2,
            "Segment 7",
            category=ANATOMICAL,
            prop_type=HEAD_OF_FEMUR,
            region=HEAD_OF_FEMUR,
            region_side=LEFT,
        ),
    ]
    seg = _segmentation(case.datasets, _stack(case.head("R"), case.head("L")), descriptions)

    rois = rois_from_seg(seg, case.series)

    np.testing.assert_array_equal(_array(rois[Side.RIGHT]), case.head("R"))
    np.testing.assert_array_equal(_array(rois[Side.LEFT]), case.head("L"))
    assert "segment 1" in rois[Side.RIGHT].description
    assert "segment 2" in rois[Side.LEFT].description
    for roi in rois.values():
        assert "matched by coded" in roi.description
    assert "anatomic region modifier" in rois[Side.LEFT].description


def test_label_match_without_codes(case: Case) -> None:
    seg = _segmentation(
        case.datasets,
        _stack(case.head("R"), case.head("L")),
        [_description(1, "Right femoral head"), _description(2, "Left femoral head")],
    )

    rois = rois_from_seg(seg, case.series)

    for side, number in (("R", 1), ("L", 2)):
        np.testing.assert_array_equal(_array(rois[Side(side)]), case.head(side))
        assert f"segment {number}" in rois[Side(side)].description
        assert rois[Side(side)].segment_number == number
        assert "matched by label" in rois[Side(side)].description


def test_position_match_for_unlabelled_segments(case: Case) -> None:
    # Right head first, so segment order says nothing about sides; the lesion inside the
    # right head is a third generic segment and must be dropped as a sub-structure.
    seg = _segmentation(
        case.datasets,
        _stack(case.head("R"), case.head("L"), case.lesion("R")),
        [_description(1, "Segment 1"), _description(2, "Segment 2"), _description(3, "")],
    )

    rois = rois_from_seg(seg, case.series)

    for side, number in (("R", 1), ("L", 2)):
        np.testing.assert_array_equal(_array(rois[Side(side)]), case.head(side))
        assert f"segment {number}" in rois[Side(side)].description
        assert "matched by position" in rois[Side(side)].description


def test_single_unlabelled_segment_goes_to_its_side_of_the_midline(case: Case) -> None:
    seg = _segmentation(case.datasets, _stack(case.head("L")), [_description(1, "Segment 1")])
    rois = rois_from_seg(seg, case.series)
    assert set(rois) == {"L"}
    assert "matched by position" in rois[Side.LEFT].description


@pytest.mark.parametrize(
    ("label", "side"),
    [
        ("Left femoral head", "L"),
        ("RIGHT FEMORAL HEAD", "R"),
        ("L femoral head", "L"),
        ("femoral head left", "L"),
        ("Head of femur, right", "R"),
        ("head of the femur (lt)", "L"),
        ("FH_L", "L"),
        ("fh-r", "R"),
        ("R_FH", "R"),
        ("RFH", "R"),
        ("femoral_head_l", "L"),
        ("Femur head R", "R"),
        ("caput femoris rt", "R"),
        ("Left femoral head and neck", "L"),
    ],
)
def test_label_patterns_with_a_side(label: str, side: str) -> None:
    assert _label_side(_normalise_label(label)) == (side, True)


@pytest.mark.parametrize(
    ("label", "names_head"),
    [
        ("Femoral head", True),  # no side: left to the position step
        ("left and right femoral heads", True),  # both sides: no side
        ("Left femur", False),  # the whole femur is not the head
        ("Left hip", False),
        ("Segment 1", False),
        ("Lfh2", False),
    ],
)
def test_label_patterns_without_a_side(label: str, names_head: bool) -> None:
    assert _label_side(_normalise_label(label)) == (None, names_head)


def test_two_segments_coded_for_one_side_are_ambiguous(case: Case) -> None:
    descriptions = _two_heads_by_code()
    descriptions[1].SegmentedPropertyTypeCodeSequence[
        0
    ].SegmentedPropertyTypeModifierCodeSequence = [_concept(LEFT)]
    seg = _segmentation(case.datasets, _stack(case.head("L"), case.head("R")), descriptions)
    with pytest.raises(AmbiguousSegmentError, match="left femoral head by coded"):
        rois_from_seg(seg, case.series)


def test_seg_with_one_head_gives_only_that_side(case: Case, tmp_path: Path) -> None:
    right = _description(
        1, "Right femoral head", category=ANATOMICAL, prop_type=HEAD_OF_FEMUR, type_side=RIGHT
    )
    seg = _segmentation(case.datasets, _stack(case.head("R")), [right])
    seg.save_as(tmp_path / "right.dcm")

    rois = rois_from_seg(tmp_path / "right.dcm", case.series)

    assert set(rois) == {"R"}
    np.testing.assert_array_equal(_array(rois[Side.RIGHT]), case.head("R"))


def test_empty_head_segment_leaves_that_side_out(case: Case) -> None:
    empty = np.zeros_like(case.head("L"))
    seg = _segmentation(case.datasets, _stack(empty, case.head("R")), _two_heads_by_code())
    assert set(rois_from_seg(seg, case.series)) == {"R"}


def test_one_segment_for_both_heads_is_not_a_head(case: Case) -> None:
    both = case.head("L") | case.head("R")
    for label in ("Segment 1", "Left and right femoral heads"):
        seg = _segmentation(case.datasets, _stack(both), [_description(1, label)])
        with pytest.raises(FemoralHeadNotFoundError):
            rois_from_seg(seg, case.series)


def test_no_femoral_head_is_an_error(case: Case) -> None:
    seg = _segmentation(
        case.datasets,
        _stack(case.lesion("R")),
        [_description(1, "Necrotic lesion", category=ABNORMAL, prop_type=NECROSIS)],
    )
    with pytest.raises(SegmentationError, match="no non-empty femoral-head segment"):
        rois_from_seg(seg, case.series)


# --- refusals -----------------------------------------------------------------------------


def test_seg_of_another_series_is_refused(case: Case, other_case: Case) -> None:
    with pytest.raises(SegmentationReferenceError, match="frame of reference"):
        rois_from_seg(other_case.seg_path, case.series)
    with pytest.raises(SegmentationReferenceError):
        rois_from_seg(case.seg_path, other_case.series)


def test_seg_referencing_another_series_in_the_same_frame_of_reference_is_refused(
    case: Case,
) -> None:
    ds = pydicom.dcmread(case.seg_path)
    ds.ReferencedSeriesSequence[0].SeriesInstanceUID = generate_uid()
    with pytest.raises(SegmentationReferenceError, match="references series"):
        rois_from_seg(ds, case.series)


def test_non_seg_files_are_refused(case: Case, tmp_path: Path) -> None:
    with pytest.raises(NotASegmentationError, match="MR Image Storage"):
        rois_from_seg(case.directory / "series" / "IM0001.dcm", case.series)
    text = tmp_path / "notes.txt"
    text.write_text("not DICOM\n")
    with pytest.raises(NotASegmentationError, match="not a readable DICOM file"):
        rois_from_seg(text, case.series)
    with pytest.raises(NotASegmentationError):
        rois_from_seg(case.datasets[0], case.series)


def test_frames_whose_positions_contradict_their_references_are_refused(case: Case) -> None:
    ds = pydicom.dcmread(case.seg_path)
    item = ds.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0]
    item.ImagePositionPatient = [float(v) + 10.0 for v in item.ImagePositionPatient]
    with pytest.raises(SegmentationGeometryError, match="references and geometry disagree"):
        rois_from_seg(ds, case.series)


def test_frames_outside_the_series_volume_are_refused(case: Case) -> None:
    ds = pydicom.dcmread(case.seg_path)
    for item in ds.PerFrameFunctionalGroupsSequence:
        del item.DerivationImageSequence  # no references: geometry only
        position = item.PlanePositionSequence[0]
        position.ImagePositionPatient = [float(v) + 500.0 for v in position.ImagePositionPatient]
    with pytest.raises(SegmentationGeometryError, match="entirely outside"):
        rois_from_seg(ds, case.series)


# --- other grids and encodings ---------------------------------------------------------------


def _every_other_slice_seg(case: Case) -> hd.seg.Segmentation:
    labels = _label_volume(case)
    array = sitk.GetArrayFromImage(labels)[::2]  # slices 0, 2, 4, ...: twice the spacing
    sparse = sitk.GetImageFromArray(array)
    sparse.SetOrigin(labels.GetOrigin())
    sparse.SetDirection(labels.GetDirection())
    spacing = labels.GetSpacing()
    sparse.SetSpacing((spacing[0], spacing[1], 2 * spacing[2]))
    volume = _to_volume(sparse, case.series.frame_of_reference_uid)
    return _segmentation(case.datasets, volume, _two_heads_by_code())


def test_sparse_seg_on_every_other_slice_is_read_as_written(case: Case) -> None:
    # highdicom (0.28) finds each plane of the volume among the source images and then
    # copies the *source's* Pixel Measures, Spacing Between Slices included: the SEG
    # says "masks on slices 0, 2, 4, ... of the series; the others are empty", as a
    # reader who annotated every other slice would. It is read exactly so.
    seg = _every_other_slice_seg(case)
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SpacingBetweenSlices) == pytest.approx(
        case.series.image.GetSpacing()[2], rel=1e-3
    )

    rois = rois_from_seg(seg, case.series)

    for side in ("L", "R"):
        mask, truth = _array(rois[Side(side)]), case.head(side)
        assert "source references" in rois[Side(side)].description
        np.testing.assert_array_equal(mask[::2], truth[::2])
        assert not mask[1::2].any()


def test_seg_volume_on_every_other_slice_is_resampled(case: Case, tmp_path: Path) -> None:
    # The same frames with the spacing a volume writer declares (twice the series'):
    # now the SEG is a coarser volume and is resampled with nearest neighbour. Saved and
    # read back, as a received SEG would be (highdicom indexes frames on construction).
    seg = _every_other_slice_seg(case)
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    measures.SpacingBetweenSlices = 2 * float(measures.SpacingBetweenSlices)
    measures.SliceThickness = measures.SpacingBetweenSlices
    seg.save_as(tmp_path / "coarse.dcm")

    rois = rois_from_seg(tmp_path / "coarse.dcm", case.series)

    for side in ("L", "R"):
        mask, truth = _array(rois[Side(side)]), case.head(side)
        assert "resampled by geometry" in rois[Side(side)].description
        # The slices the SEG has are exact; each one between is a neighbour's copy.
        np.testing.assert_array_equal(mask[::2], truth[::2])
        assert mask[1::2].any()
        assert _dice(mask, truth) >= 0.9


def test_seg_on_an_axial_isotropic_grid_is_resampled(case: Case) -> None:
    labels = _label_volume(case)
    # A 1 mm isotropic axial grid (identity direction, not the series' oblique coronal
    # one) around both heads: what a tool that segments a resampled volume writes back.
    heads = np.argwhere(sitk.GetArrayFromImage(labels) > 0)[:, ::-1].astype(float)
    points = np.array([labels.TransformContinuousIndexToPhysicalPoint(p) for p in heads])
    origin = points.min(axis=0) - 5.0
    size = [int(v) for v in np.ceil(points.max(axis=0) - origin + 5.0)]
    iso = sitk.Resample(
        labels,
        size,
        sitk.Transform(),
        sitk.sitkNearestNeighbor,
        origin.tolist(),
        (1.0, 1.0, 1.0),
        (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
        0,
        sitk.sitkUInt8,
    )
    volume = _to_volume(iso, case.series.frame_of_reference_uid)
    seg = _segmentation(case.datasets, volume, _two_heads_by_code())

    rois = rois_from_seg(seg, case.series)

    for side in ("L", "R"):
        assert "resampled by geometry" in rois[Side(side)].description
        assert _dice(_array(rois[Side(side)]), case.head(side)) >= 0.95


def test_seg_with_cropped_frames_is_placed_exactly(case: Case) -> None:
    labels = _label_volume(case)
    heads = np.argwhere(sitk.GetArrayFromImage(labels) > 0)
    lo = heads.min(axis=0) - np.array([0, 4, 4])
    hi = heads.max(axis=0) + np.array([1, 5, 5])
    crop = labels[int(lo[2]) : int(hi[2]), int(lo[1]) : int(hi[1]), :]  # columns, rows
    volume = _to_volume(crop, case.series.frame_of_reference_uid)
    seg = _segmentation(case.datasets, volume, _two_heads_by_code())

    rois = rois_from_seg(seg, case.series)

    for side in ("L", "R"):
        np.testing.assert_array_equal(_array(rois[Side(side)]), case.head(side))


def test_fractional_seg_is_thresholded_at_half(case: Case) -> None:
    def soft(mask: BoolArray) -> npt.NDArray[np.float32]:
        # 0.8 inside; 0.3 in a one-pixel rim outside (must be dropped).
        rim = np.zeros_like(mask)
        rim[:, 1:, :] |= mask[:, :-1, :]
        rim[:, :, 1:] |= mask[:, :, :-1]
        rim &= ~mask
        return np.where(mask, 0.8, np.where(rim, 0.3, 0.0)).astype(np.float32)

    pixels = np.stack([soft(case.head("L")), soft(case.head("R"))], axis=-1)
    seg = _segmentation(case.datasets, pixels, _two_heads_by_code(), kind="FRACTIONAL")

    rois = rois_from_seg(seg, case.series)

    for side in ("L", "R"):
        np.testing.assert_array_equal(_array(rois[Side(side)]), case.head(side))


def test_labelmap_seg_is_read_per_segment(case: Case) -> None:
    labels = case.head("L").astype(np.uint8) + 2 * case.head("R").astype(np.uint8)
    seg = _segmentation(case.datasets, labels, _two_heads_by_code(), kind="LABELMAP")
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.7"

    rois = rois_from_seg(seg, case.series)

    for side in ("L", "R"):
        np.testing.assert_array_equal(_array(rois[Side(side)]), case.head(side))


def test_seg_of_a_multiframe_series_is_read_by_frame_references(case: Case) -> None:
    enhanced = hd.legacy.LegacyConvertedEnhancedMRImage(
        legacy_datasets=case.datasets,
        series_instance_uid=case.series.series_instance_uid,
        series_number=int(case.datasets[0].SeriesNumber),
        sop_instance_uid=generate_uid(),
        instance_number=1,
    )
    series = load_series([enhanced])
    assert series.frame_numbers[0] is not None
    # Slice k of the loaded series is frame frame_numbers[k]; the SEG frames must follow
    # the enhanced image's frame order.
    order = np.argsort([n for n in series.frame_numbers if n is not None])
    heads = _stack(case.head("L"), case.head("R"))[order]
    seg = _segmentation([enhanced], heads, _two_heads_by_code())

    rois = rois_from_seg(seg, series)

    for side in ("L", "R"):
        assert "source references" in rois[Side(side)].description
        np.testing.assert_array_equal(_array(rois[Side(side)]), case.head(side))
